"""``fxq.calibrate``: run calibration batches through a prepared model, with a progress bar and a report of
the observers that saw no data (convert_fx leaves the ops they watch in float); on several processes, each
calibrates its share and the observers merge (fxq.debug.distributed)."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from torch import fx

from fxq.debug.distributed import calibrate_on_ranks
from fxq.debug.ranks import process_group_ready, rank_and_world
from fxq.observers import ObserverBase

_INT8 = (torch.quint8, torch.qint8)  # float16 and dynamic observers need no calibration data


@dataclass
class CalibrationSummary:
    """What calibration did: ``batches`` run (on all ranks), ``without_data``: observer name -> the node it watches;
    with ``distributed``, ``ranks``, ``merge_seconds`` (this rank's time merging) and ``wait_seconds`` (its time
    in the status exchanges, mostly waiting for slower ranks)."""

    batches: int = 0
    without_data: dict = field(default_factory=dict)
    ranks: int = 1
    merge_seconds: float = 0.0
    wait_seconds: float = 0.0

    def __str__(self) -> str:
        if not self.without_data:
            return f"calibrated on {self.batches} batches; every observer saw data"
        listed = ", ".join(f"{name} (on {node})" for name, node in sorted(self.without_data.items()))
        return (f"calibrated on {self.batches} batches; {len(self.without_data)} observers saw no data and "
                f"their ops will stay float: {listed}")

    def __repr__(self) -> str:
        return f"CalibrationSummary(batches={self.batches}, without_data={sorted(self.without_data)})"


def calibrate(prepared: fx.GraphModule, batches: Iterable[Any], progress: bool = True,
              distributed: Optional[bool] = None, exact_histograms: bool = True) -> CalibrationSummary:
    """Run ``prepared`` (from prepare_fx) on every batch without gradients; return a summary.

    A batch is a tensor or a tuple of the forward's arguments. ``progress`` shows a tqdm bar on stderr.
    Observers that saw no data are listed in the summary and in a warning.

    ``distributed`` (default: True when torch.distributed has a process group): ``batches`` are this rank's share
    (``fxq.debug.distributed.shard`` cuts one), and the observers merge across ranks so every rank ends with the
    same state: min/max exactly, moving averages as one process seeing the shares in rank order, histograms as
    one process fed all values at once (a second pass over the batches counts them into common bins). Call it on
    every rank. Without a process group, ``distributed=True`` runs those passes as a world of one.
    ``exact_histograms=False`` skips the second pass: each rank counts its histograms as one process would and the
    merge re-binning them onto the common range is approximate, as one process's one-pass histograms are (ResNet-50
    on 2 ranks: scales within 0.62% of the exact ones, the same as one process; 0.58x one process's time, where the
    exact merge takes 1.17x: tools/bench_distributed.py).

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 4),))
    >>> fxq.calibrate(prepared, [torch.randn(8, 4)] * 3, progress=False)
    CalibrationSummary(batches=3, without_data=[])
    """
    if getattr(prepared, "_fxq_state", None) is None:
        raise TypeError(f"fxq.calibrate expects the model returned by fxq.prepare_fx, got "
                        f"{type(prepared).__name__}; call fxq.prepare_fx(model, qconfig_mapping, example_inputs)")
    summary = CalibrationSummary()
    if distributed is None:
        distributed = process_group_ready()
    if distributed:
        rank, summary.ranks = rank_and_world()
        run = functools.partial(_run_batches, prepared, progress=progress and rank == 0)
        merged = calibrate_on_ranks(prepared, list(batches), run, exact_histograms)
        summary.batches, summary.merge_seconds, summary.wait_seconds = (merged["batches"], merged["merge_seconds"],
                                                                        merged["wait_seconds"])
    else:
        summary.batches = _run_batches(prepared, batches, progress)
    summary.without_data = _observers_without_data(prepared)
    if summary.without_data:
        warnings.warn(f"fxq.calibrate: {summary}", stacklevel=2)
    return summary


def _run_batches(prepared: fx.GraphModule, batches: Iterable[Any], progress: bool) -> int:
    from tqdm.auto import tqdm  # imported here: only calibration needs it

    count = 0
    total = len(batches) if hasattr(batches, "__len__") else None
    with torch.no_grad():
        for batch in tqdm(batches, total=total, desc="calibrating", unit="batch", disable=not progress):
            prepared(*(batch if isinstance(batch, tuple) else (batch,)))
            count += 1
    return count


def _observers_without_data(prepared: fx.GraphModule) -> dict:
    modules = dict(prepared.named_modules())
    found = {}
    for node in prepared.graph.nodes:
        observer = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(observer, ObserverBase) and observer.dtype in _INT8 and not observer.has_data():
            found[node.target] = node.args[0].name if node.args else "?"
    return found
