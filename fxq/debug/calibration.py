"""``fxq.calibrate``: run calibration batches through a prepared model, with a progress bar and a report of
the observers that saw no data (convert_fx leaves the ops they watch in float)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import fx

from fxq.observers import ObserverBase

_INT8 = (torch.quint8, torch.qint8)  # float16 and dynamic observers need no calibration data


@dataclass
class CalibrationSummary:
    """What calibration did: ``batches`` run, and ``without_data``: observer name -> the node it watches."""

    batches: int = 0
    without_data: dict = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.without_data:
            return f"calibrated on {self.batches} batches; every observer saw data"
        listed = ", ".join(f"{name} (on {node})" for name, node in sorted(self.without_data.items()))
        return (f"calibrated on {self.batches} batches; {len(self.without_data)} observers saw no data and "
                f"their ops will stay float: {listed}")

    def __repr__(self) -> str:
        return f"CalibrationSummary(batches={self.batches}, without_data={sorted(self.without_data)})"


def calibrate(prepared: fx.GraphModule, batches: Iterable[Any], progress: bool = True) -> CalibrationSummary:
    """Run ``prepared`` (from prepare_fx) on every batch without gradients; return a summary.

    A batch is a tensor or a tuple of the forward's arguments. ``progress`` shows a tqdm bar on stderr.
    Observers that saw no data are listed in the summary and in a warning.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 4),))
    >>> fxq.calibrate(prepared, [torch.randn(8, 4)] * 3, progress=False)
    CalibrationSummary(batches=3, without_data=[])
    """
    if getattr(prepared, "_fxq_state", None) is None:
        raise TypeError(f"fxq.calibrate expects the model returned by fxq.prepare_fx, got "
                        f"{type(prepared).__name__}; call fxq.prepare_fx(model, qconfig_mapping, example_inputs)")
    from tqdm.auto import tqdm  # imported here: only calibration needs it

    summary = CalibrationSummary()
    total = len(batches) if hasattr(batches, "__len__") else None
    with torch.no_grad():
        for batch in tqdm(batches, total=total, desc="calibrating", unit="batch", disable=not progress):
            prepared(*(batch if isinstance(batch, tuple) else (batch,)))
            summary.batches += 1
    summary.without_data = _observers_without_data(prepared)
    if summary.without_data:
        warnings.warn(f"fxq.calibrate: {summary}", stacklevel=2)
    return summary


def _observers_without_data(prepared: fx.GraphModule) -> dict:
    modules = dict(prepared.named_modules())
    found = {}
    for node in prepared.graph.nodes:
        observer = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(observer, ObserverBase) and observer.dtype in _INT8 and not observer.has_data():
            found[node.target] = node.args[0].name if node.args else "?"
    return found
