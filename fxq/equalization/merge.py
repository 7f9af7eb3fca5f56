"""Merging equalization's per-column records across processes (the protocol: fxq.observers.merge).

    >>> from fxq.equalization.observers import InputEqualizationObserver
    >>> merger = ChannelRangeMerge("x_eq", InputEqualizationObserver())
    >>> merger.second_pass
    False
"""
from __future__ import annotations

import torch

from fxq.equalization.histograms import bins_for
from fxq.observers.merge import Merger, as_double, refuse_earlier_data


class ChannelRangeMerge(Merger):
    """Equalization's per-column record: min/max as minmax, each batch's rows gathered in rank order (as one process
    appends them), and per-channel histogram rows counted in a second pass over the merged ranges (as histogram)."""

    def begin_first_pass(self):
        observer = self.observer
        if (observer.bins or observer.keep_batches) and observer.has_data():
            refuse_earlier_data(self)
        self.bins, self.keep_batches = observer.bins, observer.keep_batches
        self.second_pass = bool(self.bins)
        observer.bins = 0  # first pass: ranges (and batch rows) only

    def range_part(self):
        return as_double(self.observer.min_val), as_double(self.observer.max_val)

    def set_range(self, low, high):
        if low.numel():
            self.observer.min_val, self.observer.max_val = low.float(), high.float()

    def record_part(self):
        if not self.keep_batches:
            return None
        rows = self.observer.batch_min
        width = rows.shape[-1] if rows.ndim == 2 else 0
        return torch.cat([torch.tensor([float(width)], dtype=torch.float64), as_double(rows),
                          as_double(self.observer.batch_max)])

    def set_records(self, per_rank):
        width = max(int(part[0]) for part in per_rank)
        if width:
            lows, highs = zip(*(part[1:].reshape(2, -1, width) for part in per_rank))
            self.observer.batch_min, self.observer.batch_max = torch.cat(lows).float(), torch.cat(highs).float()

    def begin_second_pass(self):
        observer = self.observer
        if not (self.bins and observer.has_data()):
            return super().begin_second_pass()
        rows = observer.row_range()[0].numel()
        observer.bins = bins_for(rows, self.bins)  # as its first batch would choose
        observer.histogram = torch.zeros(rows, observer.bins, dtype=torch.float64)  # exact past 2**24 counts
        observer.keep_batches = False  # the rows were gathered after the first pass

    def count_part(self):
        return as_double(self.observer.histogram) if self.second_pass and self.observer.has_data() else None

    def set_counts(self, total):
        self.observer.histogram = total.reshape(self.observer.histogram.shape).float()

    def end(self):
        super().end()
        self.observer.histogram = self.observer.histogram.float()  # float64 only while counting
        if hasattr(self, "bins"):
            self.observer.keep_batches = self.keep_batches
            if not self.observer.histogram.numel():
                self.observer.bins = self.bins
