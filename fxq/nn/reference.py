"""Reference (simulated-quantization) weighted modules.

A reference module keeps its float weight and, in `forward`, quantizes then dequantizes it with
fixed weight qparams before running the float op: numerically the weight the int8 kernel uses.
Lowering turns `dequantize -> reference module -> quantize` into one `fxq.nn.quantized` module.

    >>> import torch
    >>> qparams = {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8,
    ...            "scale": torch.full((8,), 0.01), "zero_point": torch.zeros(8, dtype=torch.long), "axis": 0}
    >>> ref = Linear.from_float(torch.nn.Linear(4, 8), qparams)
    >>> ref.quantized_weight().qscheme()
    torch.per_channel_affine
"""
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn.weight_quantize import quantize_per_channel

__all__ = ["Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Embedding",
           "WeightQParams"]

WeightQParams = Dict[str, Any]

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
_INT_RANGE = {torch.qint8: (-128, 127), torch.quint8: (0, 255), torch.qint32: (-(2**31), 2**31 - 1)}


def _check_qparams(owner: str, qparams: WeightQParams) -> None:
    for key in ("qscheme", "dtype", "scale", "zero_point"):
        if key not in qparams:
            raise KeyError(f"{owner}: weight_qparams is missing {key!r}; "
                           "pass qscheme, dtype, scale, zero_point (and axis).")
    if qparams["qscheme"] not in _PER_TENSOR + _PER_CHANNEL:
        raise ValueError(f"{owner}: weight qscheme {qparams['qscheme']} is not supported; "
                         "use a per-tensor or per-channel affine/symmetric one.")
    if qparams["dtype"] not in _INT_RANGE:
        raise ValueError(f"{owner}: weight dtype {qparams['dtype']} is not supported; use torch.qint8 or torch.quint8.")
    if qparams["qscheme"] in _PER_CHANNEL and "axis" not in qparams:
        raise KeyError(f"{owner}: per-channel weight_qparams need 'axis' (the output-channel dimension, usually 0).")


class _ReferenceWeight:
    """Mixin: weight qparams stored as buffers, plus the weight's quantize / quantize-dequantize."""

    def __init__(self, *args: Any, weight_qparams: Optional[WeightQParams] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if weight_qparams is None:
            weight_qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8,
                              "scale": torch.tensor(1.0), "zero_point": torch.tensor(0)}
        self.set_weight_qparams(weight_qparams)

    def set_weight_qparams(self, qparams: WeightQParams) -> None:
        """Replace the weight qparams (keys: qscheme, dtype, scale, zero_point, axis, quant_min, quant_max)."""
        _check_qparams(f"fxq.nn.reference.{type(self).__name__}", qparams)
        self.weight_qscheme: torch.qscheme = qparams["qscheme"]
        self.weight_dtype: torch.dtype = qparams["dtype"]
        low, high = _INT_RANGE[self.weight_dtype]
        quant_range = [qparams.get("quant_min", low), qparams.get("quant_max", high)]
        self.register_buffer("weight_scale", torch.as_tensor(qparams["scale"], dtype=torch.float).detach().clone())
        # embedding rows keep a float zero point (per_channel_affine_float_qparams); the others an integer one
        float_zero_point = self.weight_qscheme == torch.per_channel_affine_float_qparams
        zero_point = torch.as_tensor(qparams["zero_point"], dtype=torch.float if float_zero_point else torch.long)
        self.register_buffer("weight_zero_point", zero_point.detach().clone())
        self.register_buffer("weight_axis", torch.tensor(int(qparams.get("axis", 0))))
        self.register_buffer("weight_quant_range", torch.tensor(quant_range, dtype=torch.long))

    @property
    def is_per_channel(self) -> bool:
        return self.weight_qscheme in _PER_CHANNEL

    def quantized_weight(self) -> torch.Tensor:
        """The weight as a quantized tensor, clamped to [quant_min, quant_max]."""
        weight = self.weight.detach().float()
        if self.is_per_channel:
            axis = int(self.weight_axis)
            qweight = quantize_per_channel(weight, self.weight_scale, self.weight_zero_point, axis, self.weight_dtype)
        else:
            qweight = torch.quantize_per_tensor(
                weight, float(self.weight_scale), int(self.weight_zero_point), self.weight_dtype)
        return self._clamp(qweight)

    def _clamp(self, qweight: torch.Tensor) -> torch.Tensor:
        # A narrowed range (e.g. [-127, 127] for symmetric kernels) must hold in the stored ints too.
        low, high = (int(v) for v in self.weight_quant_range)
        if (low, high) == _INT_RANGE[self.weight_dtype]:
            return qweight
        ints = qweight.int_repr().clamp(low, high)
        if self.is_per_channel:
            return torch._make_per_channel_quantized_tensor(
                ints, qweight.q_per_channel_scales(), qweight.q_per_channel_zero_points(), qweight.q_per_channel_axis())
        return torch._make_per_tensor_quantized_tensor(ints, qweight.q_scale(), qweight.q_zero_point())

    def integer_weight(self) -> torch.Tensor:
        """The weight's integers (int8 for qint8, uint8 for quint8), the same as ``quantized_weight().int_repr()``
        but computed in float arithmetic: no (deprecated) quantized tensor is made."""
        scale, zero_point = self._broadcast_qparams()
        low, high = (int(v) for v in self.weight_quant_range)
        if self.weight_qscheme == torch.per_channel_affine_float_qparams:  # embedding rows: zero point added unrounded
            integers = torch.round(self.weight.detach().float() * (1.0 / scale) + zero_point).clamp_(low, high)
        else:
            integers = torch.round(self.weight.detach().float() * (1.0 / scale)).add_(zero_point).clamp_(low, high)
        return integers.to(torch.int8 if self.weight_dtype == torch.qint8 else torch.uint8)

    def _broadcast_qparams(self) -> tuple:
        """(float32 scale, zero point) shaped to broadcast against the weight."""
        scale, zero_point = self.weight_scale.float(), self.weight_zero_point
        if self.is_per_channel:
            shape = [1] * self.weight.dim()
            shape[int(self.weight_axis)] = -1
            return scale.reshape(shape), zero_point.reshape(shape)
        return scale, zero_point

    def get_weight(self) -> torch.Tensor:
        """The weight after quantize-dequantize: what the int8 kernel effectively multiplies by."""
        scale, zero_point = self._broadcast_qparams()
        return ((self.integer_weight().float() - zero_point) * scale).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_qscheme={self.weight_qscheme}, weight_dtype={self.weight_dtype}"

    # qscheme and dtype are not tensors; they travel next to the buffers in the state_dict.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight_qscheme"] = self.weight_qscheme
        destination[prefix + "weight_dtype"] = self.weight_dtype

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for key in ("weight_qscheme", "weight_dtype"):
            if prefix + key in state_dict:
                setattr(self, key, state_dict.pop(prefix + key))
            elif strict:
                missing_keys.append(prefix + key)
        for key in ("weight_scale", "weight_zero_point"):  # per-channel and per-tensor shapes differ
            if prefix + key in state_dict:
                self.register_buffer(key, torch.empty_like(state_dict[prefix + key]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @classmethod
    def from_float(cls, float_module: nn.Module, weight_qparams: WeightQParams) -> nn.Module:
        """A reference module with `float_module`'s configuration and a copy of its weight and bias."""
        float_type = next(base for base in cls.__mro__ if not issubclass(base, _ReferenceWeight))
        if not isinstance(float_module, float_type):
            raise TypeError(f"fxq.nn.reference.{cls.__name__}.from_float expects {float_type.__name__}, "
                            f"got {type(float_module).__name__}.")
        weight = float_module.weight
        # built on the meta device: a real one would spend time initialising weights that are overwritten next
        reference = cls(*cls._constructor_args(float_module), device="meta", dtype=weight.dtype,
                        weight_qparams=weight_qparams)
        # the float weight is shared, not copied: reference modules only read it
        reference.weight = nn.Parameter(weight.detach(), requires_grad=weight.requires_grad)
        if getattr(float_module, "bias", None) is not None:  # embeddings have none
            bias = float_module.bias
            reference.bias = nn.Parameter(bias.detach(), requires_grad=bias.requires_grad)
        return reference


class Linear(_ReferenceWeight, nn.Linear):
    """`nn.Linear` whose forward uses the quantize-dequantized weight."""

    @staticmethod
    def _constructor_args(float_module: nn.Linear) -> tuple:
        return float_module.in_features, float_module.out_features, float_module.bias is not None

    def _get_name(self) -> str:
        return "ReferenceQuantizedLinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.get_weight(), self.bias)


class _ReferenceConv(_ReferenceWeight):
    @staticmethod
    def _constructor_args(conv: nn.Module) -> tuple:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)

    def _get_name(self) -> str:
        return f"ReferenceQuantized{type(self).__name__}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.get_weight(), self.bias)


class Conv1d(_ReferenceConv, nn.Conv1d):
    """`nn.Conv1d` whose forward uses the quantize-dequantized weight."""


class Conv2d(_ReferenceConv, nn.Conv2d):
    """`nn.Conv2d` whose forward uses the quantize-dequantized weight."""


class Conv3d(_ReferenceConv, nn.Conv3d):
    """`nn.Conv3d` whose forward uses the quantize-dequantized weight."""


class _ReferenceConvTranspose(_ReferenceWeight):
    @staticmethod
    def _constructor_args(conv: nn.Module) -> tuple:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.output_padding, conv.groups, conv.bias is not None, conv.dilation, conv.padding_mode)

    def _get_name(self) -> str:
        return f"ReferenceQuantized{type(self).__name__}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transposed = _TRANSPOSED[len(self.kernel_size)]
        return transposed(x, self.get_weight(), self.bias, self.stride, self.padding, self.output_padding,
                          self.groups, self.dilation)


_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvTranspose1d(_ReferenceConvTranspose, nn.ConvTranspose1d):
    """`nn.ConvTranspose1d` whose forward uses the quantize-dequantized weight."""


class ConvTranspose2d(_ReferenceConvTranspose, nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` whose forward uses the quantize-dequantized weight."""


class ConvTranspose3d(_ReferenceConvTranspose, nn.ConvTranspose3d):
    """`nn.ConvTranspose3d` whose forward uses the quantize-dequantized weight."""


class Embedding(_ReferenceWeight, nn.Embedding):
    """`nn.Embedding` that looks rows up in the quantize-dequantized table (int8 rows, per-row qparams)."""

    @staticmethod
    def _constructor_args(embedding: nn.Embedding) -> tuple:
        return (embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, embedding.max_norm,
                embedding.norm_type, embedding.scale_grad_by_freq, embedding.sparse)

    def _get_name(self) -> str:
        return "ReferenceQuantizedEmbedding"

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.get_weight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
