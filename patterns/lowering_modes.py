"""Lowering rows for the dynamic and weight-only modes (the static rows are in lowering.py).

Their activations are float: a rewrite only swaps the weighted op for a module with int8 (or float16) weights.
"""
from __future__ import annotations

from torch import nn

from fxq.graph.modes import DYNAMIC, DYNAMIC_FP16, WEIGHT_ONLY, activation_dtype
from fxq.nn import fused, reference, reference_recurrent
from fxq.nn.quantized import dynamic, recurrent, weight_only
from fxq.patterns.functional_weights import float_linear
from fxq.patterns.matcher import Match, row
from fxq.patterns.ops import LINEAR_FUNCTIONS
from fxq.patterns.rewrites import Lowering


def _linear_parts(module: nn.Module) -> tuple:
    """(linear, has_relu) of a Linear or a fused LinearReLU."""
    if isinstance(module, fused.LinearReLU):
        return module[0], True
    return module, False


def _build(low: Lowering, node, linear: nn.Module, relu: bool):
    """The module a dynamic / weight-only linear becomes, or None when this rewrite does not apply."""
    mode = low.mode(node)
    if mode == DYNAMIC and isinstance(linear, reference.Linear):
        per_token = getattr(low.qconfig(node).activation(), "per_token", False)
        return dynamic.Linear.from_reference(linear, relu=relu, per_token=per_token)
    if mode == DYNAMIC_FP16 and type(linear) is nn.Linear:
        return dynamic.Linear.from_float_fp16(linear, relu=relu)
    if mode == WEIGHT_ONLY and isinstance(linear, reference.Linear):
        module = weight_only.Linear.from_reference(linear, activation_dtype(low.qconfig(node)))
        return nn.Sequential(module, nn.ReLU()) if relu else module
    return None


def linear_module(low: Lowering, match: Match) -> bool:
    """call_module Linear / LinearReLU in a dynamic or weight-only mode -> its int8-weight module, same path."""
    node = match.anchor
    new = _build(low, node, *_linear_parts(low.modules[node.target]))
    if new is None:
        return False
    low.set_module(node.target, new)
    return True


def functional_linear(low: Lowering, match: Match) -> bool:
    """F.linear(x, dequantize(quantize(w)), b) in a dynamic / weight-only mode -> a module call on x."""
    node = match.anchor
    if low.mode(node) not in (DYNAMIC, WEIGHT_ONLY):
        return False
    float_module, weight_qparams = float_linear(low, node)
    if float_module is None:
        return False
    new = _build(low, node, reference.Linear.from_float(float_module, weight_qparams), relu=False)
    name = low.add_module(node.name + "_quantized", new)
    with low.gm.graph.inserting_before(node):
        call = low.gm.graph.call_module(name, (node.args[0],))
    call.meta.update(node.meta)
    node.replace_all_uses_with(call)
    return True


def embedding(low: Lowering, match: Match) -> bool:
    """reference Embedding in weight-only mode -> int8 rows with per-row qparams."""
    node = match.anchor
    if low.mode(node) != WEIGHT_ONLY:
        return False
    low.set_module(node.target, weight_only.Embedding.from_reference(low.modules[node.target]))
    return True


_DYNAMIC_RECURRENT = {nn.LSTM: recurrent.LSTM, nn.GRU: recurrent.GRU,
                      reference_recurrent.LSTM: recurrent.LSTM, reference_recurrent.GRU: recurrent.GRU}


def recurrent_module(low: Lowering, match: Match) -> bool:
    """LSTM / GRU: a reference one (dynamic int8) or a float one (dynamic float16) -> packed cells."""
    node = match.anchor
    module, mode = low.modules[node.target], low.mode(node)
    if mode == DYNAMIC and isinstance(module, (reference_recurrent.LSTM, reference_recurrent.GRU)):
        low.set_module(node.target, _DYNAMIC_RECURRENT[type(module)].from_reference(module))
        return True
    if mode == DYNAMIC_FP16 and type(module) in (nn.LSTM, nn.GRU) and not getattr(module, "proj_size", 0):
        low.set_module(node.target, _DYNAMIC_RECURRENT[type(module)].from_float_fp16(module))
        return True
    return False


def rows():
    yield row((reference.Linear, fused.LinearReLU, nn.Linear), linear_module)   # linear -> int8-weight linear
    yield row(LINEAR_FUNCTIONS, functional_linear)                                # F.linear -> int8-weight linear
    yield row(reference.Embedding, embedding)                                     # embedding -> int8 rows
    yield row(tuple(_DYNAMIC_RECURRENT), recurrent_module)                        # LSTM / GRU -> int8 cells
