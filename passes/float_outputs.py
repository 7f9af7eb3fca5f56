"""Linears under a FloatOutputQConfig keep their output in float: ``quantize -> int8 Linear -> dequantize`` becomes
one LinearFloatOutput call on the float input (the kernel quantizes it and returns fp32, with no output rounding).

Runs after lower. A linear qualifies when its qconfig is a FloatOutputQConfig, it lowered to a plain
fxq.nn.quantized.Linear, its input comes from a quantize_per_tensor node with constant qparams or from another
int8 layer, every reader of its output dequantizes it (or reads only its shape), and this engine's kernel supports
it. Anything else stays as lowered.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import fx

from fxq.config.qconfig import FloatOutputQConfig
from fxq.debug.provenance import ORIGIN_KEY
from fxq.nn.quantized import Linear, LinearFloatOutput
from fxq.nn.quantized._base import QuantizedModule
from fxq.passes.context import PassContext, attribute_value, eliminate_dead_code, modules_of


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if not any(isinstance(q, FloatOutputQConfig) for q in ctx.state.qconfigs.values()):
        return gm
    eliminate_dead_code(gm)  # lower leaves the nodes it replaced for cleanup: they must not count as readers
    modules = modules_of(gm)
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    for node in list(gm.graph.nodes):
        if _qualifies(node, modules, ctx) and calls[node.target] == 1:  # a reused module serves other calls too
            _rewrite(gm, node, modules[node.target], modules, ctx)
    eliminate_dead_code(gm)
    return gm


def _qualifies(node: fx.Node, modules: dict, ctx: PassContext) -> bool:
    if node.op != "call_module" or type(modules.get(node.target)) is not Linear:
        return False
    if not isinstance(_qconfig_of(node, ctx), FloatOutputQConfig):
        return False
    if not (_from_quantize(node.args[0]) or _from_quantized_module(node.args[0], modules)):
        return False
    readers = [user for user in node.users if not _reads_shape_only(user)]
    return bool(readers) and all(user.op == "call_method" and user.target == "dequantize" for user in readers)


def _qconfig_of(node: fx.Node, ctx: PassContext):
    """The qconfig of the op ``node`` computes: a functional linear (torch.export's aten.linear) lowers to a new
    ``linear_quantized_0`` module call, which provenance stamps with the name of the op it replaced."""
    return ctx.state.qconfigs.get(node.name) or ctx.state.qconfigs.get(node.meta.get(ORIGIN_KEY))


def _from_quantize(source) -> bool:
    """``quantize_per_tensor(x, scale, zero_point)`` with qparams from buffers."""
    return (isinstance(source, fx.Node) and source.target is torch.quantize_per_tensor
            and all(isinstance(arg, fx.Node) and arg.op == "get_attr" for arg in source.args[1:3]))


def _from_quantized_module(source, modules: dict) -> bool:
    """The int8 output of a module with fixed output qparams (another int8 layer)."""
    return isinstance(source, fx.Node) and source.op == "call_module" and \
        isinstance(modules.get(source.target), QuantizedModule)


def _reads_shape_only(user: fx.Node) -> bool:
    """``y.shape`` / ``y.size()`` / ``y.dim()``: the same on the fp32 output as on the int8 one."""
    if user.op == "call_function" and user.target is getattr:
        return user.args[1] in ("shape", "ndim")
    return user.op == "call_method" and user.target in ("size", "dim")


def _rewrite(gm: fx.GraphModule, node: fx.Node, linear: Linear, modules: dict, ctx: PassContext) -> None:
    source = node.args[0]
    if _from_quantize(source):
        scale, zero_point = (float(attribute_value(gm, arg.target)) for arg in source.args[1:3])
    else:
        scale, zero_point = modules[source.target].scale, modules[source.target].zero_point
    module = LinearFloatOutput.from_linear(linear, scale, int(zero_point))
    if not module.supported():
        return
    gm.set_submodule(node.target, module)
    if _from_quantize(source):
        node.replace_input_with(source, source.args[0])
    else:  # the kernel quantizes its float input again with the same qparams: exactly the int8 values it had
        with gm.graph.inserting_before(node):
            node.replace_input_with(source, gm.graph.call_method("dequantize", (source,)))
    for user in list(node.users):
        if not _reads_shape_only(user):
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)
    ctx.count("linears with float outputs")
