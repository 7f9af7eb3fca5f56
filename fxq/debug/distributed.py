"""Calibration and sensitivity over torch.distributed ranks: each rank works on its share, the results merge exactly.

The protocol (what each observer gives and takes: fxq.observers.merge):

1. every rank runs its batches (histograms record only their range);
2. one ``all_gather_object`` of each rank's status: its error if it raised (then every rank raises it), its batch
   count and the sizes of what it will send, so uneven and empty shards pad to one shape;
3. one ``all_reduce(MIN)`` of every min and minus every max, one ``all_gather`` of every moving-average record, one
   ``all_gather_object`` of user observers' state_dicts (each only when some observer needs it);
4. if a histogram needs it, a second pass counts into the merged ranges; a status exchange; one ``all_reduce(SUM)``.

Without a process group it runs as a world of one: the same passes, so one process gets what N ranks get.

    >>> import torch
    >>> shard(list(range(5)), rank=1, world_size=2)
    [3, 4]
"""
from __future__ import annotations

import time
import traceback
import zlib
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from fxq.equalization.merge import ChannelRangeMerge
from fxq.equalization.observers import ChannelRangeObserver
from fxq.observers.merge import BUILT_IN, Merger, UserMerge, observer_mergers

MERGE_TABLE = BUILT_IN + ((ChannelRangeObserver, ChannelRangeMerge),)


class DistributedError(RuntimeError):
    """A rank failed; every rank raises this, naming the failing rank and its error."""


def process_group_ready() -> bool:
    """True when torch.distributed has an initialised default process group (fxq.calibrate then merges)."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if process_group_ready() else (0, 1)


def shard(batches: Sequence[Any], rank: Optional[int] = None, world_size: Optional[int] = None) -> list:
    """This rank's contiguous share of ``batches``: shares differ by at most one batch, earlier ranks get more.
    Contiguous, so rank order is the original order (what moving-average observers replay)."""
    default_rank, default_world = rank_and_world()
    rank = default_rank if rank is None else rank
    world_size = default_world if world_size is None else world_size
    size, extra = divmod(len(batches), world_size)
    start = rank * size + min(rank, extra)
    return list(batches[start:start + size + (rank < extra)])


def calibrate_on_ranks(prepared: nn.Module, batches: list, run_batches: Callable[[list], int]) -> tuple[int, float]:
    """Run ``run_batches(batches)`` on this rank, merge the observers across ranks; (batches on all ranks, seconds
    spent merging). Every rank ends with identical observer state."""
    mergers = observer_mergers(prepared, MERGE_TABLE)
    signature = zlib.crc32("|".join(f"{m.name}:{type(m).__name__}" for m in mergers).encode())
    merge_seconds = 0.0
    try:
        for merger in mergers:
            merger.begin_first_pass()
        count, error = _guarded(run_batches, batches)
        for merger in mergers:
            merger.end_first_pass()
        start = time.perf_counter()
        statuses = _exchange_status(error, count, signature, mergers)
        _merge_ranges(mergers, statuses)
        _merge_records(mergers, statuses)
        _merge_user_states(mergers)
        merge_seconds += time.perf_counter() - start
        if any(merger.second_pass for merger in mergers):
            for merger in mergers:
                merger.begin_second_pass()
            _, error = _guarded(run_batches, batches)
            start = time.perf_counter()
            _exchange_status(error, count, signature, [])
            _merge_counts(mergers)
            merge_seconds += time.perf_counter() - start
    finally:
        for merger in mergers:
            merger.end()
    return sum(status["batches"] for status in statuses), merge_seconds


def gather_results(compute: Callable[[], dict], what: str) -> dict:
    """Every rank's ``compute()`` dict merged in rank order (keys must not clash); a failure anywhere raises
    DistributedError on every rank."""
    result, error = _guarded(compute)
    gathered = _all_gather_object({"error": error, "result": result})
    _raise_failures(gathered, what)
    merged = {}
    for part in gathered:
        merged.update(part["result"])
    return merged


def _guarded(function: Callable, *args: Any) -> tuple[Any, Optional[tuple]]:
    """function(*args), or (None, the error) so the other ranks hear of it instead of waiting forever."""
    try:
        return function(*args), None
    except Exception as error:  # reported to every rank, then raised on this one too (_raise_failures)
        return None, (f"{type(error).__name__}: {error}", "".join(traceback.format_exception(error)), error)


def _exchange_status(error: Optional[tuple], count: Optional[int], signature: int, mergers: list[Merger]) -> list:
    ranges = [_numel(merger.range_part()) for merger in mergers]
    records = [_numel(merger.record_part()) for merger in mergers]
    status = {"error": error[:2] if error else None, "batches": count or 0, "signature": signature,
              "ranges": ranges, "records": records}
    statuses = _all_gather_object(status)
    _raise_failures(statuses, "fxq.calibrate", error)
    if len({s["signature"] for s in statuses}) > 1:
        raise DistributedError("fxq.calibrate: the ranks hold different prepared models (their observers differ); "
                               "prepare the same model with the same qconfig on every rank")
    return statuses


def _numel(part: Any) -> int:
    return 0 if part is None else (part[0].numel() if isinstance(part, tuple) else part.numel())


def _raise_failures(statuses: list, what: str, own_error: Optional[tuple] = None) -> None:
    failed = [(rank, s["error"]) for rank, s in enumerate(statuses) if s["error"]]
    if not failed:
        return
    rank, (message, trace) = failed[0]
    others = f" (ranks {', '.join(str(r) for r, _ in failed[1:])} failed too)" if failed[1:] else ""
    cause = own_error[2] if own_error else None
    raise DistributedError(f"{what}: rank {rank} of {len(statuses)} failed: {message}{others}\n"
                           f"rank {rank}'s traceback:\n{trace}") from cause


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
    if process_group_ready():
        dist.all_reduce(bucket, op=dist.ReduceOp.MIN)
    merged_lows, merged_highs = bucket.split(sum(sizes))[0].split(sizes), (-bucket[sum(sizes):]).split(sizes)
    for (_, merger, _), low, high in zip(parts, merged_lows, merged_highs):
        merger.set_range(low, high)


def _agreed_size(merger: Merger, sizes: list[int]) -> int:
    seen = {size for size in sizes if size}
    if len(seen) > 1:
        raise DistributedError(f"fxq.calibrate: observer '{merger.name}' saw {sorted(seen)} channels on different "
                               f"ranks (per rank: {sizes}); every rank must feed it tensors of the same channel count")
    return seen.pop() if seen else 0


def _merge_records(mergers: list[Merger], statuses: list) -> None:
    recording = [(i, merger) for i, merger in enumerate(mergers) if merger.record_part() is not None]
    if not recording:
        return
    lengths = [[s["records"][i] for i, _ in recording] for s in statuses]  # [rank][merger]
    local = torch.cat([merger.record_part() for _, merger in recording])
    longest = max(sum(row) for row in lengths)
    padded = torch.cat([local, torch.zeros(longest - local.numel(), dtype=torch.float64)])
    gathered = [padded]
    if process_group_ready():
        gathered = [torch.empty_like(padded) for _ in statuses]
        dist.all_gather(gathered, padded)
    per_rank = [list(part[:sum(row)].split(row)) for part, row in zip(gathered, lengths)]
    for j, (_, merger) in enumerate(recording):
        merger.set_records([parts[j] for parts in per_rank])


def _merge_user_states(mergers: list[Merger]) -> None:
    users = [merger for merger in mergers if isinstance(merger, UserMerge)]
    if users:
        gathered = _all_gather_object([merger.state_part() for merger in users])
        for j, merger in enumerate(users):
            merger.set_states([states[j] for states in gathered])


def _merge_counts(mergers: list[Merger]) -> None:
    parts = [(merger, merger.count_part()) for merger in mergers]
    parts = [(merger, part) for merger, part in parts if part is not None]
    if not parts:
        return
    bucket = torch.cat([part for _, part in parts])  # integer counts in float64: the sum is exact
    if process_group_ready():
        dist.all_reduce(bucket, op=dist.ReduceOp.SUM)
    for (merger, _), total in zip(parts, bucket.split([part.numel() for _, part in parts])):
        merger.set_counts(total)


def _all_gather_object(value: Any) -> list:
    if not process_group_ready():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
