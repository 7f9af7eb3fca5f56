"""Fold what follows a plain int8 kernel into the kernel: activations, residual adds and float outputs.

Requires: the plain values of plain_values. Guarantees, for a plain Linear / Conv module whose uint8 output only
one dequantize reads:
- ``kernel -> dequantize -> activation [-> quantize]`` => the kernel with the activation as its post-op (relu,
  gelu, silu, hardswish, tanh, leaky_relu, relu6 / hardtanh as the kernel supports them), writing the quantize's
  uint8 output, or fp32 where the activation's readers are float. One rounding less than the unfused graph;
- ``conv / linear -> dequantize -> add(., dequantize(u8)) [-> relu] -> quantize`` => one kernel with a binary
  ``sum`` post-op adding the other uint8 tensor (fxq.nn.plain's ConvBinary / LinearBinary);
- ``kernel -> dequantize`` with only float readers => the kernel returns fp32 (the dequantize is fused);
- ``quantize -> dequantize`` with no int8 reader between => the float value, unrounded.
Position: after plain_values, last but the dead-code cleanup.
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.debug import provenance
from fxq.nn import plain
from fxq.passes.cleanup import remove_dead
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.ops import aten
from fxq.patterns.plain_lowering import MOVES_VALUES, PLAIN_QPARAMS

_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.SiLU: "swish", nn.Hardswish: "hardswish", nn.Tanh: "tanh",
                       nn.GELU: "gelu", nn.LeakyReLU: "leaky_relu", nn.ReLU6: "hardtanh", nn.Hardtanh: "hardtanh"}
_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", aten.relu.default: "relu", F.silu: "swish",
                         aten.silu.default: "swish", F.hardswish: "hardswish", aten.hardswish.default: "hardswish",
                         torch.tanh: "tanh", F.tanh: "tanh", aten.tanh.default: "tanh", F.gelu: "gelu",
                         aten.gelu.default: "gelu", F.leaky_relu: "leaky_relu", aten.leaky_relu.default: "leaky_relu",
                         F.relu6: "hardtanh", F.hardtanh: "hardtanh", aten.hardtanh.default: "hardtanh",
                         "relu": "relu", "tanh": "tanh"}
_ADD = (operator.add, torch.add, aten.add.Tensor)
# ops of the plain table's MOVES_VALUES that compute the same on float as on uint8 (not the uint8 max pool kernel,
# nor the pad whose value became a zero point)
_SAME_ON_FLOAT = frozenset(op for op in MOVES_VALUES if not isinstance(op, type))
_BINARY = {plain.Conv1d: plain.ConvBinary1d, plain.Conv2d: plain.ConvBinary2d, plain.Linear: plain.LinearBinary}
_BINARY_TYPES = tuple(_BINARY.values())


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if ctx.lowering != "plain":
        return gm
    if ctx.convert_config.keep_roundings:
        remove_dead(gm, ctx)
        return gm
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not plain.reads_uint8(modules.get(node.target)):
            continue
        module = modules[node.target]
        if _fuse_residual_add(node, module, modules):
            ctx.count("residual adds fused")
            module = node.graph.owning_module.get_submodule(node.target)  # the binary kernel now
        elif _fuse_activation(node, module, modules):
            ctx.count("activations fused")
        if _fuse_float_output(node, module):
            ctx.count("float outputs fused")
    for node in list(gm.graph.nodes):
        if _is_quantize(node) and _drop_rounding(node):
            ctx.count("roundings no int8 op reads removed")
    remove_dead(gm, ctx)
    ctx.count("residual sums in place", _sum_in_place(gm, modules_of(gm)))
    return gm


def _sum_in_place(gm: fx.GraphModule, modules: dict) -> int:
    """Let a residual kernel sum into its uint8 residual (no copy) where that tensor is the kernel's to overwrite:
    made fresh by an int8 kernel, a quantize or the uint8 max pool (not a view of something else), not the
    kernel's own input, and read before the kernel only by ops that make new tensors (ResNet's identity branch:
    read by the block's first conv, then summed into)."""
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    count = 0
    for node in gm.graph.nodes:
        module = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(module, _BINARY_TYPES) or len(node.args) != 2:
            continue
        residual = node.args[1]
        readers = [user for user in residual.users if user is not node]
        if node.args[0] is not residual and _fresh_uint8(residual, modules) \
                and all(order[user] < order[node] and _copies(user, modules) for user in readers):
            module.sums_in_place = True
            count += 1
    return count


def _copies(reader: fx.Node, modules: dict) -> bool:
    """A reader whose output is a new tensor, not a view that could be read after the residual is overwritten."""
    return _fresh_uint8(reader, modules) or _is_dequantize(reader)


def _fresh_uint8(node, modules: dict) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":  # a residual kernel's output is its own residual tensor, which it owned
        module = modules.get(node.target)
        return plain.reads_uint8(module) or isinstance(module, _BINARY_TYPES)
    return _is_quantize(node) or (node.op == "call_function" and node.target is torch.ops.quantized.max_pool2d)


def _only_dequantize(node: fx.Node) -> Optional[fx.Node]:
    """The one fxq dequantize reading ``node`` (and nothing else reads it), else None."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    return user if _is_dequantize(user) else None


def _is_dequantize(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is plain.ops.DEQUANTIZE


def _is_quantize(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is plain.ops.QUANTIZE


def _activation(node: fx.Node, modules: dict) -> Optional[tuple]:
    """(post-op name, args, algorithm) of an activation node, None for anything else."""
    if node.op == "call_module":
        module = modules[node.target]
        name = _ACTIVATION_MODULES.get(type(module))
        if name is None:
            return None
        return name, _module_args(module), getattr(module, "approximate", "none") if name == "gelu" else ""
    if node.op not in ("call_function", "call_method") or node.target not in _ACTIVATION_FUNCTIONS:
        return None
    name = _ACTIVATION_FUNCTIONS[node.target]
    extra = list(node.args[1:])
    if name == "gelu":
        return name, (), node.kwargs.get("approximate", extra[0] if extra else "none")
    if name == "leaky_relu":
        return name, (float(node.kwargs.get("negative_slope", extra[0] if extra else 0.01)),), ""
    if name == "hardtanh" and node.target is not F.relu6:
        bounds = (node.kwargs.get("min_val", extra[0] if extra else -1.0),
                  node.kwargs.get("max_val", extra[1] if len(extra) > 1 else 1.0))
        return name, tuple(float(b) for b in bounds), ""
    if name == "hardtanh":
        return name, (0.0, 6.0), ""
    return name, (), ""


def _module_args(module: nn.Module) -> tuple:
    if isinstance(module, nn.LeakyReLU):
        return (float(module.negative_slope),)
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    return ()


def _fuse_activation(node: fx.Node, module: nn.Module, modules: dict) -> bool:
    """kernel -> dequantize -> activation [-> quantize]  =>  kernel with the activation as its post-op."""
    dequantize = _only_dequantize(node)
    if dequantize is None or module.post_op != "none" or len(dequantize.users) != 1:
        return False
    (activation,) = dequantize.users
    post_op = _activation(activation, modules)
    if post_op is None or activation.args[0] is not dequantize or not _kernel_fuses(module, *post_op):
        return False
    module.post_op, module.post_op_args, module.post_op_algorithm = post_op
    _now_holds(node, activation)
    quantizes = [u for u in activation.users if _is_quantize(u)]
    if len(quantizes) == 1 and len(activation.users) == 1:  # one uint8 reader: the kernel writes its qparams
        (quantize,) = quantizes
        module.output_scale, module.output_zero_point = _qparam_values(quantize)
        quantize.replace_all_uses_with(node)
    else:  # float readers: the kernel returns fp32
        module.output_scale, module.output_zero_point = None, 0
        activation.replace_all_uses_with(node)
    return True


def _kernel_fuses(module: nn.Module, name: str, args: tuple, algorithm: str) -> bool:
    """Whether the module's kernel has this post-op (the fused GELU is erf's: the tanh form is slow on AVX2)."""
    return module._post_ops.get(name) == len(args) and algorithm in ("", "none")


def _fuse_float_output(node: fx.Node, module: nn.Module) -> bool:
    """kernel -> dequantize with only float readers  =>  the kernel returns fp32."""
    if module.output_scale is None or not node.users or not all(_is_dequantize(u) for u in node.users):
        return False
    if module.post_op == "none" and module.output_zero_point == 0:
        # The lowering may have folded a ReLU into the uint8 output's saturation at zero (a kernel without a relu
        # post-op: Conv3d); an fp32 output would drop it (video_conv3d in tools/sweep.py: -0.7 dB after the stem).
        return False
    module.output_scale, module.output_zero_point = None, 0
    for dequantize in list(node.users):
        dequantize.replace_all_uses_with(node)
    return True


def _drop_rounding(quantize: fx.Node) -> bool:
    """A uint8 value no int8 kernel reads: the quantize and the dequantizes only round it, so the readers take the
    float value (the plain lowering rounds where an int8 op reads a value, nowhere else). Shape ops, dropout and
    the like between them run on the float value as they ran on the uint8 one."""
    region, dequantizes = _region_read_in_float(quantize)
    if region is None or not dequantizes:
        return False
    for dequantize in dequantizes:
        dequantize.replace_all_uses_with(dequantize.args[0])
    quantize.replace_all_uses_with(quantize.args[0])
    for node in region:
        node.meta.pop(PLAIN_QPARAMS, None)
    return True


def _region_read_in_float(quantize: fx.Node) -> tuple:
    """(one-input ops between ``quantize`` and its dequantizes, the dequantizes), or (None, None) when anything
    else reads the uint8 value: a kernel, the custom-module boundary, an op rewritten for uint8 (max pool, pad)."""
    region, dequantizes, frontier = [], [], list(quantize.users)
    while frontier:
        node = frontier.pop()
        if _is_dequantize(node):
            dequantizes.append(node)
        elif PLAIN_QPARAMS in node.meta and node.op != "call_module" and node.target in _SAME_ON_FLOAT \
                and [a for a in node.all_input_nodes if a.op != "get_attr"] == [node.args[0]]:
            region.append(node)
            frontier.extend(node.users)
        else:
            return None, None
    return region, dequantizes


def _fuse_residual_add(node: fx.Node, module: nn.Module, modules: dict) -> bool:
    """conv -> dequantize -> add(., dequantize(other)) [-> relu] -> quantize  =>  conv accumulating into other."""
    dequantize = _only_dequantize(node)
    binary_type = _BINARY.get(type(module))
    if dequantize is None or binary_type is None or module.post_op != "none" or len(dequantize.users) != 1:
        return False
    (add,) = dequantize.users
    if add.op != "call_function" or add.target not in _ADD or len(add.args) != 2 or add.kwargs:
        return False
    other_dequantize = add.args[1] if add.args[0] is dequantize else add.args[0]
    if not isinstance(other_dequantize, fx.Node) or not _is_dequantize(other_dequantize):
        return False
    last, relu = _after_add(add, modules)
    quantize = next(iter(last.users)) if len(last.users) == 1 else None
    if quantize is None or not _is_quantize(quantize):
        return False
    binary = _as_binary(module, binary_type, _qparam_values(quantize), _qparam_values(other_dequantize), relu)
    _set_module(node.graph.owning_module, node.target, binary)
    quantize.replace_all_uses_with(node)
    _now_holds(node, last)
    add.prepend(node)  # the kernel now also reads ``other``, which may be computed after it
    node.args = (node.args[0], other_dequantize.args[0])
    for dead in (quantize, last, add, dequantize) if relu else (quantize, add, dequantize):  # they read the kernel
        node.graph.erase_node(dead)  # from before its new place: out now, or the graph is not in order
    return True


def _as_binary(module: nn.Module, binary_type: type, output: tuple, other: tuple, relu: bool) -> nn.Module:
    """The kernel of ``module`` with a residual ``sum`` post-op: same weights, the add's output qparams."""
    post_op = "relu" if relu else "none"
    if isinstance(module, plain.Linear):
        binary = binary_type(module.in_features, module.out_features, module.bias is not None, module.input_scale,
                             module.input_zero_point, *output, post_op, other_scale=other[0], other_zero_point=other[1])
    else:
        binary = binary_type(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                             module.padding, module.dilation, module.groups, module.bias is not None,
                             module.input_scale, module.input_zero_point, *output, post_op, accum_scale=other[0],
                             accum_zero_point=other[1])
    binary._set_weight(module.weight, module.weight_scale, module.weight_zero_point, module.bias)
    return binary


def _set_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _after_add(add: fx.Node, modules: dict) -> tuple:
    """(last node of add [-> relu], whether a relu follows)."""
    if len(add.users) == 1:
        (user,) = add.users
        if _activation(user, modules) == ("relu", (), "") and user.args[0] is add:
            return user, True
    return add, False


def _now_holds(kernel: fx.Node, fused: fx.Node) -> None:
    """The kernel's node now yields ``fused``'s output: fxq.compare pairs it with that op (fxq.debug.provenance)."""
    for key in (provenance.ORIGIN_KEY, provenance.QCONFIG_KEY):
        if key in fused.meta:
            kernel.meta[key] = fused.meta[key]


def _qparam_values(node: fx.Node) -> tuple:
    """(scale, zero point) numbers of an fxq quantize / dequantize node (0-dim buffers behind get_attr)."""
    gm = node.graph.owning_module
    return float(gm.get_buffer(node.args[1].target)), int(gm.get_buffer(node.args[2].target))

