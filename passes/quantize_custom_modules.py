"""Swap custom modules for their quantized classes: ``Quantized.from_observed(module)``.

Static mode: the module then reads quantized tensors and returns a quantized tensor, as fxq's own quantized
modules do (the ``dequantize`` in front of it and the ``quantize_per_tensor`` after it go away). Dynamic and
weight-only modes: the float module is swapped where it stands (it quantizes its own weights).
An observed module with no quantized class is an error naming both classes and the config key to set.
Requires: the lowered graph. Position: after lower, before cleanup.

Before / after::

    q1 -> dequantize -> observed_lstm_like -> quantize_per_tensor -> dequantize -> out
    q1 -> quantized_lstm_like -> dequantize -> out
"""
from __future__ import annotations

from torch import fx

from fxq.passes.boundary import feed_quantized, return_quantized
from fxq.passes.context import PassContext, modules_of
from fxq.registry import mode_of, registry


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        qconfig = ctx.state.qconfigs.get(node.name)
        mode = mode_of(qconfig)
        quantized_class = registry.quantized_class(type(module), mode, ctx.convert_config) if mode else None
        if quantized_class is None:
            _check_not_forgotten(node, module, ctx)
            continue
        if getattr(module, "qconfig", None) is None:
            module.qconfig = qconfig
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, quantized_class.from_observed(module))
        if mode == "static":
            feed_quantized(node, None, f"custom module '{node.target}' ({type(module).__name__})")
            return_quantized(node)
        ctx.count(f"custom modules quantized ({mode})")
    return gm


def _check_not_forgotten(node: fx.Node, module, ctx: PassContext) -> None:
    float_class = ctx.state.custom_modules.get(node.name)
    if float_class is None:
        return
    observed = type(module).__name__
    raise ValueError(
        f"custom module '{node.target}': prepare swapped {float_class.__name__} for the observed class {observed}, "
        f"but no quantized class is registered for {observed}; set convert_custom_config"
        f'["observed_to_quantized_custom_module_class"]["static"] = {{{observed}: YourQuantizedClass}} '
        f"(or ConvertCustomConfig().set_observed_to_quantized_mapping({observed}, YourQuantizedClass), "
        f"or fxq.register_custom_module)")
