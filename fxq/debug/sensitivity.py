"""``fxq.sensitivity``: rank layers by how much the metric recovers when only that layer is left in float.

It takes the float model or the model prepare_fx returned. A prepared model still computes the float model:
prepare only inserts observers (which return their input) and fuses (batch norm folded into the conv's weights,
conv and relu grouped in one float module). So :func:`float_graph` takes the observers out again, and each
trial prepares that graph (prepare_fx adopts a GraphModule without tracing it again, so node names and
layer paths stay those of the prepared model).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from torch import fx, nn

from fxq.graph.module_copy import copy_module
from fxq.observers import ObserverBase
from fxq.graph.state import STATE_ATTRIBUTE, get_state

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Sensitivity:
    """How much the metric moved when only ``layer`` stayed float (positive: quantizing it costs that much)."""

    layer: str
    metric: float
    change: float


def sensitivity(prepared_or_float: nn.Module, qconfig_mapping: Any, calibration: Sequence[Any],
                eval_fn: Callable[[nn.Module], float], layers: Optional[Sequence[str]] = None, *,
                distributed: bool = False) -> list[Sensitivity]:
    """Rank layers by how much the metric recovers when only that layer is left in float, most sensitive first.

    ``prepared_or_float`` is the float model or the model prepare_fx returned (its observers are dropped; it is
    not modified). ``eval_fn(model) -> float`` is higher-is-better (e.g. accuracy). ``layers`` are module paths;
    by default every Linear and Conv (fused ones included). Costs one prepare + calibrate + convert + eval per
    layer, plus one for the baseline with every layer quantized. ``distributed=True`` (call it on every rank of a
    torch.distributed process group, each with the same arguments) splits those trials round-robin over the ranks
    and gathers one ranking, the same on every rank and the same as one process's.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> data = [torch.randn(16, 8) for _ in range(2)]
    >>> score = lambda m: -float((m(data[0]) - model(data[0])).pow(2).mean())
    >>> ranking = fxq.sensitivity(model, fxq.get_default_qconfig_mapping(), data, score)
    >>> sorted(r.layer for r in ranking)
    ['0', '2']
    """
    from fxq.passes.flows import convert, prepare  # late: flows imports the pipeline, which imports fxq.debug
    from fxq.debug.calibration import calibrate
    from fxq.config import QConfigMapping

    model = float_graph(prepared_or_float) if get_state(prepared_or_float) is not None else prepared_or_float
    mapping = QConfigMapping.coerce(qconfig_mapping)
    first = calibration[0]
    example = first if isinstance(first, tuple) else (first,)
    layers = _check_layers(model, layers) if layers is not None else _default_layers(model)

    def quantized_metric(float_layer: Optional[str]) -> float:
        layer_mapping = copy.deepcopy(mapping)
        if float_layer is not None:
            layer_mapping.set_module_name(float_layer, None)
        prepared = prepare(model, layer_mapping, example)
        calibrate(prepared, calibration, progress=False, distributed=False)  # each trial sees all the data
        return float(eval_fn(convert(prepared)))

    trials = [None, *layers]  # None: the baseline, every layer quantized
    if distributed:
        from fxq.debug.ranks import gather_results, rank_and_world
        rank, world = rank_and_world()
        metrics = gather_results(lambda: {i: quantized_metric(trials[i]) for i in range(rank, len(trials), world)},
                                 "fxq.sensitivity")
    else:
        metrics = {i: quantized_metric(trial) for i, trial in enumerate(trials)}
    baseline = metrics[0]
    ranking = [Sensitivity(layer, metrics[i], metrics[i] - baseline) for i, layer in enumerate(layers, start=1)]
    ranking.sort(key=lambda s: (-s.change, s.layer))
    return ranking


def float_graph(prepared: fx.GraphModule) -> fx.GraphModule:
    """The float computation of a model from prepare_fx: a copy with its observers taken out and no fxq state.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.ones(1, 2),))
    >>> [n.name for n in float_graph(prepared).graph.nodes]
    ['input_1', '_0', 'output']
    """
    from fxq.equalization.observers import ChannelRangeObserver
    state = get_state(prepared)
    special = sorted(state.custom_modules) + sorted(state.standalone)
    if special:
        raise ValueError(f"fxq.sensitivity: cannot recover the float model from a prepared model with custom or "
                         f"standalone modules ({', '.join(special)}); pass the float model you gave prepare_fx")
    gm = copy_module(prepared)
    if STATE_ATTRIBUTE in gm.__dict__:  # GraphModule's deepcopy may or may not carry plain attributes over
        delattr(gm, STATE_ATTRIBUTE)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules[node.target], (ObserverBase, ChannelRangeObserver)):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _default_layers(model: nn.Module) -> list[str]:
    if not isinstance(model, fx.GraphModule):
        return [name for name, module in model.named_modules() if isinstance(module, _WEIGHTED)]
    from fxq.patterns.fusion import FUSED_CONSTITUENTS
    modules = dict(model.named_modules())
    # in a graph the called modules are the layers: a fused ConvReLU2d at "conv", not its child "conv.0"
    return [node.target for node in model.graph.nodes if node.op == "call_module"
            and issubclass(FUSED_CONSTITUENTS.get(type(modules[node.target]), (type(modules[node.target]),))[0],
                           _WEIGHTED)]


def _check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    names = {name for name, _ in model.named_modules()}
    missing = [layer for layer in layers if layer not in names]
    if missing:
        raise ValueError(f"fxq.sensitivity: no module {', '.join(map(repr, missing))} in the model; layers are "
                         f"module paths such as {', '.join(map(repr, _default_layers(model)[:3]))}")
    return list(layers)
