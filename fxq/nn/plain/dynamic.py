"""Dynamically quantized plain Linear: float32 in and out, the activation quantized on every call.

Per tensor (default): the input's min and max (widened to hold 0) give an affine uint8 scale and zero point
on 0..255. Where this CPU's kernel saturates full-range products (fxq.nn.plain.saturation), the weights take 7
bits instead (measured more accurate than 7-bit activations), unless ``quant_max`` is given. ``per_token=True``: each row (token) is divided by its largest magnitude, the rows, now all
within [-1, 1], are quantized with one fixed scale, and the output rows are multiplied back with the bias added
after; a linear maps rows independently, so that is per-token quantization on a per-tensor kernel. The kernel
returns float32 with the dequantize fused (``onednn::qlinear_pointwise``, output_dtype float32).

    >>> linear = DynamicLinear.from_float(torch.nn.Linear(16, 4), per_token=True)
    >>> linear(torch.randn(2, 3, 16)).shape
    torch.Size([2, 3, 4])
"""
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.plain import ops
from fxq.nn.plain._base import exact_with_full_range_inputs, weight_int8, weight_qparams_accepted
from fxq.nn.plain.linear import Linear
from fxq.nn.plain.saturation import activation_quant_max, plain_linear_saturates
from fxq.nn.plain.traced import tracing

__all__ = ["DynamicLinear"]

WeightQParams = Dict[str, Any]


def _default_weight_qparams(weight: torch.Tensor) -> WeightQParams:
    """Symmetric per-channel qint8: scale = max |w| of the row / 127."""
    scale = weight.detach().abs().amax(dim=1).float().clamp_min(1e-12) / 127
    return {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0, "scale": scale,
            "zero_point": torch.zeros(len(scale), dtype=torch.long), "quant_min": -127, "quant_max": 127}


def _observer_qparams(observer: nn.Module, weight: torch.Tensor) -> WeightQParams:
    observer(weight.detach())
    scale, zero_point = observer.calculate_qparams()
    qparams = {"qscheme": observer.qscheme, "dtype": observer.dtype, "scale": scale, "zero_point": zero_point,
               "quant_min": observer.quant_min, "quant_max": observer.quant_max}
    if hasattr(observer, "ch_axis"):
        qparams["axis"] = observer.ch_axis
    return qparams


class DynamicLinear(Linear):
    """``x @ W.T + b`` with float32 ``x`` quantized per call (per tensor or per token) and an int8 weight.

        >>> DynamicLinear.from_float(torch.nn.Linear(8, 3), quant_max=127)
        Int8DynamicLinear(in_features=8, out_features=3, activation=per_tensor, quant_max=127)
    """

    _extra_attributes = Linear._extra_attributes + ("per_token", "quant_max")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_token: bool = False,
                 quant_max: Optional[int] = None) -> None:
        super().__init__(in_features, out_features, bias)
        self.per_token = bool(per_token)
        self.quant_max = activation_quant_max() if quant_max is None else int(quant_max)
        if self.quant_max not in (127, 255):
            raise ValueError(f"fxq.nn.plain.DynamicLinear: quant_max is 127 (7-bit) or 255, got {quant_max}.")

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_qparams: Union[WeightQParams, nn.Module, None] = None,
                   per_token: bool = False, quant_max: Optional[int] = None) -> "DynamicLinear":
        """From a float Linear; ``weight_qparams`` is a qparams dict (as for reference modules), a weight
        observer (run on the weight here), or None for symmetric per-channel int8."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"fxq.nn.plain.DynamicLinear.from_float expects nn.Linear, got {type(linear).__name__}.")
        if weight_qparams is None:
            weight_qparams = _default_weight_qparams(linear.weight)
        elif isinstance(weight_qparams, nn.Module):
            weight_qparams = _observer_qparams(weight_qparams, linear.weight)
        ref = reference.Linear.from_float(linear, weight_qparams)
        return cls.from_reference(ref, per_token=per_token, quant_max=quant_max)

    @classmethod
    def from_reference(cls, ref: reference.Linear, input_scale: float = 1.0, input_zero_point: int = 0,
                       output_scale: Optional[float] = None, output_zero_point: int = 0, post_op: str = "none",
                       post_op_args: tuple = (), post_op_algorithm: str = "", per_token: bool = False,
                       quant_max: Optional[int] = None) -> "DynamicLinear":
        """From a reference Linear; the activation qparams are computed per call, so only ``per_token`` and
        ``quant_max`` (127, 255 or None for what this CPU affords) matter."""
        if output_scale is not None or post_op != "none":
            raise ValueError("fxq.nn.plain.DynamicLinear: the output is float32 with no post-op.")
        if not cls.accepts(ref):
            reason = weight_qparams_accepted(ref)[1] if isinstance(ref, reference.Linear) else type(ref).__name__
            raise ValueError(f"fxq.nn.plain.DynamicLinear.from_reference: cannot run {reason}; it needs a "
                             "reference Linear with symmetric qint8 weights.")
        if quant_max is None and plain_linear_saturates():  # 8-bit activations: measured more accurate than 7-bit
            ref, quant_max = exact_with_full_range_inputs(ref), 255
        module = cls(ref.in_features, ref.out_features, ref.bias is not None, per_token, quant_max)
        module._set_weight(*weight_int8(ref, ref.out_features), ref.bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"fxq.nn.plain.DynamicLinear: the input must be a float tensor, got {got}.")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"fxq.nn.plain.DynamicLinear: expected input [..., {self.in_features}], "
                             f"got shape {tuple(x.shape)}.")
        x = x.float()
        if self.per_token:
            return self._per_token(x)
        low, high = torch.aminmax(x)
        low, high = low.clamp(max=0.0), high.clamp(min=0.0)
        scale = ((high - low) / self.quant_max).clamp_min(1e-12)
        zero_point = torch.round(-low / scale).clamp(0, self.quant_max).to(torch.long)
        return self._run(ops.quantize_per_tensor(x, scale, zero_point, 0, self.quant_max), scale, zero_point,
                         self.bias)

    def _per_token(self, x: torch.Tensor) -> torch.Tensor:
        # rows within [-1, 1] on one fixed grid: zero point mid-range, -1 and 1 at the ends
        half = self.quant_max // 2
        row_scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)  # an all-zero row: its output is the bias
        scale, zero_point = torch.tensor(1.0 / half), torch.tensor(half + 1)
        q = ops.quantize_per_tensor(x / row_scale, scale, zero_point, 0, self.quant_max)
        y = self._run(q, scale, zero_point, None)
        return y.mul_(row_scale) if self.bias is None else torch.addcmul(self.bias, y, row_scale)

    def _run(self, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
             bias: Optional[torch.Tensor]) -> torch.Tensor:
        if tracing():  # one opaque op that packs at run time (see fxq.nn.plain.traced)
            return torch.ops.fxq.plain_linear_tensor_qparams(q, scale, zero_point, self.weight, self.weight_scale,
                                                             self.weight_zero_point, bias)
        return torch.ops.onednn.qlinear_pointwise.tensor(
            q, scale, zero_point, self.packed_weight(), self.weight_scale, self.weight_zero_point, bias, 1.0, 0,
            torch.float32, "none", [], "")

    def extra_repr(self) -> str:
        mode = "per_token" if self.per_token else "per_tensor"
        return (f"in_features={self.in_features}, out_features={self.out_features}, activation={mode}, "
                f"quant_max={self.quant_max}")
