"""Talking to the other ranks of a torch.distributed process group: who this process is, its share of the data,
and failures: a rank that raises tells the others at the next exchange, and every rank raises its error.

    >>> shard(list(range(5)), rank=1, world_size=2)
    [3, 4]
    >>> rank_and_world()  # no process group: a world of one
    (0, 1)
"""
from __future__ import annotations

import traceback
from typing import Any, Callable, Optional, Sequence

import torch.distributed as dist


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


def gather_results(compute: Callable[[], dict], what: str) -> dict:
    """Every rank's ``compute()`` dict merged in rank order (keys must not clash); a failure anywhere raises
    DistributedError on every rank."""
    result, error = guarded(compute)
    gathered = all_gather_object({"error": error[:2] if error else None, "result": result})
    raise_failures(gathered, what, error)
    merged = {}
    for part in gathered:
        merged.update(part["result"])
    return merged


def guarded(function: Callable, *args: Any) -> tuple[Any, Optional[tuple]]:
    """function(*args), or (None, the error) so the other ranks hear of it instead of waiting forever."""
    try:
        return function(*args), None
    except Exception as error:  # reported to every rank, then raised on this one too (raise_failures)
        return None, (f"{type(error).__name__}: {error}", "".join(traceback.format_exception(error)), error)


def raise_failures(statuses: list, what: str, own_error: Optional[tuple] = None) -> None:
    failed = [(rank, s["error"]) for rank, s in enumerate(statuses) if s["error"]]
    if not failed:
        return
    rank, (message, trace) = failed[0]
    others = f" (ranks {', '.join(str(r) for r, _ in failed[1:])} failed too)" if failed[1:] else ""
    cause = own_error[2] if own_error else None
    raise DistributedError(f"{what}: rank {rank} of {len(statuses)} failed: {message}{others}\n"
                           f"rank {rank}'s traceback:\n{trace}") from cause


def all_gather_object(value: Any) -> list:
    if not process_group_ready():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
