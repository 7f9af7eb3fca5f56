"""Per-channel histograms, so a HistogramObserver's state can be rebuilt for the equalized (scaled) tensor.

Equalization multiplies channel c by ``s[c]``, which stretches each channel differently: a histogram of the whole
tensor cannot be rescaled, but one histogram per channel can (channel c's bins just move to ``s[c]`` times their
edges). Each row follows HistogramObserver's rules: the first batch fixes the row's range to that channel's min and
max; a later batch that widens it re-bins the row (each old bin spread over ``rate`` sub-bins placed by their
centres) before adding the new counts.

Rows get as many bins as the observer has (then the rebuilt histogram equals the one the observer would have
recorded), unless that passes ``BUDGET`` counts per record (one row per input feature: a 4096-wide linear gets
1024 bins); merging then spreads each row bin evenly over the observer's finer bins.

    >>> import torch
    >>> rows = row_histograms(torch.tensor([[0., 1., 1.], [2., 2., 4.]]), torch.tensor([0., 2.]),
    ...                       torch.tensor([1., 4.]), bins=2)
    >>> rows.tolist()
    [[1.0, 2.0], [2.0, 1.0]]
    >>> merge_rows(rows, torch.tensor([0., 2.]), torch.tensor([1., 4.]), torch.tensor(0.), torch.tensor(4.)).tolist()
    [3.0, 3.0]
"""
from __future__ import annotations

from typing import Optional

import torch

UPSAMPLE_RATE = 16  # as HistogramObserver: sub-bins per old bin when re-binning
BUDGET = 1 << 22  # histogram counts per record (16 MB)
MIN_BINS = 128
_CHUNK_ELEMENTS = 1 << 22  # sub-bins re-binned at once (bounds the temporary memory for wide layers)


def bins_for(rows: int, wanted: int) -> int:
    """Bins per row for ``rows`` rows: ``wanted`` (the observer's), fewer if that would pass ``BUDGET``."""
    return max(min(wanted, BUDGET // max(rows, 1)), min(wanted, MIN_BINS))


def row_histograms(columns: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int,
                   rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(R, bins)`` counts in ``bins`` equal bins over ``[low[r], high[r]]`` of the values of every column whose
    ``rows`` entry is r (default: column c is row c). As histc: the top edge falls in the last bin; a row of zero
    width counts everything in bin 0."""
    rows = torch.arange(columns.shape[0]) if rows is None else rows
    count = low.shape[0]
    width = (high - low)[rows].unsqueeze(1)
    position = torch.where(width > 0, (columns - low[rows].unsqueeze(1)) / width.clamp_min(1e-30) * bins, 0.0)
    index = torch.nan_to_num(position).floor().clamp(0, bins - 1).long() + rows.unsqueeze(1) * bins
    return torch.bincount(index.flatten(), minlength=count * bins).reshape(count, bins).float()


def rebin_rows(histogram: torch.Tensor, old_low: torch.Tensor, old_high: torch.Tensor, new_low: torch.Tensor,
               new_high: torch.Tensor, out_bins: Optional[int] = None) -> torch.Tensor:
    """Each row's counts moved from its bins over its old range onto ``out_bins`` (default: as many) equal bins
    over its new range."""
    channels, bins = histogram.shape
    out_bins = out_bins or bins
    step = max(1, _CHUNK_ELEMENTS // (bins * UPSAMPLE_RATE))
    parts = [_rebin_chunk(histogram[i:i + step], (old_low[i:i + step], old_high[i:i + step]),
                          (new_low[i:i + step], new_high[i:i + step]), out_bins) for i in range(0, channels, step)]
    return torch.cat(parts) if parts else torch.zeros(0, out_bins)


def _rebin_chunk(histogram: torch.Tensor, old: tuple, new: tuple, out_bins: int) -> torch.Tensor:
    channels, bins = histogram.shape
    fine = histogram.repeat_interleave(UPSAMPLE_RATE, dim=1) / UPSAMPLE_RATE
    fine_width = ((old[1] - old[0]) / (bins * UPSAMPLE_RATE)).unsqueeze(1)
    centres = old[0].unsqueeze(1) + (torch.arange(bins * UPSAMPLE_RATE) + 0.5) * fine_width
    width = (new[1] - new[0]).unsqueeze(1)
    position = torch.where(width > 0, (centres - new[0].unsqueeze(1)) / width.clamp_min(1e-30) * out_bins, 0.0)
    target = position.floor().clamp(0, out_bins - 1).long() + torch.arange(channels).unsqueeze(1) * out_bins
    moved = torch.zeros(channels * out_bins, dtype=fine.dtype)
    return moved.index_add_(0, target.flatten(), fine.flatten()).reshape(channels, out_bins)


def merge_rows(histogram: torch.Tensor, low: torch.Tensor, high: torch.Tensor, target_low: torch.Tensor,
               target_high: torch.Tensor, bins: Optional[int] = None) -> torch.Tensor:
    """One histogram of ``bins`` bins over ``[target_low, target_high]`` (which covers every row's range) of all
    rows together."""
    channels = histogram.shape[0]
    moved = rebin_rows(histogram, low, high, target_low.expand(channels), target_high.expand(channels), bins)
    return moved.sum(dim=0)
