"""Plain lowering table: reference subgraphs -> oneDNN int8 kernels on plain uint8 tensors (fxq.nn.plain).

The rows mirror lowering.py's, for the kernels that take plain tensors: Linear and Conv (with the activation the
chain ends in fused as the kernel's post-op), the ops that only move uint8 values around (they keep their input's
scale and zero point), and cat of inputs sharing one scale. Everything else stays ``dequantize -> float op ->
quantize``; passes/plain_values.py then spells those as fxq's own quantize / dequantize ops and passes/plain_fuse.py
folds activations, residual adds and float outputs into the kernels.

A lowered node records the scale and zero point of the uint8 value it yields in ``node.meta[PLAIN_QPARAMS]``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.graph.modes import DYNAMIC, STATIC
from fxq.nn import fused, plain, reference, reference_recurrent
from fxq.nn.plain._base import exact_with_full_range_inputs
from fxq.patterns import lowering_modes
from fxq.patterns.functional_weights import float_conv, float_linear
from fxq.patterns.lowering import arg, list_sources, read_shape_from_quantized
from fxq.patterns.matcher import Match, Table, chain, op_of, row
from fxq.patterns.ops import (BOUNDED, CAT, CONV_FUNCTIONS, LINEAR_FUNCTIONS, RELU, SHARES_INPUT_QPARAMS,
                              TORCH_SPELLING, aten)
from fxq.patterns.rewrites import Lowering

PLAIN_QPARAMS = "fxq_plain_qparams"  # node.meta: (scale, zero_point) of the uint8 value the node yields
Rewrite = Callable[[Lowering, Match], bool]


def input_qparams(low: Lowering, source: fx.Node) -> Optional[tuple]:
    """(scale, zero_point) of a uint8 value: a quantize_per_tensor to quint8, or a node this table lowered."""
    if PLAIN_QPARAMS in source.meta:
        return source.meta[PLAIN_QPARAMS]
    if source.op == "call_function" and source.target is torch.quantize_per_tensor and source.args[3] == torch.quint8:
        scale, zero_point = low.attribute(source.args[1]), low.attribute(source.args[2])
        if scale is not None and zero_point is not None:
            return float(scale), int(zero_point)
    return None


def _post_op(low: Lowering, match: Match, module: Optional[nn.Module] = None) -> tuple:
    """(name, args) of the activation the kernel fuses: a fused ReLU module, or the chain's last op."""
    if isinstance(module, _FUSED):
        return ("relu", ()) if len(match.nodes) == 1 else ("", ())  # relu then a clamp: not one post-op
    if len(match.nodes) == 1:
        return "none", ()
    last = match.last
    op = op_of(last, low.modules)
    if op in RELU:
        return "relu", ()
    if op in BOUNDED:
        return "hardtanh", _bounds(low, last)
    return "none", ()


def _full_range_input(low: Lowering, node: fx.Node) -> bool:
    """Whether the layer's uint8 input uses more than 7 bits. The default x86 qconfigs keep activations to 7 bits
    (no pair of products can saturate then); the transformer mapping and qnnpack's qconfigs do not."""
    qconfig = low.qconfig(node)
    activation = qconfig.activation() if qconfig is not None else None
    return activation is None or activation.quant_max - activation.quant_min > 127


def _kernel_post_op(plain_type: type, name: str, args: tuple, output_zero_point: int) -> tuple:
    """The post-op the kernel runs for ``name``; (None, ()) when it has none that computes it."""
    if name in plain_type._post_ops:
        return name, args
    if name == "relu" and output_zero_point == 0:  # the uint8 output saturates at zero: that is the relu
        return "none", ()
    return None, ()


def _bounds(low: Lowering, node: fx.Node) -> tuple:
    """(min, max) of relu6 / hardtanh / clamp, as a module or a call."""
    if node.op == "call_module":
        module = low.modules[node.target]
        return (0.0, 6.0) if isinstance(module, nn.ReLU6) else (float(module.min_val), float(module.max_val))
    target = TORCH_SPELLING.get(node.target, node.target)
    if target is F.relu6:
        return 0.0, 6.0
    if target in (F.hardtanh, aten.hardtanh.default):
        return float(arg(node, 1, "min_val", -1.0)), float(arg(node, 2, "max_val", 1.0))
    low_bound, high_bound = arg(node, 1, "min"), arg(node, 2, "max")
    if not all(isinstance(v, (int, float)) for v in (low_bound, high_bound)):
        return ()  # a clamp with a tensor or a missing bound: the caller keeps it out of the kernel
    return float(low_bound), float(high_bound)


def _lower_to(low: Lowering, match: Match, node: fx.Node, ref: nn.Module, build: Callable) -> Optional[fx.Node]:
    """Build the plain module for ``ref`` between node's quantized input and the match's output quantize; returns
    the node that now yields the uint8 output, or None (graph untouched) when a check fails."""
    source, out = low.quantized_source(node.args[0]), low.output(match.last)
    if source is None or out is None or out.dtype != torch.quint8 or low.mode(node) != STATIC:
        return None
    in_qparams = input_qparams(low, source)
    post_op, post_args = _post_op(low, match, low.modules.get(node.target) if node.op == "call_module" else None)
    plain_type = _PLAIN_TYPE.get(type(ref))
    if in_qparams is None or plain_type is None or not post_op or (post_op == "hardtanh" and not post_args) \
            or not plain_type.accepts(ref):
        return None
    post_op, post_args = _kernel_post_op(plain_type, post_op, post_args, out.zero_point)
    if post_op is None:
        return None
    if _full_range_input(low, node):
        ref = exact_with_full_range_inputs(ref)
    return build(plain_type.from_reference(ref, *in_qparams, out.scale, out.zero_point, post_op, post_args), source,
                 out)


def weighted_module(low: Lowering, match: Match) -> bool:
    """dq -> reference (or fused) Linear / Conv [-> relu / relu6 / hardtanh] -> q  =>  one plain module call."""
    node = match.anchor
    module = low.modules[node.target]
    ref = module[0] if isinstance(module, nn.Sequential) else module
    if len(node.args) != 1 or node.kwargs:
        return False

    def build(plain_module: nn.Module, source: fx.Node, out) -> fx.Node:
        low.set_module(node.target, plain_module)
        node.args = (source,)
        return _yield(low, out, node)
    return _lower_to(low, match, node, ref, build) is not None


def functional_weighted(build_float: Callable) -> Rewrite:
    """F.linear / F.conv on a quantized input and a quantize-dequantized weight attribute -> a plain module."""
    def rewrite(low: Lowering, match: Match) -> bool:
        node = match.anchor
        float_module, weight_qparams = build_float(low, node)
        if float_module is None:
            return False
        ref = _REFERENCE[type(float_module)].from_float(float_module, weight_qparams)

        def build(plain_module: nn.Module, source: fx.Node, out) -> fx.Node:
            name = low.add_module(node.name + "_quantized", plain_module)
            with low.gm.graph.inserting_before(node):
                call = low.gm.graph.call_module(name, (source,))
            call.meta.update(node.meta)
            node.replace_all_uses_with(call)
            return _yield(low, out, call)
        return _lower_to(low, match, node, ref, build) is not None
    return rewrite


def _yield(low: Lowering, out, node: fx.Node) -> fx.Node:
    """``node`` now yields the uint8 value the quantize node ``out`` made."""
    low.replace_output(out, node)
    node.meta[PLAIN_QPARAMS] = (out.scale, out.zero_point)
    return node


def dynamic_linear(low: Lowering, match: Match) -> bool:
    """A dynamic-mode reference Linear -> a plain dynamic Linear (int8 weight, activations quantized per call)."""
    node = match.anchor
    module = low.modules[node.target]
    linear, relu = (module[0], True) if isinstance(module, fused.LinearReLU) else (module, False)
    if low.mode(node) != DYNAMIC or not isinstance(linear, reference.Linear) or not plain.DynamicLinear.accepts(linear):
        return False
    dynamic = plain.DynamicLinear.from_reference(linear, per_token=_per_token(low, node))
    low.set_module(node.target, nn.Sequential(dynamic, nn.ReLU()) if relu else dynamic)
    return True


def dynamic_functional_linear(low: Lowering, match: Match) -> bool:
    """F.linear(x, dequantize(quantize(w)), b) in dynamic mode (torch.export's linears) -> a plain dynamic Linear
    module called on x."""
    node = match.anchor
    if low.mode(node) != DYNAMIC:
        return False
    float_module, weight_qparams = float_linear(low, node)
    if float_module is None:
        return False
    linear = reference.Linear.from_float(float_module, weight_qparams)
    if not plain.DynamicLinear.accepts(linear):
        return False
    name = low.add_module(node.name + "_quantized",
                          plain.DynamicLinear.from_reference(linear, per_token=_per_token(low, node)))
    with low.gm.graph.inserting_before(node):
        call = low.gm.graph.call_module(name, (node.args[0],))
    call.meta.update(node.meta)
    node.replace_all_uses_with(call)
    return True


_RECURRENT = {reference_recurrent.LSTM: plain.recurrent.LSTM, reference_recurrent.GRU: plain.recurrent.GRU}


def dynamic_recurrent(low: Lowering, match: Match) -> bool:
    """A dynamic-mode reference LSTM / GRU -> plain int8 projections around a float recurrence (no qint8 weight)."""
    node = match.anchor
    module = low.modules[node.target]
    if low.mode(node) != DYNAMIC or type(module) not in _RECURRENT:
        return False
    low.set_module(node.target, _RECURRENT[type(module)].from_reference(module))
    return True


def _per_token(low: Lowering, node: fx.Node) -> bool:
    return bool(getattr(low.qconfig(node).activation(), "per_token", False))


# ---- ops that move uint8 values without changing them ----

MAX_POOL_2D = (nn.MaxPool2d, F.max_pool2d, aten.max_pool2d.default)
# Ops of SHARES_INPUT_QPARAMS left out of MOVES_VALUES: those that compute on values (pools that average, clamps,
# relu: on raw uint8 they would ignore the zero point or truncate, so they run in float), those with rows of their
# own (padding, resizing, 2-d max pool), and 1-d / 3-d max pools (torch has no uint8 1-d kernel, and its 3-d one
# fails on the channels-last tensors 3-d convs return; they run in float).
_COMPUTES_ON_VALUES = {
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, torch.mean, "mean", torch.clamp, "clamp", nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh,
    aten.avg_pool1d.default, aten.avg_pool2d.default, aten.avg_pool3d.default, aten.adaptive_avg_pool1d.default,
    aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool3d.default, aten.mean.dim, aten.clamp.default,
    aten.hardtanh.default, F.pad, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, F.interpolate, nn.Upsample, *RELU, *MAX_POOL_2D, nn.MaxPool1d, F.max_pool1d,
    aten.max_pool1d.default, nn.MaxPool3d, F.max_pool3d, aten.max_pool3d.default}
MOVES_VALUES = tuple(op for op in SHARES_INPUT_QPARAMS if op not in _COMPUTES_ON_VALUES)


def _same_qparams(low: Lowering, match: Match) -> Optional[tuple]:
    """(source, output quantize) when the op's output is quantized with its input's scale and zero point."""
    node = match.anchor
    source = low.quantized_source(node.args[0]) if node.args else None
    out = low.output(match.last)
    if source is None or out is None:
        return None
    qparams = input_qparams(low, source)
    if qparams is None or qparams != (out.scale, out.zero_point):
        return None
    return source, out


def moves_values(low: Lowering, match: Match) -> bool:
    """dq -> reshape / max pool / dropout ... -> q with the same qparams  =>  the op runs on the uint8 tensor."""
    found = _same_qparams(low, match)
    if found is None:
        return False
    source, out = found
    node = match.anchor
    node.args = (source,) + tuple(node.args[1:])
    _yield(low, out, match.last)
    return True


def _pair(value) -> list:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _pool_arguments(low: Lowering, node: fx.Node) -> Optional[tuple]:
    """(kernel, stride, padding, dilation, ceil_mode) of a 2-d max pool module or call; None with indices."""
    if node.op == "call_module":
        pool = low.modules[node.target]
        if pool.return_indices:
            return None
        kernel, stride, padding, dilation, ceil = (pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                                   pool.ceil_mode)
    else:
        if arg(node, 6, "return_indices", False):
            return None
        kernel, stride, padding = arg(node, 1, "kernel_size"), arg(node, 2, "stride"), arg(node, 3, "padding", 0)
        dilation, ceil = arg(node, 4, "dilation", 1), arg(node, 5, "ceil_mode", False)
    stride = stride if stride not in (None, [], ()) else kernel
    return _pair(kernel), _pair(stride), _pair(padding), _pair(dilation), bool(ceil)


def max_pool2d(low: Lowering, match: Match) -> bool:
    """dq -> 2-d max pool -> q with the same qparams  =>  the uint8 max pool kernel (the maximum of the integers
    is the integer of the maximum). torch's generic max_pool2d fails on some channels-last uint8 shapes."""
    node = match.anchor
    found = _same_qparams(low, match)
    arguments = _pool_arguments(low, node)
    if found is None or arguments is None:
        return False
    source, out = found
    with low.gm.graph.inserting_before(node):
        call = low.gm.graph.call_function(torch.ops.quantized.max_pool2d, (source, *arguments))
    call.meta.update(node.meta)
    node.replace_all_uses_with(call)
    _yield(low, out, call)
    return True


_PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


def pad_with_zero_point(low: Lowering, match: Match) -> bool:
    """F.pad(dq(q), pad, "constant", v) or ZeroPad2d / ConstantPad2d(dq(q)) -> F.pad(q, pad, value=the uint8
    code of v). The modules need this row too: _COMPUTES_ON_VALUES keeps them out of moves_values (on raw uint8
    they would pad with 0, not the zero point), so without it they ran as dq -> float pad -> q."""
    node = match.anchor
    found = _same_qparams(low, match)
    if node.op == "call_module":
        module = low.modules[node.target]
        pad, mode, value = tuple(module.padding), "constant", float(module.value)
    else:
        pad, mode, value = arg(node, 1, "pad"), arg(node, 2, "mode", "constant"), arg(node, 3, "value", 0.0)
    if found is None or mode != "constant":
        return False
    source, out = found
    code = round(float(value or 0.0) / out.scale) + out.zero_point
    if not 0 <= code <= 255:
        return False
    if node.op == "call_module":
        node.op, node.target = "call_function", F.pad
    node.args, node.kwargs = (source, pad), {"mode": "constant", "value": float(code)}
    _yield(low, out, node)
    return True


def nearest_resize(low: Lowering, match: Match) -> bool:
    """Nearest-neighbour resizing copies values: it runs on uint8 (other modes interpolate, so stay float)."""
    node = match.anchor
    if node.op == "call_module":
        mode = getattr(low.modules[node.target], "mode", None)
    else:
        mode = arg(node, 3, "mode", "nearest")
    return mode == "nearest" and moves_values(low, match)


def cat_same_qparams(low: Lowering, match: Match) -> bool:
    """cat of uint8 tensors that share the output's scale and zero point -> torch.cat of the uint8 tensors."""
    node = match.anchor
    sources, out = list_sources(low, node)
    if sources is None or out is None:
        return False
    if any(input_qparams(low, s) != (out.scale, out.zero_point) for s in sources):
        return False
    node.args = (sources,) + tuple(node.args[1:])
    _yield(low, out, node)
    return True


_PLAIN_TYPE = {reference.Linear: plain.Linear, reference.Conv1d: plain.Conv1d, reference.Conv2d: plain.Conv2d,
               reference.Conv3d: plain.Conv3d}
_REFERENCE = {nn.Linear: reference.Linear, nn.Conv1d: reference.Conv1d, nn.Conv2d: reference.Conv2d,
              nn.Conv3d: reference.Conv3d}
_FUSED = (fused.LinearReLU, fused.ConvReLU1d, fused.ConvReLU2d, fused.ConvReLU3d)
_WEIGHTED = tuple(_PLAIN_TYPE) + _FUSED


def _rows():
    yield row((reference.Linear, fused.LinearReLU), dynamic_linear)                  # dynamic: x -> linear
    yield row(LINEAR_FUNCTIONS, dynamic_functional_linear)                           # dynamic: x -> F.linear
    yield row(tuple(_RECURRENT), dynamic_recurrent)                                  # dynamic: LSTM / GRU
    yield row(chain(_WEIGHTED, BOUNDED + RELU), weighted_module)                     # dq -> conv -> relu6 -> q
    yield row(_WEIGHTED, weighted_module)                                            # dq -> linear(+relu) -> q
    yield row(chain(LINEAR_FUNCTIONS, BOUNDED + RELU), functional_weighted(float_linear))
    yield row(LINEAR_FUNCTIONS, functional_weighted(float_linear))                   # dq, dq(w) -> F.linear -> q
    for conv in CONV_FUNCTIONS:
        yield row(chain(conv, BOUNDED + RELU), functional_weighted(float_conv))
        yield row(conv, functional_weighted(float_conv))
    yield row(MAX_POOL_2D, max_pool2d)                                               # dq -> max pool -> q
    yield row((F.pad,) + _PAD_MODULES, pad_with_zero_point)                          # dq -> pad -> q
    yield row((F.interpolate, nn.Upsample), nearest_resize)                          # dq -> nearest resize -> q
    yield row(CAT, cat_same_qparams)                                                 # [dq...] -> cat -> q
    yield row((getattr, "size", "dim", "numel"), read_shape_from_quantized)          # dq(q).shape -> q.shape
    yield row(MOVES_VALUES, moves_values)                                            # dq -> maxpool -> q


PLAIN_LOWERING = Table("plain lowering", list(lowering_modes.rows()) + list(_rows()))  # later rows win
