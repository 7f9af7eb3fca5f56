"""Keep in float the layers that are slower as int8 than as float here, and pack the others for the engine
that runs them fastest (``cost_model`` in the PrepareCustomConfig: on by default for the lowering convert_fx will run,
``FXQ_COST_MODEL=off`` or ``{"cost_model": False}`` turns it off, an engine name pins that engine).

Requires: qconfigs assigned (assign_qconfig) and the example inputs' shapes recorded (record_values).
Guarantees: a static Linear / LinearReLU / Conv2d / ConvReLU2d whose fastest measured int8 kernel is slower
(by fxq.nn.cost_model.SLOWER_MARGIN) than its float op plus the dequantize / quantize a float layer between int8
neighbours needs gets no qconfig, so no observers are placed around it,
and a fused one is split back into the layer and ``torch.relu``; ``node.meta["fxq_float_reason"]`` says why
(the dumps show it). The others get ``ctx.state.engines[name]``, the engine lowering packs them for.
Layers whose input shape is unknown are left as they are.
Position: after assign_qconfig, before insert_observers.

Before / after (a 32x32 linear that the int8 kernel cannot speed up)::

    fc: qconfig static int8    ->    fc: qconfig None, fxq_float_reason "cost model: int8 0.011 vs float 0.004 ms"
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Optional

import torch
from torch import fx, nn

from fxq.config.lowering import resolve_lowering
from fxq.debug import provenance
from fxq.equalization import graph as eqg
from fxq.nn import cost_model
from fxq.graph.modes import STATIC
from fxq.nn import fused
from fxq.passes.context import PassContext, attribute_value, modules_of
from fxq.patterns.ops import LINEAR_FUNCTIONS
from fxq.passes.record_values import value_of

REASON_KEY = "fxq_float_reason"
_FUSED_WITH_RELU = (fused.LinearReLU, fused.ConvReLU2d)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    engines = _engines(getattr(ctx.prepare_config, "cost_model", False))
    if engines is None:
        return gm
    modules, calls = modules_of(gm), eqg.call_counts(gm)
    for node in list(gm.graph.nodes):
        if node.op not in ("call_module", "call_function") or ctx.state.modes.get(node.name) != STATIC \
                or not node.args:
            continue
        shape = value_of(node.args[0]).shape if isinstance(node.args[0], fx.Node) else None
        layer = modules[node.target] if node.op == "call_module" else _functional_linear(gm, node)
        if layer is None:
            continue
        engine, cost = _fastest(layer, shape, engines)
        if cost is not None and not cost.int8_is_slower:
            ctx.state.engines[node.name] = engine
            ctx.count(f"layers packed for {engine}")
        elif cost is not None:
            for kept in _unfused(gm, modules, node, calls):
                ctx.state.qconfigs[kept.name], ctx.state.modes[kept.name] = None, None
                kept.meta[REASON_KEY] = f"cost model: {cost.describe()}"
            ctx.count("layers left float by the cost model")
    return gm


def _engines(setting) -> Optional[tuple]:
    """The engines to time (() for every quantized engine), or None when the cost model is off."""
    if setting == "auto" and os.environ.get("FXQ_COST_MODEL", "").lower() in ("off", "0", "false"):
        return None
    if setting in ("auto", True):  # the kernels of the lowering convert_fx will run
        return (cost_model.PLAIN,) if resolve_lowering() == "plain" else ()
    return (setting,) if setting else None


def _functional_linear(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Linear]:
    """A meta-device nn.Linear of the shape of ``F.linear`` / ``aten.linear`` on a weight attribute (exported
    graphs call linears this way), None for any other call."""
    if node.target not in LINEAR_FUNCTIONS or len(node.args) < 2 or not isinstance(node.args[1], fx.Node) \
            or node.args[1].op != "get_attr":
        return None
    weight = attribute_value(gm, node.args[1].target)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    return nn.Linear(weight.shape[1], weight.shape[0], device="meta")


def _unfused(gm: fx.GraphModule, modules: dict, node: fx.Node, calls: Counter) -> list:
    """A float layer runs faster as its parts than as a fused Sequential (one module call less per layer):
    split a fused Linear/Conv + ReLU back into the layer and ``torch.relu``. Returns the nodes left float."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if not isinstance(module, _FUSED_WITH_RELU) or calls[node.target] > 1:
        return [node]  # a fused module called from several places stays fused: splitting it under one call drops
        # the relu of the others
    parent, _, name = node.target.rpartition(".")
    setattr(modules[parent] if parent else gm, name, module[0])
    modules[node.target] = module[0]
    with gm.graph.inserting_after(node):
        relu = gm.graph.call_function(torch.relu, (node,))
    node.replace_all_uses_with(relu, delete_user_cb=lambda user: user is not relu)
    relu.meta.update(node.meta)  # same scope, same output shape
    relu.meta[provenance.HOLDS_KEY], node.meta[provenance.HOLDS_KEY] = node.name, None  # fxq.compare pairs the relu
    return [node, relu]


def _fastest(module: nn.Module, input_shape, engines: tuple) -> tuple:
    """(engine, cost) of the fastest int8 kernel for this layer; (None, None) when it cannot be measured."""
    layer = module[0] if isinstance(module, _FUSED_WITH_RELU) else module
    if input_shape is None:
        return None, None
    if type(layer) is nn.Linear and len(input_shape) >= 1:
        rows = math.prod(input_shape[:-1]) if len(input_shape) > 1 else 1
        return cost_model.fastest_int8("linear", tuple(layer.weight.shape), (rows, input_shape[-1]), (), engines)
    if type(layer) is nn.Conv2d and len(input_shape) == 4 and layer.padding_mode == "zeros" \
            and not isinstance(layer.padding, str):
        geometry = (tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation), layer.groups)
        return cost_model.fastest_int8("conv2d", tuple(layer.weight.shape), tuple(input_shape), geometry, engines)
    return None, None
