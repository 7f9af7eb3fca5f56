"""The equalization arithmetic: per-column scales and weights rescaled by them (always new tensors).

Input-weight equalization multiplies input column c by ``s[c]`` and weight column c by ``1 / s[c]``; the layer's
output is unchanged and both ranges become ``sqrt(x_range * w_range)``.

    >>> import torch
    >>> equalization_scale(torch.tensor([0., 0.]), torch.tensor([100., 0.]), torch.tensor([-1., -1.]),
    ...                    torch.tensor([1., 1.])).tolist()
    [0.1414213627576828, 1.0]
"""
from __future__ import annotations

from typing import Optional

import torch


def safe_ratio_sqrt(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """sqrt(numerator / denominator) with 1 wherever that is 0, inf or NaN (dead channels, zero weight columns)."""
    scale = torch.sqrt(numerator.double() / denominator.double()).float()
    usable = torch.isfinite(scale) & (scale > 0)
    return torch.where(usable, scale, torch.ones_like(scale))


def equalization_scale(x_min: torch.Tensor, x_max: torch.Tensor, w_min: torch.Tensor,
                       w_max: torch.Tensor) -> torch.Tensor:
    """Per-column ``sqrt((w_max - w_min) / (x_max - x_min))``; 1 where either range is zero or unknown."""
    if x_min.shape != w_min.shape:
        raise ValueError(f"input has {x_min.numel()} columns but the weight has {w_min.numel()}: the equalized "
                         f"layer's input dim 1 must match its weight dim 1")
    return safe_ratio_sqrt(w_max - w_min, x_max - x_min)


def along(scale: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """``scale`` shaped to broadcast along ``dim`` of a tensor with ``ndim`` dimensions."""
    shape = [1] * ndim
    shape[dim] = scale.numel()
    return scale.reshape(shape)


def scale_weight(weight: torch.Tensor, column_scale: Optional[torch.Tensor],
                 row_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """A new weight: columns (dim 1) divided by ``column_scale``, rows (dim 0) multiplied by ``row_scale``."""
    weight = weight.detach()
    if column_scale is not None:
        weight = weight / along(column_scale, 1, weight.ndim).to(weight.dtype)
    if row_scale is not None:
        weight = weight * along(row_scale, 0, weight.ndim).to(weight.dtype)
    return weight.clone()
