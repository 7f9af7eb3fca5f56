"""Swap custom modules for their observed classes and observe their inputs and outputs (static mode).

A custom module is a leaf whose class has an observed class in the prepare config or in ``fxq.config.registry``. In
static mode it becomes ``Observed.from_float(module)`` (the module gets its ``qconfig`` attribute first, as
PyTorch AO's custom modules expect), and the tensors it takes and returns go through observers, so convert can
hand it quantized tensors and take quantized tensors back. Inputs and outputs are counted flat through nested
tuples (passes/leaf_values.py: nn.LSTM's ``(output, (h, c))`` is outputs 0, 1, 2); the observed module's
``input_quantized_idxs`` / ``output_quantized_idxs`` attributes (class or instance; absent or None: every float
tensor) say which of them are quantized. In the dynamic and weight-only modes nothing is observed: the float
module stays and convert swaps it (the node keeps its qconfig for that).
Requires: qconfigs (assign_qconfig) and observers of the ordinary ops (insert_observers), which it reuses.
Guarantees: ``ctx.state.custom_modules[node name] = (float class, quantized input positions, quantized output
paths)`` for every swapped module. Position: after insert_observers.

Before / after::

    x -> obs0 -> linear -> obs1 -> lstm_like -> out      x -> ... -> obs1 -> observed_lstm_like -> obs2 -> out
"""
from __future__ import annotations

from typing import Any

from torch import fx

from fxq.graph.modes import CUSTOM_MODULE_MODE, quant_mode
from fxq.passes.boundary import observe_output, observed_value
from fxq.passes.context import PassContext, modules_of
from fxq.passes.leaf_values import flat_args, map_flat_args, output_paths, unpack_output
from fxq.passes.record_values import is_float_tensor, value_of
from fxq.config.registry import registry
from fxq.graph.tracer import is_user_leaf


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    registered = set(registry.leaf_classes(ctx.prepare_config))  # torch.nn classes too (nn.LSTM -> yours)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not (is_user_leaf(modules[node.target])
                                            or type(modules[node.target]) in registered):
            continue
        qconfig = _qconfig(node, modules, ctx)
        mode = CUSTOM_MODULE_MODE.get(quant_mode(qconfig))
        module = modules[node.target]
        observed_class = registry.observed_class(type(module), mode, ctx.prepare_config) if mode else None
        if mode != "static" or observed_class is None:
            continue
        module.qconfig = qconfig
        observed = observed_class.from_float(module)
        _set_module(gm, modules, node.target, observed)
        inputs, outputs = _quantized_inputs(node, observed), _quantized_outputs(node, observed)
        node.args = map_flat_args(node.args, lambda position, arg: observed_value(
            gm, modules, arg, qconfig.activation) if position in inputs else arg)
        unpack_output(gm, node, set(outputs), lambda leaf: observe_output(gm, modules, leaf, qconfig.activation))
        ctx.state.custom_modules[node.name] = (type(module), inputs, outputs)
        ctx.count("custom modules observed")
    return gm


def _quantized_inputs(node: fx.Node, observed: Any) -> tuple:
    """Flat argument positions the quantized module takes quantized."""
    leaves = flat_args(node.args)
    wanted = getattr(observed, "input_quantized_idxs", None)
    if wanted is None:
        return tuple(i for i, leaf in enumerate(leaves) if is_float_tensor(leaf))
    for index in wanted:
        if not (0 <= index < len(leaves) and is_float_tensor(leaves[index])):
            raise ValueError(_bad_index(node, observed, "input_quantized_idxs", index, len(leaves), "argument"))
    return tuple(wanted)


def _quantized_outputs(node: fx.Node, observed: Any) -> tuple:
    """Paths of the output leaves the quantized module returns quantized."""
    leaves = output_paths(value_of(node))
    wanted = getattr(observed, "output_quantized_idxs", None)
    if wanted is None:
        return tuple(path for path, value in leaves if value.is_float_tensor)
    for index in wanted:
        if not (0 <= index < len(leaves) and leaves[index][1].is_float_tensor):
            raise ValueError(_bad_index(node, observed, "output_quantized_idxs", index, len(leaves), "output"))
    return tuple(leaves[index][0] for index in wanted)


def _bad_index(node: fx.Node, observed: Any, key: str, index: int, count: int, what: str) -> str:
    return (f"custom module '{node.target}' ({type(observed).__name__}): {key} has {index}, but {what} {index} of "
            f"its {count} (counted flat through tuples) is not a float tensor; set {type(observed).__name__}."
            f"{key} to indexes of float tensors among 0..{count - 1}, or None for all of them")


def _qconfig(node: fx.Node, modules: dict, ctx: PassContext):
    """The node's qconfig; a dynamic/weight-only one that assign_qconfig dropped (no kernel for an unknown leaf)
    is looked up again, kept for convert's custom module swap."""
    qconfig = ctx.state.qconfigs.get(node.name)
    if qconfig is None and ctx.qconfig_mapping is not None:
        parent = node.target.rpartition(".")[0]
        qconfig = ctx.qconfig_mapping.qconfig_for(node.target, (type(modules[node.target]),), 0, counted_in=parent,
                                                  node=node)
        keep = CUSTOM_MODULE_MODE.get(quant_mode(qconfig)) in ("dynamic", "weight_only")
        ctx.state.qconfigs[node.name] = qconfig if keep else None
        qconfig = ctx.state.qconfigs[node.name]
    return qconfig


def _set_module(gm: fx.GraphModule, modules: dict, path: str, module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(modules[parent] if parent else gm, name, module)
    modules[path] = module
