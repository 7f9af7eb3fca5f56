"""The HistogramObserver's per-batch work, fast: counting values into bins, and moving counts to wider bins.

Both give bit for bit what PyTorch AO computes, only cheaper:

* `histc` equals `torch.histc(values, bins, min=low, max=high)`. On CPU, torch.histc is a scalar loop
  (about 12 ns per value here). Its bin choice is a formula, not a search over bin edges:
  `trunc(((v - low) * bins) / (high - low))` in float32, the last bin also taking `high`. The same
  float32 operations as whole-tensor kernels, then `torch.bincount`, cost 1.5 to 2 ns per value.
  torch.histc also counts in float32, which is exact up to 2**24 per bin; past that it saturates,
  so a batch that puts more values in one bin falls back to torch.histc.
* `rebin` equals PyTorch AO's re-binning of an old histogram into a wider range: every old bin split
  into `rate` sub-bins, each sub-bin's count sent to the new bin holding its centre. PyTorch AO finds
  those bins with `bucketize` (a binary search per sub-bin, 32,768 of them); since the centres and
  the new edges are both sorted, one `searchsorted` per new edge gives the same assignment.

    >>> import torch
    >>> values = torch.tensor([0.0, 0.25, 0.5, 1.0])
    >>> histc(values, 4, 0.0, 1.0)
    tensor([1., 1., 1., 1.])
    >>> torch.equal(histc(values, 4, 0.0, 1.0), torch.histc(values, 4, min=0.0, max=1.0))
    True
    >>> rebin(torch.tensor([4.0, 0.0]), torch.tensor(0.0), torch.tensor(1.0), 0.0, 2.0, rate=2)
    tensor([4., 0.])
"""
from __future__ import annotations

import struct
import threading

import torch

_EXACT_COUNTS = 2**24  # float32 holds every integer count up to here; torch.histc counts in float32
_CHUNK = 1 << 19  # values per pass: the scratch (4 MB per thread) stays near the cache
SMALL_INPUT = 4096  # values; below this, torch.histc itself is the cheapest count
_FLOAT32_MAX = 3.4028234663852886e38
_SMALLEST_NORMAL = 2.0**-126
_scratch = threading.local()


def histc(values: torch.Tensor, bins: int, low: float, high: float) -> torch.Tensor:
    """`torch.histc(values, bins, min=low, max=high)`, for finite `values` that all lie in [low, high]."""
    divisor = _bin_divisor(values, bins, low, high)
    if divisor is None:
        return torch.histc(values, bins, min=low, max=high)
    flat = _flat(values)
    counts = _count_chunk(flat[:_CHUNK], bins, low, divisor)
    for start in range(_CHUNK, flat.numel(), _CHUNK):
        counts += _count_chunk(flat[start : start + _CHUNK], bins, low, divisor)
    if flat.numel() > _EXACT_COUNTS and int(counts.max()) > _EXACT_COUNTS:
        return torch.histc(values, bins, min=low, max=high)  # torch.histc's float32 counts saturated
    counts.narrow(0, bins - 1, 1).add_(counts.narrow(0, bins, 1))  # the last bin includes its right edge
    return counts.narrow(0, 0, bins).to(torch.float32)


def _bin_divisor(values: torch.Tensor, bins: int, low: float, high: float):
    """What to divide (v - low) by to get torch.histc's bin, or None where only torch.histc itself will do.

    torch.histc computes ((v - low) * bins) / (high - low) in the values' dtype. For float32 values on
    CPU with a power-of-two `bins`, multiplying by `bins` is exact, so that equals (v - low) / width with
    width = (high - low) / bins, also exact while it stays a normal float: one division instead of two.
    Other bin counts get (bins, high - low) and both operations.
    """
    if values.numel() < SMALL_INPUT:  # below this torch.histc's loop costs less than launching four kernels
        return None
    if values.dtype != torch.float32 or values.device.type != "cpu" or not low < high or bins >= 2**22:
        return None
    if _float32(low) != low or _float32(high) != high:  # histc's edges are float32: low, high must be too
        return None
    span = _float32_difference(high, low)
    if not span * bins < _FLOAT32_MAX / 2:  # (v - low) * bins must not overflow
        return None
    if bins & (bins - 1) == 0 and span / bins >= _SMALLEST_NORMAL:
        return span / bins
    return (bins, span)


def _count_chunk(chunk: torch.Tensor, bins: int, low: float, divisor) -> torch.Tensor:
    """Counts of each bin index 0..bins (bins: values equal to high) in a 1-d float32 chunk."""
    scaled, index = _buffers(chunk.numel())
    torch.sub(chunk, low, out=scaled)
    if isinstance(divisor, tuple):
        scaled.mul_(divisor[0]).div_(divisor[1])
    else:
        scaled.div_(divisor)
    index.copy_(scaled)  # float -> int truncates toward zero, as histc's cast does
    return torch.bincount(index, minlength=bins + 1)


def _buffers(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reused per-thread float32 and int32 scratch of `size` elements (fresh large tensors page-fault)."""
    scaled = getattr(_scratch, "scaled", None)
    if scaled is None or scaled.numel() < size:
        with torch.inference_mode(False):  # an inference tensor could not be written outside inference mode later
            _scratch.scaled = torch.empty(size, dtype=torch.float32)
            _scratch.index = torch.empty(size, dtype=torch.int32)
    return _scratch.scaled[:size], _scratch.index[:size]


def _flat(values: torch.Tensor) -> torch.Tensor:
    """values as one dimension, a view whenever its memory is dense (channels_last included)."""
    if values.is_contiguous():
        return values.view(-1)
    order = sorted(range(values.dim()), key=lambda dim: -values.stride(dim))
    return values.permute(order).reshape(-1)


def _float32(value: float) -> float:
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return float("nan")


def _float32_difference(high: float, low: float) -> float:
    """high - low rounded once to float32, as histc's kernel computes it.

    Rounding the double difference to float32 rounds only once when the double difference is exact
    (always so for float32 inputs within 2**29 of each other in scale); Knuth's two-sum error term
    says whether it is. Otherwise float32 tensors do the subtraction.
    """
    difference = high - low
    if _two_sum_error(high, -low, difference) == 0.0:
        return _float32(difference)
    return float(torch.tensor(high, dtype=torch.float32) - torch.tensor(low, dtype=torch.float32))


def _two_sum_error(a: float, b: float, total: float) -> float:
    """The rounding error of total = a + b in double precision (Knuth's TwoSum), exactly."""
    b_part = total - a
    a_part = total - b_part
    return (a - a_part) + (b - b_part)


def rebin(
    histogram: torch.Tensor, old_min: torch.Tensor, old_max: torch.Tensor, new_min: float, new_max: float, rate: int
) -> torch.Tensor:
    """The histogram over [old_min, old_max] moved onto as many equal bins over [new_min, new_max] (wider).

    As PyTorch AO: each old bin becomes `rate` sub-bins of 1/rate of its count, and each sub-bin goes
    whole to the new bin that holds its centre (clamped into range against rounding).
    """
    bins = histogram.numel()
    fine = histogram.repeat_interleave(rate) / rate
    fine_width = (old_max - old_min) / (bins * rate)
    centres = torch.linspace(old_min, old_max, bins * rate + 1, device=old_min.device)[:-1]
    centres = centres.to(histogram.device) + 0.5 * fine_width
    edges = torch.linspace(new_min, new_max, bins + 1, device=old_min.device).to(histogram.device)
    target = _bins_of_sorted(centres, edges)
    if target is None:
        target = torch.bucketize(centres, edges, right=True) - 1
    target.clamp_(0, bins - 1)
    return torch.bincount(target, weights=fine, minlength=bins)


def _bins_of_sorted(centres: torch.Tensor, edges: torch.Tensor):
    """bucketize(centres, edges, right=True) - 1, i.e. (number of edges <= each centre) - 1, or None.

    When both are sorted, the edges <= centres[m] are those whose first centre not below them comes at
    or before m; counting them is a cumulative sum over one searchsorted of the few edges. Unsorted
    input (linspace can step back by an ulp) gets None: bucketize's answer then depends on its search path.
    """
    if not (_is_sorted(centres) and _is_sorted(edges)):
        return None
    first_at_or_above = torch.searchsorted(centres, edges, side="left")
    edges_passed = torch.bincount(first_at_or_above, minlength=centres.numel() + 1)[: centres.numel()]
    return torch.cumsum(edges_passed, dim=0) - 1


def _is_sorted(values: torch.Tensor) -> bool:
    """Non-decreasing and free of NaN (a NaN step makes the minimum NaN, which is not >= 0)."""
    return values.numel() < 2 or float(torch.diff(values).min()) >= 0.0
