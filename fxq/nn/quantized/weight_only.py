"""Weight-only quantized Linear and Embedding (W8A32 / W8A16): int8 weights, activations stay float.

Linear picks its kernel per call from the activation's dtype and shape:
  * ``aten._weight_int8pack_mm`` (int8 weight, per-output-channel scale, bfloat16 compute), possible when
    in_features is a multiple of 32 — the kernel's constraint (other widths give wrong results) — for bf16
    activations, and for fp32 activations, which are rounded to bf16 for the product (W8A32 keeps fp32 at the
    interface);
  * the int8 weight dequantized to the activation dtype, then ``F.linear`` — always possible, and the only
    kernel with ``exact=True``.
Which is faster depends on the CPU and the batch: on AVX2 int8pack wins at batch 1 and 32; on AMX hosts the
bf16 ``F.linear`` of a dequantized weight beats it at batch 32 by ~6x. So where both are possible, the first
call of each (shape, dtype, batch class, thread count) times both once and the choice is cached for the
process. Both compute ``x @ (scale * W_int8).T + b``; they differ only by bf16 rounding.

With ``group_size`` set, the scale has one value per output channel per ``group_size`` inputs (grouped weights,
e.g. 4-bit, from ``fxq.INT4_GROUPED_WEIGHT``; the integers stay in an int8 tensor) and only the dequantizing
kernel applies: it computes ``int * scale`` in float32 as the grouped fake-quant does, so the converted layer
multiplies by exactly the weight the fake-quant model used.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn import reference

PACKED_KERNEL_ALIGNMENT = 32
_MANY_ROWS = 16  # batch classes: 1..15 rows each their own, 16 and more one class (matrix-matrix kernels)
_KERNEL_CHOICE: dict = {}  # (in, out, dtype, batch class, threads) -> int8pack is faster


def _best_of_two(first, second) -> int:
    """0 or 1: which of two calls is faster (min of two timed runs each, after one untimed)."""
    times = []
    with torch.no_grad():
        for call in (first, second):
            call()
            runs = []
            for _ in range(2):
                start = time.perf_counter()
                call()
                runs.append(time.perf_counter() - start)
            times.append(min(runs))
    return 0 if times[0] <= times[1] else 1


class Linear(nn.Module):
    """int8 per-output-channel weight, float activations of ``activation_dtype`` (float32 or bfloat16).

    ``group_size``: ``scale`` is (out_features, in_features / group_size), one per group of inputs.

    >>> from fxq.observers import GroupedWeightFakeQuantize
    >>> float_linear, quantizer = nn.Linear(64, 8), GroupedWeightFakeQuantize(group_size=32)
    >>> grouped = Linear.from_grouped(float_linear, quantizer)
    >>> x = torch.randn(2, 64)
    >>> torch.equal(grouped(x), F.linear(x, quantizer(float_linear.weight), float_linear.bias))
    True
    """

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor],
                 activation_dtype: torch.dtype = torch.float32, exact: bool = False,
                 group_size: Optional[int] = None):
        super().__init__()
        grouped_shape = None if group_size is None else (weight_int8.shape[0], weight_int8.shape[1] // group_size)
        if grouped_shape is not None and tuple(scale.shape) != grouped_shape:
            raise ValueError(f"weight-only Linear: group_size={group_size} with a {tuple(weight_int8.shape)} weight "
                             f"needs a scale of shape ({weight_int8.shape[0]}, {weight_int8.shape[1] // group_size}), "
                             f"got {tuple(scale.shape)}")
        self.register_buffer("weight_int8", weight_int8.to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale.detach().float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().to(activation_dtype))
        self.activation_dtype, self.exact, self.group_size = activation_dtype, exact, group_size
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]

    @property
    def uses_packed_kernel(self) -> bool:
        return not self.exact and self.group_size is None and self.in_features % PACKED_KERNEL_ALIGNMENT == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_packed_kernel and self._packed_is_faster(x):
            return self._packed(x)
        return self._dequantized(x)

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.weight_scale.to(torch.bfloat16))
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _dequantized(self, x: torch.Tensor) -> torch.Tensor:
        weight, scale = self.weight_int8.to(x.dtype), self.weight_scale.to(x.dtype)
        if self.group_size is None:
            weight = weight * scale[:, None]
        else:  # each group of inputs times its own scale, without materialising a per-element scale
            weight = (weight.view(self.out_features, -1, self.group_size) * scale[:, :, None]).view_as(weight)
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def _packed_is_faster(self, x: torch.Tensor) -> bool:
        rows = x.numel() // self.in_features
        key = (self.in_features, self.out_features, x.dtype, min(rows, _MANY_ROWS), torch.get_num_threads())
        if key not in _KERNEL_CHOICE:
            _KERNEL_CHOICE[key] = _best_of_two(lambda: self._packed(x), lambda: self._dequantized(x)) == 0
        return _KERNEL_CHOICE[key]

    @classmethod
    def from_reference(cls, ref: nn.Module, activation_dtype: torch.dtype = torch.float32,
                       exact: bool = False) -> "Linear":
        """From a reference Linear with symmetric per-channel (axis 0) qint8 weight qparams."""
        if not isinstance(ref, reference.Linear):
            raise TypeError(f"weight-only Linear.from_reference expects fxq.nn.reference.Linear, got {type(ref).__name__}")
        if not ref.is_per_channel or int(ref.weight_axis) != 0 or ref.weight_dtype != torch.qint8 or \
                bool((ref.weight_zero_point != 0).any()):
            raise ValueError("weight-only Linear needs symmetric per-output-channel int8 weights (zero point 0); use "
                             "fxq.get_weight_only_qconfig(), whose weight observer is per_channel_symmetric")
        # the integers in float arithmetic: no (deprecated) quantized tensor is made
        return cls(ref.integer_weight(), ref.weight_scale.double(), ref.bias, activation_dtype, exact)

    @classmethod
    def from_grouped(cls, linear: nn.Module, quantizer: nn.Module,
                     activation_dtype: torch.dtype = torch.float32) -> "Linear":
        """From a float Linear and its grouped weight quantizer (fxq.observers.GroupedWeightFakeQuantize), with the
        scales its last forward used (it observes the weight first if it never ran)."""
        ints = quantizer.integer_weight(linear.weight)
        scale, _ = quantizer.frozen_qparams()
        return cls(ints, scale, linear.bias, activation_dtype, exact=True, group_size=quantizer.group_size)

    def _get_name(self) -> str:
        return "WeightOnlyInt8Linear" if self.group_size is None else "WeightOnlyGroupedLinear"

    def extra_repr(self) -> str:
        kernel = "int8pack_mm" if self.uses_packed_kernel else "dequantize+linear"
        grouped = "" if self.group_size is None else f", group_size={self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}{grouped}, "
                f"activation_dtype={self.activation_dtype}, kernel={kernel}")


class Embedding(nn.Module):
    """int8 rows with one float scale and zero point per row; looks rows up, then dequantizes only those."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                 padding_idx: Optional[int] = None):
        super().__init__()
        self.register_buffer("weight_int8", weight_int8.contiguous())
        self.register_buffer("weight_scale", scale.detach().float().contiguous())
        self.register_buffer("weight_zero_point", zero_point.detach().float().contiguous())
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = weight_int8.shape

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        rows = self.weight_int8[indices]
        scale, zero_point = self.weight_scale[indices][..., None], self.weight_zero_point[indices][..., None]
        return (rows.float() - zero_point) * scale

    @classmethod
    def from_reference(cls, ref: nn.Module) -> "Embedding":
        """From a reference Embedding with per-row (axis 0) weight qparams."""
        if not isinstance(ref, reference.Embedding) or not ref.is_per_channel or int(ref.weight_axis) != 0:
            raise ValueError("weight-only Embedding needs fxq.nn.reference.Embedding with per-row (axis 0) qparams; "
                             "use fxq.float_qparams_weight_only_qconfig for embeddings")
        return cls(ref.integer_weight(), ref.weight_scale.double(), ref.weight_zero_point.float(), ref.padding_idx)

    def _get_name(self) -> str:
        return "WeightOnlyInt8Embedding"

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
