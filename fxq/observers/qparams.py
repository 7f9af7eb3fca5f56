"""Quantization ranges and the min/max -> (scale, zero_point) rule shared by every observer.

The numbers follow PyTorch AO's observers exactly (same float32 operations in the same order), so a
model calibrated with fxq gets the same scale and zero point as one calibrated with PyTorch AO.

    >>> import torch
    >>> quant_range(torch.qint8, reduce_range=True)
    (-64, 63)
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

# dtype -> (lowest, highest) integer it can hold; also the range used when none is given.
DTYPE_BOUNDS: dict[torch.dtype, tuple[int, int]] = {
    torch.quint8: (0, 255),
    torch.uint8: (0, 255),
    torch.qint8: (-128, 127),
    torch.int8: (-128, 127),
    torch.quint4x2: (0, 15),
    torch.qint32: (-(2**31), 2**31 - 1),
    torch.int32: (-(2**31), 2**31 - 1),
    torch.int16: (-(2**15), 2**15 - 1),
    torch.uint16: (0, 2**16 - 1),
}
# reduce_range without a custom range drops one bit for the 8-bit types only (x86 vpmaddubsw overflow).
_REDUCED_BOUNDS = {torch.quint8: (0, 127), torch.uint8: (0, 127), torch.qint8: (-64, 63), torch.int8: (-64, 63)}

PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL_QSCHEMES = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


def _names(values) -> str:
    return ", ".join(str(value) for value in values)


def check_dtype(owner: str, dtype: torch.dtype) -> None:
    """Raise a ValueError naming `owner` unless `dtype` is an integer dtype observers can compute qparams for."""
    if dtype not in DTYPE_BOUNDS:
        raise ValueError(f"{owner}(dtype={dtype}) is not supported; dtype must be one of {_names(DTYPE_BOUNDS)}")


def check_qscheme(owner: str, qscheme: torch.qscheme, allowed: tuple) -> None:
    """Raise a ValueError naming `owner` unless `qscheme` is one of `allowed`."""
    if qscheme not in allowed:
        raise ValueError(f"{owner}(qscheme={qscheme}) is not supported; qscheme must be one of {_names(allowed)}")


def quant_range(
    dtype: torch.dtype,
    reduce_range: bool = False,
    quant_min: Optional[int] = None,
    quant_max: Optional[int] = None,
    owner: str = "observer",
) -> tuple[int, int]:
    """The (quant_min, quant_max) an observer quantizes to, as PyTorch AO computes it.

    A custom range must contain 0 and fit the dtype; reduce_range then halves both ends (floor),
    as PyTorch AO does. Without a custom range, reduce_range only affects the 8-bit dtypes.

    >>> quant_range(torch.quint8, quant_min=0, quant_max=15)
    (0, 15)
    """
    check_dtype(owner, dtype)
    if (quant_min is None) != (quant_max is None):
        raise ValueError(
            f"{owner}(quant_min={quant_min}, quant_max={quant_max}): give both quant_min and quant_max, or neither "
            f"to use the full range of {dtype}"
        )
    if quant_min is None:
        if reduce_range and dtype in _REDUCED_BOUNDS:
            return _REDUCED_BOUNDS[dtype]
        return DTYPE_BOUNDS[dtype]
    lowest, highest = DTYPE_BOUNDS[dtype]
    if not quant_min <= 0 <= quant_max or quant_min >= quant_max:
        raise ValueError(
            f"{owner}(quant_min={quant_min}, quant_max={quant_max}): the range must contain 0 and have "
            f"quant_min < quant_max"
        )
    # PyTorch AO only checks the width of the range; a range the dtype cannot hold would quantize to garbage.
    if quant_min < lowest or quant_max > highest:
        raise ValueError(
            f"{owner}(quant_min={quant_min}, quant_max={quant_max}) does not fit dtype {dtype}, whose range is "
            f"[{lowest}, {highest}]; narrow the range or pick a wider dtype"
        )
    if reduce_range:
        return quant_min // 2, quant_max // 2
    return quant_min, quant_max


def default_qparams(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1.0, 0) PyTorch AO returns for an observer that has seen no data, with a warning."""
    warnings.warn(
        "calculate_qparams was called on an observer that has seen no data; returning scale=1.0, zero_point=0. "
        "Run calibration data through the model first (observer.has_data() tells).",
        stacklevel=3,
    )
    return torch.tensor([1.0], device=device.type), torch.tensor([0], device=device.type)


def symmetric_zero_point(dtype: torch.dtype, quant_min: int, quant_max: int, custom_range: bool) -> int:
    """Zero point of symmetric quantization: the middle of an unsigned range, 0 for signed types."""
    if dtype in (torch.quint8, torch.uint8):
        return (quant_min + quant_max) // 2 if custom_range else 128
    if dtype == torch.uint16:
        return 2**15
    return 0


def qparams_from_min_max(observer, min_val: torch.Tensor, max_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point for the range [min_val, max_val] (scalars or one value per channel).

    `observer` supplies qscheme, dtype, quant_min, quant_max, has_customized_qrange and the eps buffer.
    Returns 1-D tensors; the zero point is int32 for affine, int64 for symmetric and float for
    per_channel_affine_float_qparams, as in PyTorch AO.
    """
    if min_val.numel() == 0 or (min_val.dim() == 0 and min_val == float("inf") and max_val == float("-inf")):
        return default_qparams(min_val.device)
    if bool(torch.any(min_val > max_val)):
        raise RuntimeError(
            f"{type(observer).__name__}: recorded min {min_val} exceeds max {max_val}; the observer state is corrupt "
            "(was it loaded from a bad state_dict?)"
        )
    quant_min, quant_max = observer.quant_min, observer.quant_max
    if observer.qscheme == torch.per_channel_affine_float_qparams:
        scale = (max_val - min_val) / float(quant_max - quant_min)
        scale = torch.where(scale > observer.eps, scale, torch.ones_like(scale))
        zero_point = -min_val / scale  # a float zero point: x_q = round((x - min) / scale)
        return _as_1d(scale), _as_1d(zero_point)
    min_neg = torch.min(min_val, torch.zeros_like(min_val))  # the range always includes 0
    max_pos = torch.max(max_val, torch.zeros_like(max_val))
    if observer.qscheme in SYMMETRIC_QSCHEMES:
        scale = torch.max(-min_neg, max_pos) / (float(quant_max - quant_min) / 2)
        scale = torch.max(scale, observer.eps)
        value = symmetric_zero_point(observer.dtype, quant_min, quant_max, observer.has_customized_qrange)
        zero_point = torch.full(min_neg.size(), value, dtype=torch.int64, device=min_neg.device)
        return _as_1d(scale), _as_1d(zero_point)
    scale = (max_pos - min_neg) / float(quant_max - quant_min)
    scale = torch.max(scale, observer.eps)
    zero_point = quant_min - torch.round(min_neg / scale).to(torch.int)
    return _as_1d(scale), _as_1d(torch.clamp(zero_point, quant_min, quant_max))


def _as_1d(tensor: torch.Tensor) -> torch.Tensor:
    # Per-tensor qparams are shape [1], matching what PyTorch AO and FakeQuantize hand around.
    return tensor.reshape(1) if tensor.dim() == 0 else tensor
