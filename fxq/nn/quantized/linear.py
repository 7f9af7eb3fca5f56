"""Quantized Linear and Linear+ReLU on `quantized::linear` / `quantized::linear_relu`.

    >>> import torch
    >>> from fxq.nn import reference
    >>> weight_qparams = {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0,
    ...                   "scale": torch.full((32,), 0.01), "zero_point": torch.zeros(32, dtype=torch.long)}
    >>> ref = reference.Linear.from_float(torch.nn.Linear(64, 32), weight_qparams)
    >>> qlinear = Linear.from_reference(ref, output_scale=0.0123, output_zero_point=64)
    >>> qlinear(torch.quantize_per_tensor(torch.randn(2, 64), 0.02, 64, torch.quint8)).q_scale()
    0.0123
"""
from typing import Optional, Tuple

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized._base import WeightedQuantizedModule
from fxq.nn.quantized._packing import pack_linear, unpack_linear

__all__ = ["Linear", "LinearReLU", "LinearFloatOutput"]


class Linear(WeightedQuantizedModule):
    """int8 `y = x @ W.T + b`: quint8 input and output, qint8 weight, float bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, engine: Optional[str] = None,
                 _weight_bias: Optional[tuple] = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        if _weight_bias is None:  # a placeholder weight, for load_state_dict to fill
            weight = torch.quantize_per_tensor(torch.zeros(out_features, in_features), 1.0, 0, torch.qint8)
            _weight_bias = (weight, torch.zeros(out_features) if bias else None)
        self.set_weight_bias(*_weight_bias, engine)

    def _pack(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
        return pack_linear(weight, bias, engine)

    def _unpack(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return unpack_linear(self._packed_params)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear(x, self._packed_params, self.scale, self.zero_point)

    @classmethod
    def from_reference(cls, ref: reference.Linear, output_scale: float, output_zero_point: int,
                       engine: Optional[str] = None) -> "Linear":
        """Build from a reference Linear (or a fused `[reference.Linear, ReLU]` sequence) and output qparams."""
        if isinstance(ref, nn.Sequential):
            ref = ref[0]
        if not isinstance(ref, reference.Linear):
            raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_reference expects fxq.nn.reference.Linear, "
                            f"got {type(ref).__name__}; convert the float Linear to a reference one first.")
        module = cls(ref.in_features, ref.out_features, ref.bias is not None, engine,
                     _weight_bias=(ref.quantized_weight(), ref.bias))
        module.scale, module.zero_point = float(output_scale), int(output_zero_point)
        return module


class LinearReLU(Linear):
    """int8 `relu(x @ W.T + b)` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_relu(x, self._packed_params, self.scale, self.zero_point)


class LinearFloatOutput(Linear):
    """int8 `y = x @ W.T + b` with a float input and a float output: the kernel quantizes ``x`` with ``scale`` and
    ``zero_point`` (here the input's qparams), multiplies in int8 and returns fp32, unrounded (fxq's
    FloatOutputQConfig). On engines whose kernel lacks it (`quantized::linear_with_input_q_dq_qweight_dq_output_fp32`
    is fbgemm's), :meth:`supported` is False and fxq keeps the int8-output Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x, self.scale, self.zero_point, self._packed_params)

    def supported(self) -> bool:
        """Whether this engine's kernel runs it (one call on a zero row)."""
        try:
            self(torch.zeros(1, self.in_features))
        except RuntimeError:
            return False
        return True

    @classmethod
    def from_linear(cls, linear: Linear, input_scale: float, input_zero_point: int) -> "LinearFloatOutput":
        """The same packed weight as ``linear``, taking float inputs quantized with the given qparams."""
        weight, bias = linear._unpack()
        module = cls(linear.in_features, linear.out_features, bias is not None, linear.engine,
                     _weight_bias=(weight, bias))
        module.scale, module.zero_point = float(input_scale), int(input_zero_point)
        return module
