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


def weight_columns(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``(in_channels, -1)``: row c holds every weight entry that multiplies input channel c.

    A grouped conv's weight is ``(out, in / groups, ...)``; input channel c belongs to group
    ``g = c // (in / groups)`` and meets column ``c % (in / groups)`` of that group's ``out / groups`` rows only.

    >>> weight_columns(torch.arange(8.).reshape(4, 1, 2), groups=2).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    """
    rows, per_group = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(groups, rows // groups, per_group, -1)
    return grouped.permute(0, 2, 1, 3).reshape(groups * per_group, -1)


def scale_weight(weight: torch.Tensor, column_scale: Optional[torch.Tensor],
                 row_scale: Optional[torch.Tensor], groups: int = 1) -> torch.Tensor:
    """A new weight: the entries meeting input channel c divided by ``column_scale[c]`` (dim 1, within its group
    for a grouped conv), rows (dim 0) multiplied by ``row_scale``."""
    weight = weight.detach()
    if column_scale is not None:
        rows, per_group = weight.shape[0], weight.shape[1]
        grouped = weight.reshape(groups, rows // groups, per_group, -1)
        divisor = column_scale.reshape(groups, 1, per_group, 1).to(weight.dtype)
        weight = (grouped / divisor).reshape(weight.shape)
    if row_scale is not None:
        weight = weight * along(row_scale, 0, weight.ndim).to(weight.dtype)
    return weight.clone()


def tied_scale(x_min: torch.Tensor, x_max: torch.Tensor, w_min: torch.Tensor, w_max: torch.Tensor,
               channel_map: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale per previous-layer channel, scale per input feature) when the features ``channel_map`` sends to the
    same channel must share one scale (a flatten turns each conv channel into H*W features; the scale is folded
    into that channel's weight row). Each channel's ranges are the widest over its features.

    >>> per_channel, per_feature = tied_scale(torch.tensor([-1., -4.]), torch.tensor([1., 4.]),
    ...     torch.tensor([-4., -1.]), torch.tensor([4., 1.]), torch.tensor([0, 0]), 1)
    >>> per_channel.tolist(), per_feature.tolist()
    ([1.0], [1.0, 1.0])
    """
    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        start = torch.zeros(channels, dtype=values.dtype)  # a channel no feature maps to keeps range 0: scale 1
        return start.scatter_reduce(0, channel_map, values, how, include_self=False)

    per_channel = equalization_scale(reduce(x_min, "amin"), reduce(x_max, "amax"), reduce(w_min, "amin"),
                                     reduce(w_max, "amax"))
    return per_channel, per_channel[channel_map]
