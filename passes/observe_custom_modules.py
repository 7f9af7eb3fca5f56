"""Swap custom modules for their observed classes and observe their inputs and outputs (static mode).

A custom module is a leaf whose class has an observed class in the prepare config or in ``fxq.registry``. In
static mode it becomes ``Observed.from_float(module)`` (the module gets its ``qconfig`` attribute first, as
torch.ao's custom modules expect), and its float tensor inputs and its output go through observers, so convert
can hand it quantized tensors and take a quantized tensor back. In the dynamic and weight-only modes nothing is
observed: the float module stays and convert swaps it (the node keeps its qconfig for that).
Requires: qconfigs (assign_qconfig) and observers of the ordinary ops (insert_observers), which it reuses.
Guarantees: ``ctx.state.custom_modules[node name]`` = float class for every swapped module.
Position: after insert_observers.

Before / after::

    x -> obs0 -> linear -> obs1 -> lstm_like -> out      x -> ... -> obs1 -> observed_lstm_like -> obs2 -> out
"""
from __future__ import annotations

from torch import fx

from fxq.passes.boundary import observe_input, observe_output
from fxq.passes.context import PassContext, modules_of
from fxq.registry import mode_of, registry
from fxq.tracer import is_user_leaf


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not is_user_leaf(modules[node.target]):
            continue
        qconfig = _qconfig(node, modules, ctx)
        mode = mode_of(qconfig)
        module = modules[node.target]
        observed_class = registry.observed_class(type(module), mode, ctx.prepare_config) if mode else None
        if mode != "static" or observed_class is None:
            continue
        module.qconfig = qconfig
        _set_module(gm, modules, node.target, observed_class.from_float(module))
        ctx.state.custom_modules[node.name] = type(module)
        for arg in node.args:
            observe_input(gm, modules, node, arg, qconfig.activation)
        observe_output(gm, modules, node, qconfig.activation)
        ctx.count("custom modules observed")
    return gm


def _qconfig(node: fx.Node, modules: dict, ctx: PassContext):
    """The node's qconfig; a dynamic/weight-only one that assign_qconfig dropped (no kernel for an unknown leaf)
    is looked up again, kept for convert's custom module swap."""
    qconfig = ctx.state.qconfigs.get(node.name)
    if qconfig is None and ctx.qconfig_mapping is not None:
        parent = node.target.rpartition(".")[0]
        qconfig = ctx.qconfig_mapping.qconfig_for(node.target, (type(modules[node.target]),), 0, counted_in=parent)
        ctx.state.qconfigs[node.name] = qconfig if mode_of(qconfig) in ("dynamic", "weight_only") else None
        qconfig = ctx.state.qconfigs[node.name]
    return qconfig


def _set_module(gm: fx.GraphModule, modules: dict, path: str, module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(modules[parent] if parent else gm, name, module)
    modules[path] = module
