"""The HistogramObserver's range search, vectorised: the same answer as PyTorch AO's, without its loops.

PyTorch AO narrows the histogram's range [start_bin, end_bin] step by step: each step moves a lower
quantile alpha up or an upper quantile beta down by 1e-5, whichever side gains more bins; every
change of range is scored by the L2 error of quantizing the histogram to that range, and the
search stops at the first range that scores worse than the one before it. That is up to 100,000
Python iterations and one tensor computation per candidate range.

Here the walk is laid out a segment (thousands of steps) at a time, without a Python loop per step:
  * the quantile thresholds for every alpha and beta step become bin indices A[i], B[j] with one
    `searchsorted` each;
  * the choice at each step (move alpha iff A[i+1]-A[i] > B[j]-B[j+1]) is a merge of the two
    difference sequences by their heads, which equals a sorted merge of their running minima, so the
    walk's position after every step comes from one more `searchsorted`;
  * the walk ends when alpha >= beta, or when the two ends meet (after which nothing changes);
  * the candidate ranges are scored in batches, each row with the very float32 operations PyTorch AO
    performs for one candidate, so the first "worse" candidate is found at the same place.

    >>> import torch
    >>> histogram = torch.zeros(2048); histogram[100:1900] = 1.0
    >>> search_range(histogram, torch.tensor(0.0), torch.tensor(2048.0), dst_nbins=256)
    (tensor(100.), tensor(1899.))
"""
from __future__ import annotations

import functools
import itertools
import operator
from typing import Iterator

import torch

_STEP = 1e-5  # PyTorch AO's quantile granularity
# Every tensor op here stays under ATen's parallel grain (32768 elements), so it runs on the calling
# thread: the ops are small, and on a busy machine a parallel region can stall for a whole time slice.
_OP_ELEMENTS = 16384
_FIRST_SEGMENT = 2048  # walk steps laid out first (each moves a quantile by 1e-5); most searches stop here
_SEGMENT = 16384


@functools.lru_cache(maxsize=1)
def _quantile_steps() -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_k and beta_k after k steps, accumulated in float64 one addition at a time as PyTorch AO does.

    (accumulate adds sequentially, like PyTorch AO's loop, so the rounding errors are the same.)
    """
    count = int(1.0 / _STEP) + 16  # alpha meets beta within 1 / step steps in all, even if one side takes all
    alphas = itertools.accumulate(itertools.repeat(_STEP, count), operator.add, initial=0.0)
    betas = itertools.accumulate(itertools.repeat(_STEP, count), operator.sub, initial=1.0)
    return torch.tensor(list(alphas), dtype=torch.float64), torch.tensor(list(betas), dtype=torch.float64)


def search_range(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped (min, max) PyTorch AO's HistogramObserver quantizes to, for a histogram over [min_val, max_val].

    `dst_nbins` is the number of quantized levels the error is measured against (2**bits of the dtype).
    """
    bins = histogram.numel()
    start_bin, end_bin = _best_range(histogram, min_val, max_val, dst_nbins)
    bin_width = (max_val - min_val) / bins
    return min_val + bin_width * start_bin, min_val + bin_width * (end_bin + 1)


def _best_range(histogram, min_val, max_val, dst_nbins) -> tuple[int, int]:
    """PyTorch AO's answer: the last candidate range before the first that scores worse than its predecessor."""
    bins = histogram.numel()
    best = (0, bins - 1)  # the full range, where the walk starts
    previous_error = torch.tensor([float("inf")], dtype=torch.float64)
    rows = max(1, _OP_ELEMENTS // bins)
    for starts, ends in _candidate_segments(histogram):
        for first in range(0, starts.numel(), rows):
            batch_starts, batch_ends = starts[first : first + rows], ends[first : first + rows]
            errors = quantization_errors(histogram, min_val, max_val, dst_nbins, batch_starts, batch_ends)
            worse = _first_true(errors > torch.cat([previous_error, errors[:-1]]))
            if worse < errors.numel():
                return (int(batch_starts[worse - 1]), int(batch_ends[worse - 1])) if worse else best
            best, previous_error = (int(batch_starts[-1]), int(batch_ends[-1])), errors[-1:]
    return best


def _candidate_segments(histogram: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (start_bin, end_bin) ranges PyTorch AO's walk scores, in order, a segment of the walk at a time.

    The walk is laid out in segments (short at first: the search usually stops early); a walk from
    any state depends only on what lies ahead, so each segment is merged on its own.
    """
    bins = histogram.numel()
    alphas, betas = _quantile_steps()
    cumulative = torch.cumsum(histogram, dim=0).cpu()
    total = float(torch.sum(histogram))
    i0 = j0 = 0  # alpha and beta steps taken before this segment
    state = (torch.tensor([0]), torch.tensor([bins - 1]))
    steps = _FIRST_SEGMENT
    while True:
        steps = min(steps, alphas.numel() - 1 - max(i0, j0))
        if steps <= 0:
            raise AssertionError("histogram range search: the walk outran its precomputed quantile steps")
        # PyTorch AO compares float32 cumulative counts with a Python float, which torch rounds to float32.
        lower = torch.searchsorted(cumulative, (alphas[i0 : i0 + steps + 1] * total).to(torch.float32), side="left")
        upper = torch.searchsorted(cumulative, (betas[j0 : j0 + steps + 1] * total).to(torch.float32), side="right")
        upper -= 1
        lower[0], upper[0] = state  # the walk starts from the full range whatever the thresholds say
        alpha_steps, beta_steps = _merge_walk(lower[1:] - lower[:-1], upper[:-1] - upper[1:])
        running = _at(alphas, i0 + alpha_steps[:steps]) < _at(betas, j0 + beta_steps[:steps])
        starts, ends, complete = _segment_ranges(lower, upper, alpha_steps, beta_steps, running)
        changed = (starts[1:] != starts[:-1]) | (ends[1:] != ends[:-1])
        if bool(changed.any()):
            yield starts[1:][changed], ends[1:][changed]
        if complete:
            return
        i0, j0 = i0 + int(alpha_steps[steps]), j0 + int(beta_steps[steps])
        state = (starts[-1:], ends[-1:])
        steps = _SEGMENT


def _segment_ranges(lower, upper, alpha_steps, beta_steps, running) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The ranges after each step of one segment (its start state first), and whether the walk ended in it.

    lower[i] / upper[j]: the start / end bin after i alpha / j beta steps of the segment; running[t]:
    whether PyTorch AO's loop condition (alpha < beta) holds before step t + 1.
    """
    steps = running.numel()
    prev_i, prev_j = alpha_steps[:steps], beta_steps[:steps]  # state before step t = 1 .. steps
    start_now, end_now = _at(lower, prev_i), _at(upper, prev_j)
    crossing = (_at(lower, prev_i + 1) > end_now) | (_at(upper, prev_j + 1) < start_now)
    last_step = _first_true(running.logical_not())  # steps 1..last_step run
    first_crossing = _first_true(crossing[:last_step]) + 1  # the step that makes the ends meet, if any
    unclamped = min(last_step, first_crossing - 1)
    starts, ends = _at(lower, alpha_steps[: unclamped + 1]), _at(upper, beta_steps[: unclamped + 1])
    if first_crossing <= last_step:
        # Once the next quantile bin lies beyond the other end, the walk collapses the range to one bin.
        i, j = int(prev_i[first_crossing - 1]), int(prev_j[first_crossing - 1])
        moves_alpha = bool(lower[i + 1] > upper[j]) and bool(upper[j + 1] > lower[i])
        meet = (upper[j] if moves_alpha else lower[i]).reshape(1)
        starts, ends = torch.cat([starts, meet]), torch.cat([ends, meet])
    return starts, ends, last_step < steps or first_crossing <= last_step


def _merge_walk(lower_gain: torch.Tensor, upper_gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many alpha and beta steps the walk has taken after t = 0, 1, ... steps.

    Each step moves alpha iff the next alpha step gains strictly more bins than the next beta step:
    a merge of the two gain sequences taking the larger head, ties to beta. Such a merge equals the
    stable merge of the sequences' running minima (a smaller gain always follows its run's head), and
    running minima are sorted, so each alpha step's place in the merge is one searchsorted away.
    """
    lower_key = torch.cummin(lower_gain, dim=0).values
    upper_key = torch.cummin(upper_gain, dim=0).values
    count = lower_key.numel()
    # Beta steps before alpha step i: those whose key is >= its key (ties go to beta).
    betas_before = torch.searchsorted(-upper_key, -lower_key, right=True)
    position = torch.arange(count) + betas_before  # 0-based place of alpha step i in the merged walk
    steps = torch.arange(count + 1)
    alpha_steps = torch.searchsorted(position, steps, side="left")
    return alpha_steps, steps - alpha_steps


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.index_select(values, 0, index)  # much faster than values[index] for long index tensors


def _first_true(mask: torch.Tensor) -> int:
    """Index of the first True in `mask`, or len(mask) when there is none."""
    if mask.numel() == 0:
        return 0
    first = int(torch.argmax(mask.to(torch.uint8)))  # argmax returns the first of equal maxima
    return first if bool(mask[first]) else mask.numel()


def quantization_errors(histogram, min_val, max_val, dst_nbins, starts, ends) -> torch.Tensor:
    """L2 error of quantizing the histogram to each range [starts[k], ends[k]] (float64, one per range).

    Each row repeats, element for element, the float32 operations PyTorch AO uses for one range, so the
    values are bit-identical to its; only the batching is new.
    """
    bins = histogram.numel()
    device = histogram.device
    bin_width = (max_val.item() - min_val.item()) / bins  # a Python float in PyTorch AO too
    starts, ends = starts.to(device)[:, None], ends.to(device)[:, None]
    dst_width64 = bin_width * (ends - starts + 1).to(torch.float64) / dst_nbins
    dst_width = dst_width64.to(torch.float32)
    half64 = dst_width64 / 2
    half, minus_half = half64.to(torch.float32), (-half64).to(torch.float32)

    src_begin = (torch.arange(bins, device=device)[None, :] - starts) * bin_width
    src_end = src_begin + bin_width
    dst_of_begin = torch.clamp(torch.div(src_begin, dst_width, rounding_mode="floor"), 0, dst_nbins - 1)
    dst_of_end = torch.clamp(torch.div(src_end, dst_width, rounding_mode="floor"), 0, dst_nbins - 1)
    density = histogram / bin_width

    # Three parts per source bin: its piece in the first destination bin it overlaps, the whole
    # destination bins it covers, and its piece in the last one.
    first = _l2_norm(src_begin - (dst_of_begin + 0.5) * dst_width, half.expand(-1, bins), density)
    middle = (dst_of_end - dst_of_begin - 1) * _l2_norm(minus_half, half, density)
    last = _l2_norm(minus_half, src_end - (dst_of_end * dst_width + half), density)
    errors = (first + middle + last).sum(dim=1).to(torch.float64).cpu()
    return torch.where(dst_width64[:, 0].cpu() == 0.0, 0.0, errors)


def _l2_norm(delta_begin: torch.Tensor, delta_end: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """density * integral of x^2 from delta_begin to delta_end (values spread uniformly in a bin)."""
    return density * ((delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3)
