"""Apply input-weight equalization: rescale weights and observers, then drop the equalization observers.

Per equalized layer, ``s = sqrt(w_range / x_range)`` per input column (1 for dead or zero columns). The weight's
columns are divided by ``s`` (new tensors: the float model shares storage with the user's). The input must be
multiplied by ``s``:

- from a previous layer through a connected chain (fxq.equalization.graph): that layer's weight rows and bias
  are multiplied by ``s`` and every quantization observer on the chain is rebuilt for the values it would have
  seen (PyTorch AO forgets this and loses accuracy). After a shape op the features of one channel share a scale
  (the channel map prepare recorded), so a flatten after a conv gets each channel's scale H*W times;
- otherwise a ``mul`` by the scale buffer goes in front of the input quantization observer, which is rebuilt
  for the scaled input.

Rebuilt observers keep the user's type and settings (fxq.equalization.requantize): a HistogramObserver stays a
HistogramObserver, its histogram rebuilt from per-channel histograms. Grouped convs scale each input channel's
weights within its group.

Weight observers of functional layers are rebuilt and re-run on the new weight (module layers get theirs in
to_reference). Every scale is kept as a buffer ``<layer>_equalization_scale``.
Requires: a calibrated graph from insert_equalization_observers. Guarantees: no equalization observer left.
Position: first in convert, before to_reference.

Before / after::

    x -> obs0 -> eq0 -> linear1 -> obs1 -> eq1 -> linear2      x -> mul -> obs0 -> linear1 -> obs1 -> linear2
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn

from fxq.equalization import graph as eqg
from fxq.equalization.observers import ChannelRangeObserver, WeightEqualizationObserver
from fxq.equalization import requantize
from fxq.equalization.scales import along, equalization_scale, scale_weight, tied_scale
from fxq.passes.context import (PassContext, attribute_value, delete_unused_submodules, free_name, modules_of,
                                register_new_buffer)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    calls = eqg.call_counts(gm)
    columns, rows = {}, {}  # layer node -> scale for its weight columns / rows
    for node in eqg.input_equalization_nodes(gm, modules):
        layer, input_observer, record = next(iter(node.users)), node.args[0], modules[node.target]
        ranges = _ranges(node, layer, modules, ctx)
        if ranges is None:
            continue
        per_channel, scale = _scales(record, ranges)
        columns[layer] = scale
        register_new_buffer(gm, f"{layer.name}_equalization_scale", scale)
        chain = eqg.previous_layer(layer, modules, calls) if per_channel is not None else None
        if chain is not None and _rescale_chain(gm, chain, (record, scale, per_channel), modules):
            rows[chain.layer] = per_channel
            ctx.count("scales folded into the previous layer")
        else:
            _insert_mul(gm, input_observer, layer, scale, modules)
            _requantize(gm, _own_observer(gm, input_observer, calls, modules), record, scale, modules)
            ctx.count("input muls")
    for layer in {**columns, **rows}:
        _rescale_weight(gm, layer, columns.get(layer), rows.get(layer), modules, ctx)
    _remove_equalization_nodes(gm, modules)
    return gm


def _ranges(node: fx.Node, layer: fx.Node, modules: dict, ctx: PassContext):
    """(input min, input max, weight min, weight max) per input channel, or None if an observer saw nothing."""
    input_observer = modules[node.target]
    weight_observer = _weight_observer(layer, input_observer, modules)
    if not (input_observer.has_data() and weight_observer is not None and weight_observer.has_data()):
        ctx.warnings.append(f"equalization skipped for node '{layer.name}': its equalization observers saw no data")
        return None
    return input_observer.min_val, input_observer.max_val, weight_observer.min_val, weight_observer.max_val


def _scales(record: nn.Module, ranges: tuple):
    """(scale per previous-layer channel or None, scale per input feature). With a channel map (prepare found a
    foldable chain) the features of one channel share a scale, so it can go into that channel's weight row."""
    if record.channel_map.numel() != ranges[0].numel():
        return None, equalization_scale(*ranges)
    return tied_scale(*ranges, record.channel_map, int(record.channel_map.max()) + 1)


def _weight_observer(layer: fx.Node, input_observer: nn.Module, modules: dict):
    if layer.op == "call_module":
        return getattr(input_observer, "weight_observer", None)
    value = eqg.argument(layer, 1, "weight")
    while isinstance(value, fx.Node) and value.op == "call_module":
        if isinstance(modules[value.target], WeightEqualizationObserver):
            return modules[value.target]
        value = value.args[0]
    return None


def _rescale_chain(gm: fx.GraphModule, chain: eqg.Chain, equalized: tuple, modules: dict) -> bool:
    """Rebuild each observer on the chain for the scaled values; False (nothing changed) if one's data is
    unknown or the previous layer's outputs do not match the scale. ``equalized``: (input equalization observer,
    scale per input feature, scale per previous-layer channel)."""
    record, scale, per_channel = equalized
    if _weight(gm, chain.layer, modules).shape[0] != per_channel.numel():
        return False
    plan = {chain.observers[0].target: (record, scale)}
    for position, observer in enumerate(chain.observers[1:], 1):
        if observer.target in plan:
            continue
        tracker = eqg.tracker_after(observer, modules)
        if tracker is None or not modules[tracker.target].has_data():
            return False
        plan[observer.target] = (modules[tracker.target], scale if position < chain.after_reshape else per_channel)
    for target, (observed, factor) in plan.items():
        _requantize(gm, target, observed, factor, modules)
    return True


def _requantize(gm: fx.GraphModule, target: str, record: nn.Module, scale: torch.Tensor, modules: dict) -> None:
    """Swap the quantization observer ``target`` for a copy of the same type whose state is what it would have
    recorded on the scaled values (fxq.equalization.requantize): the user's observer computes the qparams."""
    observer = requantize.rescaled_observer(modules[target], record, scale)
    setattr(gm, target, observer)
    modules[target] = observer


def _own_observer(gm: fx.GraphModule, observer_node: fx.Node, calls, modules: dict) -> str:
    """The observer module this node calls, made its own first if other nodes call it too (an op that shares its
    input's qparams, like flatten, shares the observer module): only this call sees the scaled values."""
    target = observer_node.target
    if calls[target] <= 1:
        return target
    name = free_name(gm, f"{target}_equalized")
    gm.add_submodule(name, copy.deepcopy(modules[target]))
    modules[name] = gm.get_submodule(name)
    observer_node.target = name
    calls[target] -= 1
    calls[name] = 1
    return name


def _insert_mul(gm: fx.GraphModule, input_observer: fx.Node, layer: fx.Node, scale, modules: dict) -> None:
    value = input_observer.args[0]
    shape_like = along(scale, 1, _weight(gm, layer, modules).ndim) if eqg.channel_axis(layer, modules) == 1 else scale
    with gm.graph.inserting_before(input_observer):
        factor = gm.graph.get_attr(register_new_buffer(gm, f"{layer.name}_input_equalization_scale", shape_like))
        mul = gm.graph.call_function(torch.mul, (value, factor))
    mul.meta.update({k: v for k, v in value.meta.items() if k in ("fxq_scope", "fxq_value")})
    input_observer.replace_input_with(value, mul)


def _weight(gm: fx.GraphModule, layer: fx.Node, modules: dict) -> torch.Tensor:
    if layer.op == "call_module":
        return eqg.inner_module(modules[layer.target]).weight
    return attribute_value(gm, eqg.weight_attr(layer).target)  # dotted on exported graphs


def _rescale_weight(gm: fx.GraphModule, layer: fx.Node, column, row, modules: dict, ctx: PassContext) -> None:
    """New weight (columns / column scale, rows * row scale) and bias (* row scale); never written in place."""
    if layer.op == "call_module":
        module = eqg.inner_module(modules[layer.target])
        weight = scale_weight(module.weight, column, row, eqg.groups_of(layer, modules))
        module.weight = nn.Parameter(weight, module.weight.requires_grad)
        if row is not None and module.bias is not None:
            module.bias = nn.Parameter(module.bias.detach() * row, module.bias.requires_grad)
        return
    attr = eqg.weight_attr(layer)
    weight = scale_weight(attribute_value(gm, attr.target), column, row, eqg.groups_of(layer, modules))
    attr.target = register_new_buffer(gm, f"{attr.target}_equalized", weight)
    bias = eqg.argument(layer, 2, "bias")
    if row is not None and bias is not None:
        bias.target = register_new_buffer(gm, f"{bias.target}_equalized",
                                          attribute_value(gm, bias.target).detach() * row)
    _reobserve_weight(gm, layer, weight, modules, ctx)


def _reobserve_weight(gm: fx.GraphModule, layer: fx.Node, weight: torch.Tensor, modules: dict,
                      ctx: PassContext) -> None:
    """The functional weight's quantization observer, rebuilt from the qconfig and run on the new weight."""
    qconfig = ctx.state.qconfigs.get(layer.name)
    value = eqg.argument(layer, 1, "weight")
    while isinstance(value, fx.Node) and value.op == "call_module":
        if eqg.is_observer(value, modules) and qconfig is not None:
            observer = qconfig.weight()
            observer(weight)
            setattr(gm, value.target, observer)
            modules[value.target] = observer
        value = value.args[0]


def _remove_equalization_nodes(gm: fx.GraphModule, modules: dict) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), ChannelRangeObserver):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    delete_unused_submodules(gm)
