"""Calibration and sensitivity over torch.distributed ranks: each rank works on its share, the results merge exactly.

The protocol (what each observer gives and takes: fxq.observers.merge):

1. every rank runs its batches (histograms record only their range);
2. one ``all_gather_object`` of each rank's status: its error if it raised (then every rank raises it), its batch
   count and the sizes of what it will send, so uneven and empty shards pad to one shape;
3. one ``all_reduce(MIN)`` of every min and minus every max, one ``all_gather`` of every moving-average record, one
   ``all_gather_object`` of user observers' state_dicts (each only when some observer needs it);
4. if a histogram needs it, a second pass counts into the merged ranges, and a status exchange;
5. one ``all_reduce(SUM)`` of every histogram (counted in the second pass, or in the only one when
   ``exact_histograms=False``: fxq.observers.merge_one_pass).

Without a process group it runs as a world of one: the same passes, so one process gets what N ranks get.

    >>> import torch
    >>> from fxq.observers import HistogramObserver
    >>> histogram, batches = HistogramObserver(bins=4), [torch.tensor([0.0, 1.0]), torch.tensor([3.0])]
    >>> calibrate_on_ranks(histogram, batches, lambda shard: len([histogram(x) for x in shard]))["batches"]
    2
    >>> histogram.histogram.tolist()  # the bins of [0, 3] from the start: no re-binning when 3 arrives
    [1.0, 1.0, 0.0, 1.0]
"""
from __future__ import annotations

import contextlib
import time
import zlib
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from fxq.debug.ranks import DistributedError, all_gather_object, guarded, process_group_ready, raise_failures
from fxq.equalization.merge import ChannelRangeMerge
from fxq.equalization.observers import ChannelRangeObserver
from fxq.observers.merge import Merger
from fxq.observers.merge_table import BUILT_IN, ONE_PASS, UserMerge, observer_mergers

MERGE_TABLE = BUILT_IN + ((ChannelRangeObserver, ChannelRangeMerge),)
ONE_PASS_TABLE = ONE_PASS + ((ChannelRangeObserver, ChannelRangeMerge),)


def calibrate_on_ranks(prepared: nn.Module, batches: list, run_batches: Callable[[list], int],
                       exact_histograms: bool = True) -> dict:
    """Run ``run_batches(batches)`` on this rank, merge the observers across ranks; every rank ends with identical
    observer state. Returns ``batches`` (on all ranks), ``merge_seconds`` (this rank's time in the merges) and
    ``wait_seconds`` (its time in the status exchanges: mostly waiting for slower ranks). ``exact_histograms=False``
    merges histograms after one pass, approximately (fxq.observers.merge_one_pass)."""
    mergers = observer_mergers(prepared, MERGE_TABLE if exact_histograms else ONE_PASS_TABLE)
    signature = zlib.crc32("|".join(f"{m.name}:{type(m).__name__}" for m in mergers).encode())
    clock = {"merge_seconds": 0.0, "wait_seconds": 0.0}
    try:
        for merger in mergers:
            merger.begin_first_pass()
        count, error = guarded(run_batches, batches)
        for merger in mergers:
            merger.end_first_pass()
        records = [(merger, merger.record_part()) for merger in mergers]
        records = [(merger, part) for merger, part in records if part is not None]
        with _timed(clock, "wait_seconds"):
            statuses = _exchange_status(error, count, signature, mergers, records)
        with _timed(clock, "merge_seconds"):
            _merge_ranges(mergers, statuses)
            _merge_records(records, statuses)
            _merge_user_states(mergers)
        if any(merger.second_pass for merger in mergers):
            for merger in mergers:
                merger.begin_second_pass()
            _, error = guarded(run_batches, batches)
            with _timed(clock, "wait_seconds"):
                _exchange_status(error, count, signature, [], [])
        with _timed(clock, "merge_seconds"):
            _merge_counts(mergers)  # after the second pass, or after the only one (one-pass histograms)
    finally:
        for merger in mergers:
            merger.end()
    return {"batches": sum(status["batches"] for status in statuses), **clock}


@contextlib.contextmanager
def _timed(clock: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        clock[key] += time.perf_counter() - start


def _exchange_status(error: Optional[tuple], count: Optional[int], signature: int, mergers: list[Merger],
                     records: list) -> list:
    status = {"error": error[:2] if error else None, "batches": count or 0, "signature": signature,
              "ranges": [_numel(merger.range_part()) for merger in mergers],
              "records": [part.numel() for _, part in records]}
    statuses = all_gather_object(status)
    raise_failures(statuses, "fxq.calibrate", error)
    if len({s["signature"] for s in statuses}) > 1:
        raise DistributedError("fxq.calibrate: the ranks hold different prepared models (their observers differ); "
                               "prepare the same model with the same qconfig on every rank")
    return statuses


def _numel(part: Any) -> int:
    return 0 if part is None else (part[0].numel() if isinstance(part, tuple) else part.numel())


def _merge_ranges(mergers: list[Merger], statuses: list) -> None:
    parts = [(i, merger, merger.range_part()) for i, merger in enumerate(mergers)]
    parts = [(i, merger, part) for i, merger, part in parts if part is not None]
    if not parts:
        return
    sizes = [_agreed_size(merger, [s["ranges"][i] for s in statuses]) for i, merger, _ in parts]
    lows = [low if low.numel() else torch.full((size,), float("inf"), dtype=torch.float64)
            for (_, _, (low, _)), size in zip(parts, sizes)]
    highs = [high if high.numel() else torch.full((size,), float("-inf"), dtype=torch.float64)
             for (_, _, (_, high)), size in zip(parts, sizes)]
    bucket = torch.cat(lows + [-high for high in highs])  # one MIN reduction serves both: max(x) = -min(-x)
    bucket = _all_reduce(bucket, dist.ReduceOp.MIN)
    merged_lows, merged_highs = bucket.split(sum(sizes))[0].split(sizes), (-bucket[sum(sizes):]).split(sizes)
    for (_, merger, _), low, high in zip(parts, merged_lows, merged_highs):
        merger.set_range(low, high)


def _agreed_size(merger: Merger, sizes: list[int]) -> int:
    seen = {size for size in sizes if size}
    if len(seen) > 1:
        raise DistributedError(f"fxq.calibrate: observer '{merger.name}' saw {sorted(seen)} channels on different "
                               f"ranks (per rank: {sizes}); every rank must feed it tensors of the same channel count")
    return seen.pop() if seen else 0


def _merge_records(records: list[tuple[Merger, torch.Tensor]], statuses: list) -> None:
    """One all_gather of every (merger, this rank's records) part, padded to the longest rank's total."""
    if not records:
        return
    lengths = [status["records"] for status in statuses]  # [rank][merger]
    local = torch.cat([part for _, part in records])
    longest = max(sum(row) for row in lengths)
    padded = torch.cat([local, torch.zeros(longest - local.numel(), dtype=torch.float64)])
    gathered = [padded]
    if process_group_ready():
        device = _collective_device()
        gathered = [torch.empty_like(padded, device=device) for _ in statuses]
        dist.all_gather(gathered, padded.to(device))
        gathered = [part.cpu() for part in gathered]
    per_rank = [list(part[:sum(row)].split(row)) for part, row in zip(gathered, lengths)]
    for j, (merger, _) in enumerate(records):
        merger.set_records([parts[j] for parts in per_rank])


def _merge_user_states(mergers: list[Merger]) -> None:
    users = [merger for merger in mergers if isinstance(merger, UserMerge)]
    if users:
        gathered = all_gather_object([merger.state_part() for merger in users])
        for j, merger in enumerate(users):
            merger.set_states([states[j] for states in gathered])


def _merge_counts(mergers: list[Merger]) -> None:
    parts = [(merger, merger.count_part()) for merger in mergers]
    parts = [(merger, part) for merger, part in parts if part is not None]
    if not parts:
        return
    bucket = torch.cat([part for _, part in parts])  # integer counts in float64: the sum is exact
    bucket = _all_reduce(bucket, dist.ReduceOp.SUM)
    for (merger, _), total in zip(parts, bucket.split([part.numel() for _, part in parts])):
        merger.set_counts(total)


def _all_reduce(bucket: torch.Tensor, op: Any) -> torch.Tensor:
    if not process_group_ready():
        return bucket
    moved = bucket.to(_collective_device())
    dist.all_reduce(moved, op=op)
    return moved.cpu()


def _collective_device() -> torch.device:
    """nccl reduces only CUDA tensors; gloo (and mpi) take CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
