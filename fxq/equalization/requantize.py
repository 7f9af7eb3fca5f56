"""Rebuild a quantization observer as if it had watched the equalized tensor (channel c multiplied by ``s[c]``).

The qconfig the user chose keeps computing the qparams: the rebuilt observer is a copy of the user's (same type,
same settings) whose state is what calibration would have left on the scaled data. The ChannelRangeObserver
next to it recorded what that takes (prepare asks :func:`configure_recording`):

- ``MinMaxObserver``: the range of the scaled tensor, from the per-channel min/max (exact);
- a MinMaxObserver subclass with its own update rule (``MovingAverageMinMaxObserver``): each batch's per-channel
  min/max, replayed through a fresh copy batch by batch (exact);
- ``HistogramObserver``: one histogram per channel, stretched by ``s[c]`` and merged into one histogram over the
  scaled range (counts spread evenly within a bin, the approximation the observer itself makes whenever its range
  widens; very wide layers get fewer bins per channel, see fxq.equalization.histograms.BUDGET).

Other observer types cannot be rebuilt; prepare does not equalize a layer whose input observer is one of them.

    >>> import torch
    >>> from fxq.equalization.observers import ChannelRangeObserver
    >>> from fxq.observers import HistogramObserver
    >>> user, record = HistogramObserver(bins=8), ChannelRangeObserver(ch_axis=1)
    >>> configure_recording(record, user)
    >>> x = torch.tensor([[1.0, 10.0], [2.0, 20.0]])
    >>> _, _ = user(x), record(x)
    >>> rebuilt = rescaled_observer(user, record, torch.tensor([2.0, 0.1]))
    >>> type(rebuilt).__name__, rebuilt.min_val.item(), rebuilt.max_val.item()
    ('HistogramObserver', 1.0, 4.0)
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from fxq.equalization import histograms
from fxq.equalization.observers import ChannelRangeObserver
from fxq.observers import HistogramObserver, MinMaxObserver

REBUILDABLE = "MinMaxObserver (and subclasses such as MovingAverageMinMaxObserver) or HistogramObserver"


def rebuild_kind(observer: nn.Module) -> Optional[str]:
    """"range", "batches" or "histogram": what rebuilding ``observer`` needs recorded; None if it cannot be."""
    if isinstance(observer, HistogramObserver):
        return "histogram"
    if isinstance(observer, MinMaxObserver):
        return "range" if type(observer)._record is MinMaxObserver._record else "batches"
    return None


def configure_recording(record: ChannelRangeObserver, observer: nn.Module) -> None:
    """Make ``record`` keep what :func:`rescaled_observer` needs to rebuild ``observer``."""
    kind = rebuild_kind(observer)
    if kind == "histogram":
        record.bins = max(record.bins, observer.bins)  # the record lowers it if memory asks (histograms.BUDGET)
    record.keep_batches = record.keep_batches or kind == "batches"


def rescaled_observer(observer: nn.Module, record: ChannelRangeObserver, scale: torch.Tensor) -> nn.Module:
    """A copy of ``observer`` holding the state it would have after seeing ``record``'s data scaled by ``scale``."""
    kind = rebuild_kind(observer)
    rebuilt = copy.deepcopy(observer)
    low, high = record.scaled_range(scale)
    if kind == "range":
        rebuilt.min_val, rebuilt.max_val = low.detach().clone(), high.detach().clone()
    elif kind == "batches":
        rebuilt.reset_min_max_vals()
        for batch_min, batch_max in zip(record.batch_min * scale, record.batch_max * scale):
            rebuilt(torch.stack([batch_min.min(), batch_max.max()]))
    elif kind == "histogram":
        if record.histogram.ndim != 2:
            raise RuntimeError(f"the equalization record next to a HistogramObserver kept no per-channel histograms "
                               f"(bins={record.bins}); it was not prepared for one: run prepare_fx again")
        rebuilt.min_val.copy_(low)
        rebuilt.max_val.copy_(high)
        rebuilt.histogram.copy_(histograms.merge_rows(record.histogram, *record.row_range(scale), low, high,
                                                      observer.bins))
    else:
        raise TypeError(f"cannot rebuild a {type(observer).__name__} for an equalized input; use {REBUILDABLE}")
    return rebuilt
