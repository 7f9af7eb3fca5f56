"""Insert input-weight equalization observers for the layers ``_equalization_config`` selects.

For each selected linear/conv (``nn.Linear``, ``nn.Conv1d/2d/3d`` including grouped and depthwise, their fused
ReLU forms, ``F.linear``, ``F.conv1d/2d/3d``) whose input is quantized, an InputEqualizationObserver goes between
the input quantization observer and the layer. Functional layers also get a WeightEqualizationObserver on the
weight path; a module layer's weight equalization observer is kept on the input observer (``.weight_observer``)
and fed its weight now.
When the input comes from another layer through a connected chain (see fxq.equalization.graph), the input
equalization observer records which of that layer's channels each input feature comes from (its channel map),
and every other quantization observer on the chain gets a ChannelRangeObserver after it, so convert can rebuild
it exactly. Each equalization observer records what rebuilding its quantization observer needs (per-channel
histograms behind a HistogramObserver; fxq.equalization.requantize).
A selected layer that cannot be equalized is skipped with a warning naming the node.
Requires: insert_observers. Guarantees: equalization observers only; quantization observers untouched.
Position: right after insert_observers.

Before / after::

    x -> obs0 -> linear1 -> obs1 -> linear2 -> obs2
    x -> obs0 -> eq0 -> linear1 -> obs1 -> eq1 -> linear2 -> obs2
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from torch import fx, nn

from fxq.equalization import graph as eqg
from fxq.equalization import requantize
from fxq.equalization.channels import channel_map
from fxq.equalization.observers import ChannelRangeObserver, InputEqualizationObserver, WeightEqualizationObserver
from fxq.equalization.qconfig import EqualizationQConfig
from fxq.graph.tracer import module_classes
from fxq.observers import ObserverBase
from fxq.passes.assign_qconfig import _lookup_key
from fxq.passes.context import PassContext, free_name, modules_of
from fxq.passes.record_values import value_of


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    mapping = getattr(ctx, "equalization_mapping", None)
    if mapping is None:
        return gm
    modules = modules_of(gm)
    calls = eqg.call_counts(gm)
    for node, eq_qconfig in list(_selected_nodes(gm, modules, mapping)):  # select first: set_mpath rules match once
        problem = _problem(node, modules, calls, ctx)
        if problem is not None:
            ctx.warnings.append(f"equalization skipped for node '{node.name}': {problem}")
            ctx.count("layers skipped")
            continue
        input_observer = _insert_for_layer(gm, node, eq_qconfig, modules)
        ctx.count("layers equalized")
        _prepare_folding(gm, node, input_observer, modules, calls, ctx)
    return gm


def _selected_nodes(gm: fx.GraphModule, modules: dict, mapping: Any):
    """(node, EqualizationQConfig) for nodes the mapping selects, resolved with the qconfig precedence rules."""
    calls_so_far: Counter = Counter()
    classes = module_classes(gm) or {}  # an exported graph's aten calls are also selected by their module's class
    for node in list(gm.graph.nodes):
        if node.op not in ("call_module", "call_function", "call_method") or _is_equalization_node(node, modules):
            continue
        if node.op == "call_module" and isinstance(modules[node.target], ObserverBase):
            continue
        path, object_types, counted_in = _lookup_key(node, modules, classes)
        index = calls_so_far[(counted_in, object_types[0])]
        calls_so_far[(counted_in, object_types[0])] += 1
        qconfig = mapping.qconfig_for(path, object_types, index, counted_in=counted_in, node=node)
        if qconfig is None:
            continue
        if not isinstance(qconfig, EqualizationQConfig):
            raise TypeError(f"_equalization_config selects {qconfig!r} for node '{node.name}'; it must hold "
                            f"fxq.EqualizationQConfig entries, e.g. fxq.default_equalization_qconfig")
        if eqg.is_layer_kind(node, modules) or _has_weight(node, modules):
            yield node, qconfig


def _has_weight(node: fx.Node, modules: dict) -> bool:
    return node.op == "call_module" and isinstance(getattr(modules[node.target], "weight", None), nn.Parameter)


def _is_equalization_node(node: fx.Node, modules: dict) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], ChannelRangeObserver)


def _problem(node: fx.Node, modules: dict, calls: Counter, ctx: PassContext) -> Optional[str]:
    if not eqg.is_layer_kind(node, modules):
        kind = type(modules[node.target]).__name__
        return (f"{kind} is not supported (only Linear, Conv1d/2d/3d, their fused ReLU forms, F.linear and "
                f"F.conv1d/2d/3d are)")
    problem = eqg.layer_problem(node, modules, calls)
    if problem is not None:
        return problem
    observer = node.args[0] if node.args else None
    if ctx.state.qconfigs.get(node.name) is None or not eqg.is_observer(observer, modules):
        return "its input is not quantized (no qconfig, or its input is not observed)"
    if len(observer.users) != 1:
        return f"its input observer '{observer.target}' also feeds other ops"
    if requantize.rebuild_kind(modules[observer.target]) is None:
        return (f"its input observer '{observer.target}' is a {type(modules[observer.target]).__name__}, whose "
                f"state cannot be rescaled for the equalized input; use {requantize.REBUILDABLE} in the qconfig")
    return None


def _insert_for_layer(gm: fx.GraphModule, node: fx.Node, eq_qconfig: EqualizationQConfig,
                      modules: dict) -> InputEqualizationObserver:
    input_observer = eq_qconfig.input_activation()
    weight_observer = eq_qconfig.weight()
    for built, wanted, field in ((input_observer, InputEqualizationObserver, "input_activation"),
                                 (weight_observer, WeightEqualizationObserver, "weight")):
        if not isinstance(built, wanted):
            raise TypeError(f"EqualizationQConfig.{field} for node '{node.name}' built a {type(built).__name__}; "
                            f"it must build a {wanted.__name__} (e.g. fxq.default_equalization_qconfig)")
    input_observer.ch_axis = eqg.channel_axis(node, modules)
    requantize.configure_recording(input_observer, modules[node.args[0].target])
    weight_observer.groups = eqg.groups_of(node, modules)
    name = _new_module(gm, modules, f"{node.name}_input_equalization_process", input_observer)
    _insert_after(gm, node.args[0], name, only_user=node)
    if node.op == "call_module":
        input_observer.weight_observer = weight_observer  # weights are constant: observe them now
        weight_observer(eqg.inner_module(modules[node.target]).weight)
        return input_observer
    attr = eqg.weight_attr(node)
    name = _new_module(gm, modules, f"{node.name}_weight_equalization_process", weight_observer)
    _insert_after(gm, attr, name, only_user=next(iter(attr.users)))
    return input_observer


def _prepare_folding(gm: fx.GraphModule, node: fx.Node, input_observer: InputEqualizationObserver, modules: dict,
                     calls: Counter, ctx: PassContext) -> None:
    """When the input comes from a previous layer through a connected chain: record which of its channels each
    input feature comes from, and put a range tracker behind every other observer on the chain."""
    chain = eqg.previous_layer(node, modules, calls)
    if chain is None:
        return
    mapping = channel_map(chain, node, modules, lambda n: value_of(n).shape)
    if mapping is None:
        ctx.count("chains left to a mul (a feature mixes channels)")
        return
    input_observer.channel_map = mapping
    _insert_trackers(gm, chain, node, modules, ctx)


def _insert_trackers(gm: fx.GraphModule, chain: eqg.Chain, layer: fx.Node, modules: dict, ctx: PassContext) -> None:
    """A ChannelRangeObserver after each chain observer whose module is not the equalized input's own observer;
    in the channel layout of the side of the shape op it is on."""
    nearest = chain.observers[0].target
    for position, observer in enumerate(chain.observers[1:], 1):
        if observer.target == nearest or eqg.tracker_after(observer, modules) is not None:
            continue
        if requantize.rebuild_kind(modules[observer.target]) is None:
            continue  # no tracker: convert finds the chain unfoldable and inserts a mul instead
        side = layer if position < chain.after_reshape else chain.layer
        tracker = ChannelRangeObserver(ch_axis=eqg.channel_axis(side, modules))
        requantize.configure_recording(tracker, modules[observer.target])
        name = _new_module(gm, modules, f"{observer.target}_channel_range", tracker)
        _insert_after(gm, observer, name, only_user=next(iter(observer.users)))
        ctx.count("chain range trackers")


def _new_module(gm: fx.GraphModule, modules: dict, name: str, module: nn.Module) -> str:
    name = free_name(gm, name)
    gm.add_submodule(name, module)
    modules[name] = module  # later walks in this pass meet the new nodes
    return name


def _insert_after(gm: fx.GraphModule, value: fx.Node, name: str, only_user: fx.Node) -> fx.Node:
    with gm.graph.inserting_after(value):
        node = gm.graph.call_module(name, (value,))
    node.meta.update({k: v for k, v in value.meta.items() if k in ("fxq_scope", "fxq_value")})
    only_user.replace_input_with(value, node)
    return node
