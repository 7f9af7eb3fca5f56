"""One-pass histogram merging: faster distributed calibration, at the price of exactness.

The exact histogram merge (fxq.observers.merge.HistogramMerge) runs the data twice: once for the common range,
once to count into it. With ``fxq.calibrate(..., exact_histograms=False)`` each rank's HistogramObserver counts
in one pass, as a single process would, re-binning as its own range grows. The merge then moves every rank's
histogram onto the common range with the observer's own re-binning (what one process does when a later batch
widens its range) and sums them. The result is as approximate as one process's histogram already is: it depends on
how the data was split, as one process's depends on batch order. tests/test_distributed.py bounds the difference.

    >>> import torch
    >>> from fxq.observers import HistogramObserver
    >>> observer = HistogramObserver(bins=4)
    >>> _ = observer(torch.tensor([0.0, 1.0]))
    >>> merger = OnePassHistogramMerge("h", observer)
    >>> merger.set_range(torch.tensor([0.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    >>> merger.count_part().tolist()  # the bins of [0, 1] moved onto those of [0, 2]: [0.75, 1] lands in [0.5, 1)
    [1.0, 1.0, 0.0, 0.0]
"""
from __future__ import annotations

import torch

from fxq.observers.merge import Merger, MinMaxMerge, as_double, refuse_earlier_data


class OnePassHistogramMerge(Merger):
    """A HistogramObserver counts in the (only) pass; its histogram is re-binned onto the merged range and summed."""

    def begin_first_pass(self):
        refuse_earlier_data(self)

    range_part = MinMaxMerge.range_part

    def set_range(self, low, high):
        self.low, self.high = float(low[0]), float(high[0])

    def count_part(self):
        observer = self.observer
        if not observer.has_data():
            return torch.zeros(observer.bins, dtype=torch.float64)
        return as_double(observer._rebinned(self.low, self.high))

    def set_counts(self, total):
        if not bool(total.any()):
            return  # no rank saw data
        observer = self.observer
        observer.histogram = total.to(torch.float32)
        observer.min_val.fill_(self.low)
        observer.max_val.fill_(self.high)
