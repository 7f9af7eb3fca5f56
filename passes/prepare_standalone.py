"""Prepare standalone modules as graphs of their own, with their own qconfig mapping and custom config.

A standalone module (``standalone_module_name`` / ``standalone_module_class``) is a leaf of the parent's trace;
here it is replaced by ``fxq.prepare_fx(module, its mapping, its example inputs, its prepare config)``. The
child's ``input_quantized_idxs`` / ``output_quantized_idxs`` say which of its inputs arrive quantized and which
outputs leave quantized: the parent observes those values, so convert can quantize them at the boundary.
None entries fall back to the parent's mapping; missing example inputs are captured from the parent's run.
Requires: qconfigs (assign_qconfig). Guarantees: ``ctx.state.standalone[node name] = (input idxs, output idxs, the child's FxqState)``.
Position: after insert_observers.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from fxq.passes.boundary import observe_input, observe_output
from fxq.passes.context import PassContext, modules_of


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    config = ctx.prepare_config
    if config is None or not (config.standalone_module_names or config.standalone_module_classes):
        return gm
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        entry = _entry(node, modules, config)
        if entry is None:
            continue
        child = _prepare_child(gm, node, modules[node.target], entry, ctx)
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, child)
        modules[node.target] = child
        child_config = child._fxq_state.prepare_config
        inputs, outputs = list(child_config.input_quantized_indexes), list(child_config.output_quantized_indexes)
        # the child's own state travels with the parent's: deep copies of a GraphModule drop extra attributes
        ctx.state.standalone[node.name] = (inputs, outputs, child._fxq_state)
        activation = _activation(node, ctx)
        for index in inputs:
            observe_input(gm, modules, node, node.args[index], activation)
        if outputs:
            observe_output(gm, modules, node, activation)
        ctx.count("standalone modules prepared")
    return gm


def _entry(node: fx.Node, modules: dict, config: Any):
    if node.op != "call_module":
        return None
    if node.target in config.standalone_module_names:
        return config.standalone_module_names[node.target]
    return next((e for cls, e in config.standalone_module_classes.items() if type(modules[node.target]) is cls),
                None)


def _prepare_child(gm: fx.GraphModule, node: fx.Node, module: nn.Module, entry, ctx: PassContext):
    from fxq.passes.flows import prepare  # the child runs the whole prepare flow; late: flows imports the pipeline
    mapping = entry.qconfig_mapping if entry.qconfig_mapping is not None else ctx.qconfig_mapping
    example_inputs = tuple(entry.example_inputs) or _captured_inputs(gm, module, ctx.example_inputs)
    return prepare(module, mapping, example_inputs, entry.prepare_custom_config)


def _captured_inputs(gm: fx.GraphModule, module: nn.Module, example_inputs: tuple) -> tuple:
    """The arguments ``module`` receives when the parent runs on its example inputs."""
    captured: list = []
    handle = module.register_forward_pre_hook(lambda _, args: captured.append(args) if not captured else None)
    try:
        with torch.no_grad():
            gm(*example_inputs)
    finally:
        handle.remove()
    return tuple(captured[0]) if captured else ()


def _activation(node: fx.Node, ctx: PassContext):
    qconfig = ctx.state.qconfigs.get(node.name) or ctx.qconfig_mapping.global_qconfig
    if qconfig is None:
        raise ValueError(f"standalone module '{node.target}' takes or returns quantized tensors "
                         f"(input_quantized_idxs / output_quantized_idxs) but the parent's qconfig for it is None; "
                         f"give the parent mapping a global qconfig or one for '{node.target}'")
    return qconfig.activation
