"""Lowering table: reference subgraphs (``dequantize -> float op -> quantize``) -> quantized kernels.

Each rewrite gets the :class:`~fxq.patterns.rewrites.Lowering` helpers and the match, and returns True when it
lowered the op. It checks everything first, so returning False leaves the reference graph untouched: the op
then simply runs in float between a dequantize and a quantize.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.graph.modes import STATIC
from fxq.nn import fused, reference
from fxq.nn import quantized as qnn
from fxq.patterns import lowering_modes
from fxq.patterns.functional_weights import float_conv, float_linear
from fxq.patterns.matcher import Match, Table, chain, op_of, row
from fxq.patterns.ops import (ADD, BOUNDED, CAT, STACK, CONV_FUNCTIONS, ELU, HARDSIGMOID, HARDSWISH, LAYER_NORM,
                              LEAKY_RELU, LINEAR_FUNCTIONS, MATMUL, MUL, RELU, SHARES_INPUT_QPARAMS, SIGMOID, SOFTMAX,
                              TANH, TORCH_SPELLING)
from fxq.patterns.rewrites import Lowering

Rewrite = Callable[[Lowering, Match], bool]
kernels = torch.ops.quantized  # called directly, so lowered graphs print, script and pickle like PyTorch AO's


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """A call's argument by position or keyword."""
    if index < len(node.args):
        return node.args[index]
    return node.kwargs.get(name, default)


# ---- modules ----

def weighted_module(quantized_type: type, reference_type: type) -> Rewrite:
    """call_module of a reference (or fused reference) module -> the quantized module at the same path."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node, module = match.anchor, low.modules[match.anchor.target]
        inner = module[0] if isinstance(module, nn.Sequential) else module
        source, out = low.quantized_source(node.args[0]), low.output(match.last)
        if not isinstance(inner, reference_type) or source is None or out is None or len(node.args) != 1:
            return False
        if not _accepts(quantized_type, inner):
            return False
        if low.mode(node) != STATIC:
            return False
        low.set_module(node.target, quantized_type.from_reference(module, out.scale, out.zero_point))
        node.args = (source,)
        low.replace_output(out, _chain_output(low, match, node))
        return True
    return rewrite


def _accepts(quantized_type: type, module: nn.Module) -> bool:
    """The quantized class's own word on whether its kernel can do this module (a user's class may not say)."""
    accepts = getattr(quantized_type, "accepts", None)
    return accepts is None or accepts(module)


def _chain_output(low: Lowering, match: Match, lowered: fx.Node) -> fx.Node:
    """What now yields the chain's quantized output: the lowered op, or for ``op -> bounded activation`` the
    activation, which then clamps the int8 tensor (the op was quantized with the activation's output range, so
    the clamp costs no extra rounding; clamping inside the kernel's 0..255 would not be exact under reduce_range)."""
    if len(match.nodes) > 1 and op_of(match.last, low.modules) in BOUNDED:
        return match.last
    return lowered


def module_from_float(quantized_type: type) -> Rewrite:
    """call_module of a float module with a quantized kernel (norms, activations) -> its quantized module."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        source, out = low.quantized_source(node.args[0]), low.output(match.last)
        float_module = low.modules[node.target]
        if source is None or out is None or len(node.args) != 1 or not _accepts(quantized_type, float_module):
            return False
        module = quantized_type.from_float(float_module, out.scale, out.zero_point)
        low.set_module(node.target, module)
        node.args = (source,)
        low.replace_output(out, node)
        return True
    return rewrite


# ---- functions ----

def binary(kernel: Callable) -> Rewrite:
    """add / mul / matmul of two quantized tensors (optionally followed by relu) -> one quantized kernel."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        sources = low.quantized_sources(list(node.args[:2]))
        out = low.output(match.last)
        if sources is None or out is None or len(node.args) != 2 or node.kwargs:
            return False
        low.replace_output(out, low.call_before(out, "call_function", kernel, (*sources, *out.qparam_nodes)))
        return True
    return rewrite


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def binary_scalar(kernel: Callable) -> Rewrite:
    """``x * 0.25`` / ``1 + x`` on a quantized x (optionally followed by relu) -> kernel(q, scalar).

    As in PyTorch AO, the kernel derives the output qparams from the input's (mul: scale * |c|; add: the zero
    point shifted by c / scale), so the output observer is not used: no requantization, no float round trip.
    """
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        if len(node.args) != 2 or node.kwargs:
            return False
        tensor, scalar = node.args if _is_scalar(node.args[1]) else reversed(node.args)  # add and mul commute
        source, out = low.quantized_source(tensor), low.output(match.last)
        if source is None or out is None or not _is_scalar(scalar):
            return False
        low.replace_output(out, low.call_before(out, "call_function", kernel, (source, scalar)))
        return True
    return rewrite


def list_sources(low: Lowering, node: fx.Node) -> tuple:
    """(quantized sources of a cat / stack's tensor list, its output quantize), either None when there is none."""
    tensors = arg(node, 0, "tensors")
    sources = low.quantized_sources(list(tensors)) if isinstance(tensors, (list, tuple)) else None
    return sources, low.output(node)


def _cat(low: Lowering, match: Match) -> bool:
    node = match.anchor
    dim = arg(node, 1, "dim", 0)
    sources, out = list_sources(low, node)
    if sources is None or out is None:
        return False
    low.replace_output(out, low.call_before(out, "call_function", kernels.cat, (sources, dim, *out.qparam_nodes)))
    return True


def _stack(low: Lowering, match: Match) -> bool:
    """stack of quantized tensors sharing one observer (so one scale): torch.stack runs on them directly."""
    node = match.anchor
    sources, out = list_sources(low, node)
    if sources is None or out is None:
        return False
    node.args = (sources,) + tuple(node.args[1:])
    low.replace_output(out, node)
    return True


def unary(kernel: Callable, extra_args: Callable[[fx.Node], tuple] = lambda node: ()) -> Rewrite:
    """f(x, ...) on a quantized x -> kernel(q, *extra, scale, zero_point) (or *extra after the qparams)."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        source, out = low.quantized_source(node.args[0]), low.output(match.last)
        if source is None or out is None:
            return False
        args = kernel_args(kernel, source, extra_args(node), out)
        low.replace_output(out, low.call_before(out, "call_function", kernel, args))
        return True
    return rewrite


def kernel_args(kernel: Callable, source: fx.Node, extra: tuple, out) -> tuple:
    if kernel is kernels.elu:  # elu takes its alpha after the output qparams
        return (source, *out.qparam_nodes, *extra)
    return (source, *extra, *out.qparam_nodes)


def _softmax_dim(node: fx.Node) -> tuple:
    return (arg(node, 1, "dim"),)


def _layer_norm_args(node: fx.Node) -> tuple:
    return (list(arg(node, 1, "normalized_shape")), arg(node, 2, "weight"), arg(node, 3, "bias"),
            arg(node, 4, "eps", 1e-5))


def in_quantized_domain(low: Lowering, match: Match) -> bool:
    """Ops that keep their input's qparams (or have fixed ones) run on the quantized tensor as they are."""
    node = match.anchor
    source, out = low.quantized_source(node.args[0]) if node.args else None, low.output(match.last)
    if source is None or out is None or arg(node, 2, "mode", "constant") != "constant" and node.target is F.pad:
        return False
    node.args = (source,) + tuple(node.args[1:])
    low.replace_output(out, match.last)
    return True


_SHAPE_ATTRIBUTES = ("shape", "ndim", "device")


def read_shape_from_quantized(low: Lowering, match: Match) -> bool:
    """x.shape / x.size() / x.dim() of ``dequantize(q)`` reads q instead: no dequantize just to learn a shape."""
    node = match.anchor
    source = low.quantized_source(node.args[0]) if node.args else None
    is_attribute = node.target is getattr
    if source is None or (is_attribute and (len(node.args) != 2 or node.args[1] not in _SHAPE_ATTRIBUTES)):
        return False
    node.replace_input_with(node.args[0], source)
    return True


def functional_weighted(build_float: Callable, quantized_plain: type, quantized_relu: type) -> Rewrite:
    """F.linear / F.conv on a quantized input and a quantize-dequantized weight attribute -> quantized module."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        source, out = low.quantized_source(node.args[0]), low.output(match.last)
        float_module, weight_qparams = build_float(low, node)
        if source is None or out is None or float_module is None or low.mode(node) != STATIC:
            return False
        ref = _REFERENCE[type(float_module)].from_float(float_module, weight_qparams)
        ends_in_relu = len(match.nodes) > 1 and op_of(match.last, low.modules) in RELU
        quantized_type = quantized_relu if ends_in_relu else quantized_plain
        name = low.add_module(node.name + "_quantized", quantized_type.from_reference(ref, out.scale, out.zero_point))
        with low.gm.graph.inserting_before(node):
            call = low.gm.graph.call_module(name, (source,))
        node.replace_all_uses_with(call)
        low.replace_output(out, _chain_output(low, match, call))
        return True
    return rewrite


_REFERENCE = {nn.Linear: reference.Linear, nn.Conv1d: reference.Conv1d, nn.Conv2d: reference.Conv2d,
              nn.Conv3d: reference.Conv3d}
_QUANTIZED_CONV = {F.conv1d: (qnn.Conv1d, qnn.ConvReLU1d), F.conv2d: (qnn.Conv2d, qnn.ConvReLU2d),
                   F.conv3d: (qnn.Conv3d, qnn.ConvReLU3d)}


def _quantized_conv(conv) -> tuple:
    """(plain, relu) quantized conv classes of a conv function, in either spelling (F.conv2d, aten.conv2d)."""
    return _QUANTIZED_CONV[TORCH_SPELLING.get(conv, conv)]


def _rows():
    for ref, plain in ((reference.Linear, qnn.Linear), (reference.Conv1d, qnn.Conv1d), (reference.Conv2d, qnn.Conv2d),
                       (reference.Conv3d, qnn.Conv3d)):                             # dq -> conv -> relu6 -> q
        yield row(chain(ref, BOUNDED), weighted_module(plain, ref))
    yield row(chain(LINEAR_FUNCTIONS, BOUNDED), functional_weighted(float_linear, qnn.Linear, qnn.LinearReLU))
    for conv in CONV_FUNCTIONS:
        yield row(chain(conv, BOUNDED), functional_weighted(float_conv, *_quantized_conv(conv)))
    yield row(reference.Linear, weighted_module(qnn.Linear, reference.Linear))      # dq -> linear -> q
    yield row(fused.LinearReLU, weighted_module(qnn.LinearReLU, reference.Linear))  # dq -> linear+relu -> q
    for float_conv_type, ref, plain, relu in (
            (fused.ConvReLU1d, reference.Conv1d, qnn.Conv1d, qnn.ConvReLU1d),
            (fused.ConvReLU2d, reference.Conv2d, qnn.Conv2d, qnn.ConvReLU2d),
            (fused.ConvReLU3d, reference.Conv3d, qnn.Conv3d, qnn.ConvReLU3d)):
        yield row(ref, weighted_module(plain, ref))                                 # dq -> conv -> q
        yield row(float_conv_type, weighted_module(relu, ref))                      # dq -> conv+relu -> q
    for ref, plain in ((reference.ConvTranspose1d, qnn.ConvTranspose1d),
                       (reference.ConvTranspose2d, qnn.ConvTranspose2d),
                       (reference.ConvTranspose3d, qnn.ConvTranspose3d)):
        yield row(ref, weighted_module(plain, ref))                                 # dq -> conv_transpose -> q
    for float_type, quantized_type in ((nn.BatchNorm2d, qnn.BatchNorm2d), (nn.BatchNorm3d, qnn.BatchNorm3d),
                                       (fused.BNReLU2d, qnn.BNReLU2d), (fused.BNReLU3d, qnn.BNReLU3d),
                                       (nn.LayerNorm, qnn.LayerNorm), (nn.Hardswish, qnn.Hardswish),
                                       (nn.ELU, qnn.ELU), (nn.LeakyReLU, qnn.LeakyReLU), (nn.Softmax, qnn.Softmax),
                                       (nn.InstanceNorm1d, qnn.InstanceNorm1d), (nn.InstanceNorm2d, qnn.InstanceNorm2d),
                                       (nn.InstanceNorm3d, qnn.InstanceNorm3d), (nn.GroupNorm, qnn.GroupNorm),
                                       (nn.PReLU, qnn.PReLU)):
        yield row(float_type, module_from_float(quantized_type))                     # dq -> norm/act -> q
    yield row(chain(ADD, RELU), binary(kernels.add_relu))                                 # dq, dq -> add -> relu -> q
    yield row(chain(MUL, RELU), binary(kernels.mul_relu))
    yield row(ADD, binary(kernels.add))                                                   # dq, dq -> add -> q
    yield row(MUL, binary(kernels.mul))
    yield row(chain(ADD, RELU), binary_scalar(kernels.add_relu))                          # dq -> add 1 -> relu -> q
    yield row(chain(MUL, RELU), binary_scalar(kernels.mul_relu))
    yield row(ADD, binary_scalar(kernels.add))                                            # dq -> add 1 -> q
    yield row(MUL, binary_scalar(kernels.mul))                                            # dq -> mul 0.25 -> q
    yield row(MATMUL, binary(kernels.matmul))                                             # dq, dq -> matmul -> q
    yield row(CAT, _cat)                                                             # [dq...] -> cat -> q
    yield row(STACK, _stack)                                                         # [dq...] -> stack -> q
    yield row(SOFTMAX[1:], unary(kernels.softmax, _softmax_dim))                          # dq -> softmax -> q
    yield row(LAYER_NORM[1:], unary(kernels.layer_norm, _layer_norm_args))
    yield row(HARDSWISH[1:], unary(kernels.hardswish))
    yield row(ELU[1:], unary(kernels.elu, lambda n: (arg(n, 1, "alpha", 1.0),)))
    yield row(LEAKY_RELU[1:], unary(kernels.leaky_relu, lambda n: (arg(n, 1, "negative_slope", 0.01), False)))
    yield row(chain(LINEAR_FUNCTIONS, RELU), functional_weighted(float_linear, qnn.Linear, qnn.LinearReLU))
    yield row(LINEAR_FUNCTIONS, functional_weighted(float_linear, qnn.Linear, qnn.LinearReLU))  # dq, dq(w) -> linear -> q
    for conv in CONV_FUNCTIONS:
        plain, relu = _quantized_conv(conv)
        yield row(chain(conv, RELU), functional_weighted(float_conv, plain, relu))
        yield row(conv, functional_weighted(float_conv, plain, relu))
    yield row((getattr, "size", "dim", "numel"), read_shape_from_quantized)          # dq(q).shape -> q.shape
    yield row(SHARES_INPUT_QPARAMS + SIGMOID + HARDSIGMOID + TANH, in_quantized_domain)  # dq -> maxpool -> q


LOWERING = Table("lowering", list(lowering_modes.rows()) + list(_rows()))
