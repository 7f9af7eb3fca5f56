"""Per-channel weight quantization, faster in the case convert_fx meets on almost every layer.

``torch.quantize_per_channel`` walks channels in a scalar loop: on ResNet-50's 25M weights it was a fifth of
convert_fx. For float32 weights with zero points all 0 (the symmetric qconfigs every default mapping uses) it
computes ``round_half_to_even(w * float32(1 / scale))``, clamped to the dtype; the same arithmetic as
whole-tensor ops gives the same integers (tests/test_weight_quantize.py compares them bit for bit, rounding
ties included) in a third of the time. Anything else goes to torch.quantize_per_channel.

    >>> import torch
    >>> w = torch.randn(4, 3)
    >>> scale, zero_point = w.abs().amax(1) / 127, torch.zeros(4, dtype=torch.long)
    >>> ours = quantize_per_channel(w, scale, zero_point, 0, torch.qint8)
    >>> torch.equal(ours.int_repr(), torch.quantize_per_channel(w, scale, zero_point, 0, torch.qint8).int_repr())
    True
"""
from __future__ import annotations

import torch

__all__ = ["quantize_per_channel"]


def quantize_per_channel(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """The result of ``torch.quantize_per_channel(weight, scale, zero_point, axis, dtype)``."""
    if not _fast_path_applies(weight, scale, zero_point, dtype):
        return torch.quantize_per_channel(weight, scale, zero_point, axis, dtype)
    shape = [1] * weight.dim()
    shape[axis] = -1
    inverse = (1.0 / scale).reshape(shape)
    ints = (weight * inverse).round_().clamp_(-128, 127).to(torch.int8)  # in place: fresh large tensors page-fault
    return torch._make_per_channel_quantized_tensor(ints, scale.to(torch.float64), zero_point.to(torch.long), axis)


def _fast_path_applies(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                       dtype: torch.dtype) -> bool:
    return (dtype == torch.qint8 and weight.dtype == torch.float32 and scale.dtype == torch.float32
            and weight.device.type == "cpu" and weight.dim() >= 1 and not zero_point.is_floating_point()
            and not bool(zero_point.any()))
