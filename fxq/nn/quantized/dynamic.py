"""Dynamically quantized Linear: int8 (or float16) weights packed ahead of time, activations quantized per call.

fp32 in, fp32 out. Built from a reference Linear (int8) or a float Linear (float16).

``per_token=True`` quantizes each row of the input (each token) with its own scale. The int8 kernel takes one
activation scale per call, but a linear maps rows independently: dividing each row by its largest magnitude,
running the kernel on rows that now share one range, and multiplying the output rows back is per-token
quantization on the same kernel (the bias is added after). On all-MiniLM-L6-v2 it lifts the embedding cosine
to fp32 from 0.977 to 0.995 for about 15% more time (tools/bench_transformer.py), which is why the default
dynamic mapping uses it.

    >>> ref = reference.Linear.from_float(nn.Linear(4, 3), {"qscheme": torch.per_tensor_symmetric,
    ...     "dtype": torch.qint8, "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)})
    >>> Linear.from_reference(ref, per_token=True)(torch.randn(2, 4)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fxq.nn import reference


class Linear(nn.Module):
    """``y = x @ W.T + b`` with W packed as int8 (activations quantized on the fly) or as float16."""

    def __init__(self, in_features: int, out_features: int, packed: torch.ScriptObject, dtype: torch.dtype,
                 relu: bool = False, reduce_range: bool = True, per_token: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.dtype, self.relu, self.reduce_range = dtype, relu, reduce_range
        self.per_token = per_token and dtype == torch.qint8
        self.bias_after: Optional[torch.Tensor] = None  # per_token: the bias, added once the rows are scaled back
        self._set_packed(packed)

    def _set_packed(self, packed: torch.ScriptObject) -> None:
        if self.per_token:  # the kernel must not add the bias to rows that are scaled back afterwards
            weight, self.bias_after = torch.ops.quantized.linear_unpack(packed)
            packed = torch.ops.quantized.linear_prepack(weight, None)
        self._packed_params = packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.float16:
            y = torch.ops.quantized.linear_dynamic_fp16(x, self._packed_params)
            return torch.relu(y) if self.relu else y
        if self.per_token:
            return self._per_token(x)
        if self.relu:
            return torch.ops.quantized.linear_relu_dynamic(x, self._packed_params, self.reduce_range)
        return torch.ops.quantized.linear_dynamic(x, self._packed_params, self.reduce_range)

    def _per_token(self, x: torch.Tensor) -> torch.Tensor:
        row_scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)  # an all-zero row: its output is the bias
        y = torch.ops.quantized.linear_dynamic(x / row_scale, self._packed_params, self.reduce_range)
        y = y.mul_(row_scale) if self.bias_after is None else torch.addcmul(self.bias_after, y, row_scale)
        return y.relu_() if self.relu else y

    @classmethod
    def from_reference(cls, ref: nn.Module, relu: bool = False, reduce_range: bool = True,
                       per_token: bool = False) -> "Linear":
        """int8 weights from a reference Linear (its weight qparams), float bias."""
        if not isinstance(ref, reference.Linear):
            raise TypeError(f"dynamic Linear.from_reference expects fxq.nn.reference.Linear, got {type(ref).__name__}")
        packed = torch.ops.quantized.linear_prepack(ref.quantized_weight(), _bias(ref))
        return cls(ref.in_features, ref.out_features, packed, torch.qint8, relu, reduce_range, per_token)

    @classmethod
    def from_float_fp16(cls, linear: nn.Linear, relu: bool = False) -> "Linear":
        packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), _bias(linear))
        return cls(linear.in_features, linear.out_features, packed, torch.float16, relu)

    # The packed weight is not a tensor: the state_dict carries it unpacked, and loading packs it again.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        fp16 = self.dtype == torch.float16
        unpack = torch.ops.quantized.linear_unpack_fp16 if fp16 else torch.ops.quantized.linear_unpack
        destination[prefix + "weight"], destination[prefix + "bias"] = unpack(self._packed_params)
        if self.per_token:
            destination[prefix + "bias"] = self.bias_after

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "weight" in state_dict:
            weight, bias = state_dict.pop(prefix + "weight"), state_dict.pop(prefix + "bias", None)
            fp16 = self.dtype == torch.float16
            pack = torch.ops.quantized.linear_prepack_fp16 if fp16 else torch.ops.quantized.linear_prepack
            self._set_packed(pack(weight, bias))
        elif strict:
            missing_keys.append(prefix + "weight")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear" + ("ReLU" if self.relu else "")

    def extra_repr(self) -> str:
        per_token = ", per_token=True" if self.per_token else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_dtype={self.dtype}{per_token}"


def _bias(module: nn.Module) -> Optional[torch.Tensor]:
    return None if module.bias is None else module.bias.detach().float()
