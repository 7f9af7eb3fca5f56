"""PercentileObserver: qparams for a percentile of the values seen, so a few outliers do not stretch the range.

What it computes, over many batches: the :class:`~fxq.observers.HistogramObserver` histogram of every value seen
(``bins`` equal bins over the min..max of all batches; a batch that widens the range re-bins the older counts),
read as a piecewise-linear distribution (values spread evenly inside each bin). Then

* affine qschemes: the range is [q(1 - p), q(p)], the lower and upper ``percentile`` points (``p`` = 99.99 keeps
  all but the lowest and highest 0.01% of the values);
* symmetric qschemes: the range is [-t, t], with ``t`` the ``percentile`` point of ``|x|``.

Both are exact for the binned data (the inverse of the piecewise-linear cumulative count, no search), so the
answer is within one bin width of ``torch.quantile`` over all the values. Batch order matters only through the
re-binning when the range widens; calibrated in one batch, or merged across processes (``fxq.calibrate(...,
distributed=True)`` counts every value into the final bins, as for HistogramObserver), it does not matter at all.

    >>> import torch
    >>> observer = PercentileObserver(percentile=99.0, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    >>> _ = observer(torch.cat([torch.linspace(-1.0, 1.0, 1000), torch.tensor([50.0])]))
    >>> round(float(observer.calculate_qparams()[0]) * 127.5, 2)  # the range [-t, t]: t near 0.99, not 50
    0.99
"""
from __future__ import annotations

from typing import Optional

import torch

from fxq.observers import qparams as qp
from fxq.observers.histogram import HistogramObserver

__all__ = ["PercentileObserver"]


class PercentileObserver(HistogramObserver):
    """Per-tensor qparams covering the ``percentile`` (in (50, 100]) of the values seen; see the module docstring.

    Same keywords as HistogramObserver plus ``percentile``; NaN in a batch is an error naming the batch, infinities
    are dropped with a warning (as HistogramObserver does).
    """

    def __init__(
        self,
        percentile: float = 99.99,
        bins: int = 2048,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict] = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
    ) -> None:
        if not isinstance(percentile, (int, float)) or not 50.0 < percentile <= 100.0:
            raise ValueError(f"PercentileObserver(percentile={percentile!r}): the percentile must be in (50, 100] "
                             f"(99.99 keeps all but the outer 0.01%; 100 is the min/max range)")
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self._set_plain(percentile=float(percentile))

    def percentile_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (low, high) range the qparams cover, as 0-d float tensors (see the module docstring)."""
        low, high = float(self.min_val), float(self.max_val)
        histogram = self.histogram.double()
        total = float(histogram.sum())
        if not low < high or total == 0:
            return self.min_val.clone(), self.max_val.clone()
        edges = torch.linspace(low, high, self.bins + 1, dtype=torch.float64)
        cumulative = torch.cat([histogram.new_zeros(1), histogram.cumsum(0)])
        fraction = self.percentile / 100.0
        if self.qscheme in qp.SYMMETRIC_QSCHEMES:
            bound = _inverse_abs_cdf(edges, cumulative, fraction * total)
            found = (-bound, bound)
        else:
            found = (_inverse_cdf(edges, cumulative, (1.0 - fraction) * total),
                     _inverse_cdf(edges, cumulative, fraction * total))
        dtype = self.min_val.dtype
        return (torch.tensor(max(found[0], low), dtype=dtype), torch.tensor(min(found[1], high), dtype=dtype))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_data():
            return qp.default_qparams(self.min_val.device)
        return self._qparams_from_min_max(*self.percentile_range())

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, {super().extra_repr()}"


def _inverse_cdf(edges: torch.Tensor, cumulative: torch.Tensor, count: float) -> float:
    """The value below which ``count`` values lie, counts spread evenly inside each bin."""
    index = int(torch.searchsorted(cumulative, torch.tensor([count], dtype=cumulative.dtype), right=False)[0])
    index = min(max(index, 1), len(edges) - 1)  # the bin (index - 1, index] holding the count
    below, inside = float(cumulative[index - 1]), float(cumulative[index] - cumulative[index - 1])
    share = 0.0 if inside == 0 else (count - below) / inside
    return float(edges[index - 1] + min(max(share, 0.0), 1.0) * (edges[index] - edges[index - 1]))


def _inverse_abs_cdf(edges: torch.Tensor, cumulative: torch.Tensor, count: float) -> float:
    """The t >= 0 with ``count`` values in [-t, t]. The count in [-t, t], cdf(t) - cdf(-t), is linear between the
    points |edge| (and 0), so evaluating it there and interpolating is exact."""
    points = torch.unique(torch.cat([edges.abs(), edges.new_zeros(1)]))  # sorted
    inside = _cdf(edges, cumulative, points) - _cdf(edges, cumulative, -points)
    index = int(torch.searchsorted(inside, torch.tensor([count], dtype=inside.dtype))[0])
    if index == 0:
        return float(points[0])
    index = min(index, len(points) - 1)
    step = float(inside[index] - inside[index - 1])
    share = 0.0 if step == 0 else (count - float(inside[index - 1])) / step
    return float(points[index - 1] + min(max(share, 0.0), 1.0) * (points[index] - points[index - 1]))


def _cdf(edges: torch.Tensor, cumulative: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear cumulative count at each value of ``at``."""
    width = edges[1] - edges[0]
    position = ((at.clamp(edges[0], edges[-1]) - edges[0]) / width).clamp(0, len(edges) - 1)
    below = position.floor().long().clamp(max=len(edges) - 2)
    share = position - below
    return cumulative[below] + share * (cumulative[below + 1] - cumulative[below])
