"""Swap custom modules for their quantized classes: ``Quantized.from_observed(module)``.

Static mode: the module then reads quantized tensors and returns quantized tensors at the positions
observe_custom_modules recorded (``input_quantized_idxs`` / ``output_quantized_idxs``, counted flat through
tuples), as fxq's own quantized modules do: the ``dequantize`` in front of an input and the
``quantize_per_tensor`` after an output go away. Dynamic and weight-only modes: the float module is swapped where
it stands (it quantizes its own weights).
An observed module with no quantized class is an error naming both classes and the config key to set.
Requires: the lowered graph. Position: after lower, before cleanup.

Before / after::

    q1 -> dequantize -> observed_lstm_like -> getitem(0) -> quantize_per_tensor -> dequantize -> out
    q1 -> quantized_lstm_like -> getitem(0) -> dequantize -> out
"""
from __future__ import annotations

from torch import fx

from fxq.graph.modes import CUSTOM_MODULE_MODE, quant_mode
from fxq.passes.boundary import dequantize_for_readers, feed_quantized_leaves, return_quantized
from fxq.passes.context import PassContext, modules_of
from fxq.passes.leaf_values import leaf_node
from fxq.config.registry import registry


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        qconfig = ctx.state.qconfigs.get(node.name)
        mode = CUSTOM_MODULE_MODE.get(quant_mode(qconfig))
        quantized_class = registry.quantized_class(type(module), mode, ctx.convert_config) if mode else None
        if quantized_class is None:
            _check_not_forgotten(node, module, ctx)
            continue
        if getattr(module, "qconfig", None) is None:
            module.qconfig = qconfig
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, quantized_class.from_observed(module))
        if node.name in ctx.state.custom_modules:  # static: observed in prepare
            _wire_quantized(gm, node, ctx.state.custom_modules[node.name], type(module).__name__)
        ctx.count(f"custom modules quantized ({mode})")
    return gm


def _wire_quantized(gm: fx.GraphModule, node: fx.Node, record: tuple, class_name: str) -> None:
    """Quantized tensors in at the recorded input positions, quantized tensors out at the recorded paths."""
    _, inputs, outputs = record
    feed_quantized_leaves(node, set(inputs), f"custom module '{node.target}' ({class_name})")
    for path in outputs:
        leaf = leaf_node(node, path)
        if leaf is not None and not return_quantized(leaf):
            dequantize_for_readers(gm, leaf)  # its observer saw no data, so nothing re-quantizes it: read float


def _check_not_forgotten(node: fx.Node, module, ctx: PassContext) -> None:
    record = ctx.state.custom_modules.get(node.name)
    if record is None:
        return
    float_class, observed = record[0], type(module).__name__
    raise ValueError(
        f"custom module '{node.target}': prepare swapped {float_class.__name__} for the observed class {observed}, "
        f"but no quantized class is registered for {observed}; set convert_custom_config"
        f'["observed_to_quantized_custom_module_class"]["static"] = {{{observed}: YourQuantizedClass}} '
        f"(or ConvertCustomConfig().set_observed_to_quantized_mapping({observed}, YourQuantizedClass), "
        f"or fxq.register_custom_module)")
