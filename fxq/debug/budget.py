"""``fxq.quantize_with_budget``: the most-int8 model whose metric stays within ``max_drop`` of float.

It quantizes every layer the mapping selects, and while the metric has dropped by more than ``max_drop`` it
leaves one more layer float, the most sensitive first (:func:`fxq.sensitivity`: the metric each layer recovers
when it alone stays float). Fewer float layers is faster, so the first model within budget is returned, with a
table saying which layers stayed float and why.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from torch import nn


@dataclass
class BudgetResult:
    """The chosen model, its metric, the float metric, and one row per layer ranked by sensitivity."""

    model: nn.Module
    metric: float
    float_metric: float
    float_layers: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # (layer, recovered alone, "float" | "int8", why)

    def table(self) -> str:
        lines = [f"float metric {self.float_metric:.4f}, chosen model {self.metric:.4f} "
                 f"({len(self.float_layers)} layer(s) float)", "| layer | metric recovered alone | kept | why |",
                 "|---|---|---|---|"]
        lines += [f"| {layer} | {change:+.4f} | {kept} | {why} |" for layer, change, kept, why in self.rows]
        return "\n".join(lines)


def quantize_with_budget(model: nn.Module, calibration: Sequence[Any], eval_fn: Callable[[nn.Module], float],
                         max_drop: float, qconfig_mapping: Any = None, equalization_config: Any = None,
                         layers: Optional[Sequence[str]] = None) -> BudgetResult:
    """Quantize ``model`` leaving the fewest layers float such that ``eval_fn`` (higher is better) drops by at most
    ``max_drop`` from float. ``qconfig_mapping`` defaults to the x86 mapping; ``equalization_config`` is passed to
    every prepare (e.g. ``fxq.SmoothQuant()``). ``model`` is not modified.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> data = [torch.randn(16, 8) for _ in range(2)]
    >>> score = lambda m: -float((m(data[0]) - model(data[0])).pow(2).mean())
    >>> result = fxq.quantize_with_budget(model, data, score, max_drop=1.0)
    >>> result.float_layers
    []
    """
    from fxq.config import QConfigMapping, get_default_qconfig_mapping
    from fxq.debug.sensitivity import sensitivity
    mapping = QConfigMapping.coerce(qconfig_mapping) if qconfig_mapping is not None else get_default_qconfig_mapping()
    float_metric = float(eval_fn(model))

    def build(float_layers: list):
        trial = copy.deepcopy(mapping)
        for layer in float_layers:
            trial.set_module_name(layer, None)
        quantized = _quantize(model, trial, calibration, equalization_config)
        return quantized, float(eval_fn(quantized))

    chosen, metric = build([])
    ranking, float_layers = [], []
    if float_metric - metric > max_drop:
        ranking = sensitivity(model, mapping, calibration, eval_fn, layers)
        for entry in ranking:
            float_layers.append(entry.layer)
            chosen, metric = build(float_layers)
            if float_metric - metric <= max_drop:
                break
    rows = [(e.layer, e.change, "float" if e.layer in float_layers else "int8",
             f"among the most sensitive: int8 everywhere else still dropped more than {max_drop}"
             if e.layer in float_layers else "budget met without it") for e in ranking]
    return BudgetResult(chosen, metric, float_metric, float_layers, rows)


def _quantize(model: nn.Module, mapping: Any, calibration: Sequence[Any], equalization_config: Any) -> nn.Module:
    from fxq.debug.calibration import calibrate
    from fxq.passes.flows import convert, prepare  # late: flows imports the pipeline, which imports fxq.debug
    first = calibration[0]
    prepared = prepare(model, mapping, first if isinstance(first, tuple) else (first,),
                       equalization_config=equalization_config)
    calibrate(prepared, calibration, progress=False)
    return convert(prepared)
