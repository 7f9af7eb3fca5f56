"""How each observer's state crosses processes in distributed calibration (the collectives: fxq.debug.distributed).

Calibration runs a first pass over each rank's batches, merges, and, when a histogram needs it, a second pass.
One merger per observer says what it gives to each bucketed collective and what it takes back:

=============== ============================ ========================================= ==============================
kind            first pass records           merge                                     equals one process that ...
=============== ============================ ========================================= ==============================
minmax          running min / max            all-reduce min and max                    sees all batches, any order
moving_average  each batch's min / max       all-gather, replay the update in rank     sees the batches in rank order
                                             order on every rank
histogram       the range only               all-reduce the range; the second pass     is fed all values at once
                                             counts into those common bins (float64); (``torch.cat``): no re-binning
                                             all-reduce the counts (a sum)             (counts exact, rounded once)
channel_range   min / max, each batch's rows as minmax; rows gathered in rank order;   the same, per part
                (histogram rows: range only) histogram rows as histogram
stateless       nothing                      nothing                                   -
user            what its forward records     all-gather ``state_dict()``s; the class's whatever its method defines
                                             ``merge_states(states)`` sets the result
=============== ============================ ========================================= ==============================

A user observer class opts in with ``def merge_states(self, states: list[dict[str, torch.Tensor]]) -> None``: it
gets every rank's ``state_dict()`` in rank order (its own included) and sets its own state to their merge.
Which merger each observer class gets: fxq.observers.merge_table.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from fxq.observers.minmax import PerChannelMinMaxObserver

class Merger:
    """What one observer contributes to each collective. This base merges nothing (observers without statistics).

    ``*_part`` methods return this rank's contribution (1-d float64, or None for no part in that collective);
    ``set_*`` methods take the merged result, identical on every rank.
    """

    second_pass = False  # True: counts again over the merged range in a second pass

    def __init__(self, name: str, observer: nn.Module) -> None:
        self.name, self.observer = name, observer

    def begin_first_pass(self) -> None: ...
    def end_first_pass(self) -> None: ...
    def range_part(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]: return None
    def set_range(self, low: torch.Tensor, high: torch.Tensor) -> None: ...
    def record_part(self) -> Optional[torch.Tensor]: return None
    def set_records(self, per_rank: list[torch.Tensor]) -> None: ...
    def count_part(self) -> Optional[torch.Tensor]: return None
    def set_counts(self, total: torch.Tensor) -> None: ...

    def begin_second_pass(self) -> None:
        self.observer.forward = _pass_through  # it merged already: the second pass must not count its data twice

    def end(self) -> None:
        """Undo every patch; safe to call twice, and after a failure at any point."""
        self.observer.__dict__.pop("forward", None)
        self.observer.__dict__.pop("_record", None)


def _pass_through(x: Any) -> Any:
    return x


def as_double(values: torch.Tensor) -> torch.Tensor:
    return values.detach().reshape(-1).to("cpu", torch.float64)  # float32 -> float64 -> float32 is exact


class MinMaxMerge(Merger):
    def range_part(self):
        return as_double(self.observer.min_val), as_double(self.observer.max_val)

    def set_range(self, low, high):
        if low.numel() == 0:
            return  # a per-channel observer no rank gave data: keep it empty
        observer = self.observer
        for buffer, merged in ((observer.min_val, low), (observer.max_val, high)):
            if buffer.numel() != merged.numel():
                buffer.resize_(merged.shape)  # a per-channel observer that saw no data on this rank
            buffer.copy_(merged.reshape(buffer.shape).to(buffer.dtype))


class MovingAverageMerge(Merger):
    """Replays every batch's (min, max) through the observer's own update, in rank order: the same float
    operations one process would run, so the state is bit-identical."""

    def begin_first_pass(self):
        refuse_earlier_data(self)
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []
        observer, update = self.observer, type(self.observer)._record

        def record_then_update(low: torch.Tensor, high: torch.Tensor) -> None:
            self.records.append((low.clone(), high.clone()))
            update(observer, low, high)
        observer._record = record_then_update

    def end_first_pass(self):
        self.observer.__dict__.pop("_record", None)

    def record_part(self):
        if not self.records:
            return torch.zeros(0, dtype=torch.float64)
        lows, highs = (torch.stack([as_double(r[i]) for r in self.records]) for i in (0, 1))
        width = torch.tensor([float(lows.shape[1])], dtype=torch.float64)  # leads the part: how to cut it again
        return torch.cat([width, lows.reshape(-1), highs.reshape(-1)])

    def set_records(self, per_rank):
        observer, update = self.observer, type(self.observer)._record
        shape = (-1,) if isinstance(observer, PerChannelMinMaxObserver) else ()  # per-tensor records are 0-d
        observer.reset_min_max_vals()
        for part in per_rank:
            if part.numel() == 0:
                continue
            lows, highs = part[1:].reshape(2, -1, int(part[0])).to(observer.min_val.device, observer.min_val.dtype)
            for low, high in zip(lows, highs):
                update(observer, low.reshape(shape), high.reshape(shape))


class HistogramMerge(Merger):
    """First pass: the range only. Merged range, then a second pass counts every value into the same bins on every
    rank, so the summed counts are the histogram of all values at once (integers: the sum is exact)."""

    second_pass = True

    def begin_first_pass(self):
        refuse_earlier_data(self)
        observer = self.observer

        def record_range(x: torch.Tensor) -> torch.Tensor:
            observer._count_batch()  # so an error names the batch, as forward's would
            if x.numel():
                values, low, high = observer._finite_values(x.detach())  # raises on NaN, drops infinities, as forward
                if values.numel():
                    observer.min_val.fill_(min(low, observer.min_val.item()))
                    observer.max_val.fill_(max(high, observer.max_val.item()))
            return x
        observer.forward = record_range

    def end_first_pass(self):
        self.observer.__dict__.pop("forward", None)
        self.observer.__dict__.pop("batches_seen", None)  # the second pass numbers the same batches again

    range_part = MinMaxMerge.range_part

    def set_range(self, low, high):
        self.observer.min_val.fill_(float(low[0]))
        self.observer.max_val.fill_(float(high[0]))

    def begin_second_pass(self):
        if not self.observer.has_data():
            return super().begin_second_pass()  # no rank saw data: nothing to count
        # Count in float64: float32 stops counting exactly past 2**24 per bin (ReLU zeros reach that on ResNet-50),
        # and then the sum would depend on how the batches were split. Each batch's counts stay float32, as forward's.
        self.observer.histogram = torch.zeros_like(self.observer.histogram, dtype=torch.float64)

    def count_part(self):
        return as_double(self.observer.histogram)

    def set_counts(self, total):
        self.observer.histogram = total.to(torch.float32)  # the exact total, rounded once

    def end(self):
        super().end()
        if self.observer.histogram.dtype != torch.float32:  # a failure between the passes
            self.observer.histogram = self.observer.histogram.to(torch.float32)


def refuse_earlier_data(merger: Merger) -> None:
    if merger.observer.has_data():
        raise ValueError(
            f"observer '{merger.name}' ({type(merger.observer).__name__}) already holds statistics; distributed "
            f"calibration merges it exactly only from an empty state. Calibrate all the data in one fxq.calibrate "
            f"call on a freshly prepared model (or reset the observer first).")
