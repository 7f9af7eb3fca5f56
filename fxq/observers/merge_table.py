"""Which merger (fxq.observers.merge) each observer class gets, and the error for a class that has none.

    >>> from fxq.observers import HistogramObserver, MinMaxObserver
    >>> [type(m).__name__ for m in observer_mergers(torch.nn.ModuleList([MinMaxObserver(), HistogramObserver()]))]
    ['MinMaxMerge', 'HistogramMerge']
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fxq.observers.base import ObserverBase
from fxq.observers.histogram import HistogramObserver
from fxq.observers.merge import HistogramMerge, Merger, MinMaxMerge, MovingAverageMerge
from fxq.observers.merge_one_pass import OnePassHistogramMerge
from fxq.observers.minmax import (MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                                  PerChannelMinMaxObserver)
from fxq.observers.row_checked import RowCheckedHistogramObserver, RowCheckedMerge
from fxq.observers.simple import FixedQParamsObserver, NoopObserver, PlaceholderObserver

MERGE_METHOD = "merge_states"


class UnmergeableObserverError(TypeError):
    """An observer whose state fxq cannot merge across processes, and which has no ``merge_states`` method."""


class UserMerge(Merger):
    """A user observer class with ``merge_states``: every rank's state_dict, in rank order, goes to that method."""

    def state_part(self) -> dict:
        return {key: value.detach().cpu() if isinstance(value, torch.Tensor) else value
                for key, value in self.observer.state_dict().items()}

    def set_states(self, states: list[dict]) -> None:
        getattr(self.observer, MERGE_METHOD)(states)


# Most derived first: a class takes the merge of the first entry it is an instance of.
BUILT_IN = ((MovingAveragePerChannelMinMaxObserver, MovingAverageMerge), (PerChannelMinMaxObserver, MinMaxMerge),
             (MovingAverageMinMaxObserver, MovingAverageMerge), (MinMaxObserver, MinMaxMerge),
             (RowCheckedHistogramObserver, RowCheckedMerge), (HistogramObserver, HistogramMerge),
             (PlaceholderObserver, Merger), (NoopObserver, Merger), (FixedQParamsObserver, Merger))  # nothing to merge
# fxq.calibrate(..., exact_histograms=False): histograms count in the only pass and merge approximately
ONE_PASS = tuple((base, OnePassHistogramMerge if merge is HistogramMerge else merge) for base, merge in BUILT_IN)
_UPDATE_METHODS = ("forward", "_record")  # a subclass overriding these records something fxq cannot know


def observer_mergers(model: nn.Module, table: tuple = BUILT_IN) -> list[Merger]:
    """A merger for every observer in ``model``, in ``named_modules`` order (the same on every rank). ``table``:
    (observer class, merger class) rows, most derived first; fxq.debug.distributed adds equalization's.

    Raises UnmergeableObserverError naming the first observer class fxq cannot merge and lacking ``merge_states``.
    """
    mergers = []
    for name, module in model.named_modules():
        merger = merger_for(name, module, table)
        if merger is not None:
            mergers.append(merger)
    return mergers


def merger_for(name: str, module: nn.Module, table: tuple = BUILT_IN) -> Optional[Merger]:
    """The merger of one module; None for modules that are not observers."""
    if callable(getattr(type(module), MERGE_METHOD, None)):
        return UserMerge(name, module)
    for base, merge in table:
        if isinstance(module, base):
            if all(getattr(type(module), method, None) is getattr(base, method, None) for method in _UPDATE_METHODS):
                return merge(name, module)
            break
    known = (ObserverBase, *(base for base, _ in table))
    if not isinstance(module, known) and not hasattr(module, "calculate_qparams"):
        return None
    cls = type(module)
    raise UnmergeableObserverError(
        f"{cls.__module__}.{cls.__qualname__} (observer '{name}') cannot be merged across processes: fxq does not "
        f"know how its state combines. Give the class a method `{MERGE_METHOD}(self, states: list[dict]) -> None` "
        f"that sets its state from every rank's state_dict() (rank order), or calibrate with distributed=False.")
