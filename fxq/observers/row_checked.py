"""A HistogramObserver that also keeps what convert needs to check whether one scale suits every row (token).

A static int8 linear quantizes its whole input with one scale. Where the rows' magnitudes differ widely, that
scale is set by the largest rows and the small ones keep few levels; worse, a row larger than any seen in
calibration is clipped. Causal attention makes such rows: the first tokens attend to themselves only, so their
context vectors are whole value vectors while later ones are averages (GPT-2's attention output projection:
static per-tensor 26 dB on held-out rows, per-token 45 dB). passes/per_token_fallback.py asks
:func:`per_token_wins` at convert time and, where it says so, runs the linear with activations quantized per
token, per call (an int8 kernel still).

The check (:func:`static_cost_db`) compares a scale per row on a sample of the rows the observer kept with the same
values shuffled across rows: what a scale per row gains only from the rows' different sizes, which one static
scale cannot give back. The sample (64 seeded rows of each of the latest 16 calls) and each call's range travel
in the state_dict and merge across ranks (:class:`RowCheckedMerge`).

    >>> observer = RowCheckedHistogramObserver(reduce_range=False)
    >>> rows = torch.ones(8, 4) * 0.01
    >>> _ = observer(rows); _ = observer(torch.cat([rows, torch.ones(1, 4) * 5.0]))   # one row 500x the rest
    >>> per_token_wins(observer)
    True
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from fxq.observers.histogram import HistogramObserver
from fxq.observers.merge import HistogramMerge

__all__ = ["RowCheckedHistogramObserver", "RowCheckedMerge", "per_token_wins", "static_cost_db", "PER_TOKEN_MARGIN_DB"]

# Per token wins when the rows' sizes alone are worth this much (1.5 dB: 1.4 times the noise). On the tiny
# transformers GPT-2's attention output projections measure 1.7 and 2.0 dB (their static SQNR on held-out rows:
# 26 dB, per token 45) and every linear of BERT, DistilBERT, ViT and ConvNeXt -0.7 to 0.1 dB.
PER_TOKEN_MARGIN_DB = 1.5
_SAMPLED_ROWS = 64  # rows kept per call: enough to see the large ones, small beside a 3072-wide weight
_KEPT_CALLS = 16  # calls whose rows are kept (their ranges are all kept)


class RowCheckedHistogramObserver(HistogramObserver):
    """HistogramObserver (same qparams) that also keeps every call's (min, max) and a seeded sample of the rows of
    the latest calls (the last dimension is a row's width), as extra state in its state_dict."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.call_ranges: list = []
        self.call_rows: list = []  # (index into call_ranges, sampled rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = super().forward(x)
        self._keep_rows(x)
        return result

    def get_extra_state(self) -> dict:
        """The calls' ranges and sampled rows travel in the state_dict, so a model prepared again and loaded from
        it makes the same per-token choice."""
        return {"call_ranges": list(self.call_ranges), "call_rows": list(self.call_rows)}

    def set_extra_state(self, state: dict) -> None:
        self.call_ranges, self.call_rows = list(state["call_ranges"]), list(state["call_rows"])

    def _keep_rows(self, x) -> None:
        """Record one call: its range and a seeded sample of its rows (a float tensor of 2 dims or more only)."""
        if not (isinstance(x, torch.Tensor) and x.dim() >= 2 and x.numel() and x.is_floating_point()):
            return
        x = x.detach()
        rows = x.reshape(-1, x.shape[-1]).float()
        if rows.shape[0] > _SAMPLED_ROWS:
            generator = torch.Generator().manual_seed(rows.shape[0])  # the same rows of a batch on any rank
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:_SAMPLED_ROWS]]
        self._add_call(float(x.min()), float(x.max()), rows.clone())

    def _add_call(self, low: float, high: float, rows: Optional[torch.Tensor]) -> None:
        """Append a call's range, and its rows (when kept), dropping the rows of calls before the latest 16."""
        if rows is not None:
            self.call_rows = self.call_rows[-(_KEPT_CALLS - 1):] + [(len(self.call_ranges), rows)]
        self.call_ranges.append((low, high))


class RowCheckedMerge(HistogramMerge):
    """Distributed calibration (fxq.debug.distributed): the histogram merges as HistogramObserver's does, and every
    rank's calls (range and sampled rows) are gathered in rank order, so each rank ends with what one process
    seeing the batches in that order keeps (shards are contiguous: rank order is the original order)."""

    def begin_first_pass(self):
        super().begin_first_pass()
        observer, record_range = self.observer, self.observer.forward

        def record_range_and_rows(x: torch.Tensor) -> torch.Tensor:
            record_range(x)
            observer._keep_rows(x)
            return x
        observer.forward = record_range_and_rows

    def record_part(self) -> torch.Tensor:
        """[calls, then per call: min, max, kept rows (0 when dropped), width, the rows]."""
        kept = dict(self.observer.call_rows)
        part = [float(len(self.observer.call_ranges))]
        for index, (low, high) in enumerate(self.observer.call_ranges):
            rows = kept.get(index)
            part += [low, high, 0.0 if rows is None else float(rows.shape[0]),
                     0.0 if rows is None else float(rows.shape[1])]
            if rows is not None:
                part += rows.reshape(-1).tolist()
        return torch.tensor(part, dtype=torch.float64)

    def set_records(self, per_rank: list) -> None:
        observer = self.observer
        observer.call_ranges, observer.call_rows = [], []
        for part in per_rank:
            values, at = part.tolist(), 1
            for _ in range(int(values[0]) if values else 0):
                low, high, count, width = values[at:at + 4]
                at += 4
                rows = part[at:at + int(count * width)].reshape(int(count), int(width)).to(torch.float32) \
                    if count else None
                at += int(count * width)
                observer._add_call(low, high, rows)


def per_token_wins(observer: RowCheckedHistogramObserver, margin_db: float = PER_TOKEN_MARGIN_DB) -> bool:
    """Whether the rows' sizes differ enough that a scale per row beats one scale by ``margin_db`` or more."""
    cost = static_cost_db(observer)
    return cost is not None and cost >= margin_db


def static_cost_db(observer: RowCheckedHistogramObserver) -> Optional[float]:
    """How much less noise (dB) a scale per row makes on the kept rows than on the same values shuffled across
    rows; None before any data.

    A scale per row always beats one scale somewhat, because a short row's extremes are smaller than the whole
    tensor's (8 values of a Gaussian reach 1.4 sigma, 2048 reach 3.5): that gain is the same for shuffled values
    and says nothing about the rows. What remains is the part one static scale cannot give back: rows of
    different sizes."""
    kept = getattr(observer, "call_rows", None)
    if not kept:
        return None
    levels = observer.quant_max - observer.quant_min
    rows = torch.cat([r for _, r in kept])
    generator = torch.Generator().manual_seed(rows.numel())
    shuffled = rows.flatten()[torch.randperm(rows.numel(), generator=generator)].reshape(rows.shape)
    own, mixed = (_noise(r, r.amin(-1, keepdim=True), r.amax(-1, keepdim=True), levels) for r in (rows, shuffled))
    if own == 0:
        return math.inf if mixed > 0 else 0.0
    return 10 * math.log10(max(mixed, 1e-30) / own)


def _noise(rows: torch.Tensor, low: torch.Tensor, high: torch.Tensor, levels: int) -> float:
    """Mean squared error of asymmetric uniform quantization of ``rows`` over [low, high] (widened to hold 0)."""
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = ((high - low) / levels).clamp_min(1e-12)
    zero_point = torch.round(-low / scale)
    integers = torch.clamp(torch.round(rows / scale) + zero_point, 0, levels)
    return float((rows - (integers - zero_point) * scale).pow(2).mean())
