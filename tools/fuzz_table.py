"""The table of ops the fuzzer draws from (``RULES``), plus the shape-changing and two-input ops.

Order matters for shrinking: hypothesis shrinks a drawn op toward the first rule that applies, so the ops
every model has (linear, conv, norms, relu) come first and the extras last. Every rule's spellings are the ways real code writes it (``nn.ReLU()``,
``F.relu(x)``, ``x.relu()``; ``x + y``, ``torch.add(x, y)``).

    >>> [rule.name for rule in RULES.values()][:3]
    ['linear', 'conv', 'batch_norm']
"""
from __future__ import annotations

import operator
from dataclasses import replace
from typing import Dict

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

from tools.fuzz_ops import (MAX_CHANNELS, OpRule, _batch_norm_make, _conv_call, _conv_make, _conv_params,
                            _hardtanh_bounds, _layer_norm_call, _layer_norm_make, _linear_call, _linear_make,
                            _linear_params, _pool, _softmax_dim, _unary)

SCALARS = [0.5, 2.0, -1.5, 0.25, 1.0]


# --- shape ops ---------------------------------------------------------------------------------------------

def _flatten_call(owned, params, spelling, xs):
    return {"module": lambda x: owned(x), "function": lambda x: torch.flatten(x, 1),
            "method": lambda x: x.flatten(1)}[spelling](xs[0])


def _reshape_targets(shape):
    """Shapes (without the batch) that a reshape of ``shape`` can go to; each changes the rank."""
    if len(shape) == 2:
        features = shape[1]
        return [(a, features // a) for a in range(2, features) if features % a == 0] + [(features, 1)]
    if len(shape) == 3:
        return [(shape[1] * shape[2],), (shape[1], shape[2], 1)]
    return [(shape[1], shape[2] * shape[3]), (shape[1] * shape[2] * shape[3],)]


def _reshape_call(owned, params, spelling, xs):
    target = (-1,) + params["shape"]
    return {"method": lambda x: x.reshape(target), "function": lambda x: torch.reshape(x, target),
            "view": lambda x: x.view(target)}[spelling](xs[0])


_SWAPS = {(0, 2, 1): (1, 2), (0, 1, 3, 2): (2, 3), (0, 2, 1, 3): (1, 2)}  # permutations that are one transpose


def _permute_params(draw, shape, spelling):
    choices = [(0, 2, 1)] if len(shape) == 3 else [(0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2), (0, 2, 1, 3)]
    if spelling == "transpose":
        choices = [dims for dims in choices if dims in _SWAPS]
    return {"dims": draw(st.sampled_from(choices))}


def _permute_call(owned, params, spelling, xs):
    dims = params["dims"]
    return {"method": lambda x: x.permute(*dims), "function": lambda x: torch.permute(x, dims),
            "transpose": lambda x: x.transpose(*_SWAPS[dims])}[spelling](xs[0])


# --- two inputs, or one input and a scalar -----------------------------------------------------------------

def _binary(name: str, function) -> OpRule:
    """``x + y`` / ``torch.add(x, y)`` on two values of one shape (y may be x)."""
    def call(owned, params, spelling, xs):
        symbol = {"add": operator.add, "mul": operator.mul}[name]
        return (symbol if spelling == "operator" else function)(xs[0], xs[1])
    return OpRule(name, (2, 3, 4), ("operator", "function"), call, partner=lambda shape, other: shape == other)


def _scalar(name: str, function) -> OpRule:
    """``x * 0.5``, ``0.5 * x`` and ``torch.mul(x, 0.5)``."""
    def call(owned, params, spelling, xs):
        symbol, value = {"add_scalar": operator.add, "mul_scalar": operator.mul}[name], params["value"]
        return {"operator": lambda x: symbol(x, value), "reflected": lambda x: symbol(value, x),
                "function": lambda x: function(x, value)}[spelling](xs[0])
    return OpRule(name, (2, 3, 4), ("operator", "reflected", "function"), call,
                  lambda draw, shape, spelling: {"value": draw(st.sampled_from(SCALARS))})


def _cat_partner(shape, other):
    return (len(shape) == len(other) and shape[:1] + shape[2:] == other[:1] + other[2:]
            and shape[1] + other[1] <= MAX_CHANNELS)


def _matmul_call(owned, params, spelling, xs):
    """Attention scores: ``x @ y.transpose(-1, -2)``."""
    key = xs[1].transpose(-1, -2)
    return {"function": torch.matmul, "operator": operator.matmul, "bmm": torch.bmm}[spelling](xs[0], key)


def _rules() -> Dict[str, OpRule]:
    unary = [
        _unary("relu", lambda p: nn.ReLU(), F.relu, "relu"),
        _unary("relu6", lambda p: nn.ReLU6(), F.relu6),
        _unary("hardtanh", lambda p: nn.Hardtanh(**p), F.hardtanh, params=_hardtanh_bounds),
        _unary("sigmoid", lambda p: nn.Sigmoid(), torch.sigmoid, "sigmoid"),
        _unary("gelu", lambda p: nn.GELU(), F.gelu),
        _unary("softmax", lambda p: nn.Softmax(**p), F.softmax, "softmax", params=_softmax_dim),
    ]
    rules = [
        OpRule("linear", (2, 3, 4), ("module", "function"), _linear_call, _linear_params, _linear_make,
               has_reference_module=True),
        OpRule("conv", (3, 4), ("module", "function"), _conv_call, _conv_params, _conv_make,
               has_reference_module=True),
        OpRule("batch_norm", (2, 3, 4), ("module",), lambda owned, params, spelling, xs: owned(xs[0]),
               make=_batch_norm_make),
        OpRule("layer_norm", (2, 3, 4), ("module", "function"), _layer_norm_call,
               lambda draw, shape, spelling: {"features": shape[-1]}, _layer_norm_make),
    ] + unary + [
        _scalar("add_scalar", torch.add), _scalar("mul_scalar", torch.mul),
        _binary("add", torch.add), _binary("mul", torch.mul),
        _pool("max"), _pool("avg"), _pool("adaptive_avg"),
        OpRule("flatten", (3, 4), ("module", "function", "method"), _flatten_call,
               make=lambda params, shape, spelling: nn.Flatten() if spelling == "module" else None),
        OpRule("reshape", (2, 3, 4), ("method", "function", "view"), _reshape_call,
               lambda draw, shape, spelling: {"shape": draw(st.sampled_from(_reshape_targets(shape)))}),
        OpRule("permute", (3, 4), ("method", "function", "transpose"), _permute_call, _permute_params),
        OpRule("cat", (2, 3, 4), ("function",), lambda owned, params, spelling, xs: torch.cat(xs, dim=1),
               partner=_cat_partner),
        OpRule("matmul", (3, 4), ("function", "operator", "bmm"), _matmul_call,
               partner=lambda shape, other: shape == other,
               spelling_fits=lambda spelling, shape: spelling != "bmm" or len(shape) == 3),
    ]
    return {rule.name: rule for rule in rules + _more_rules()}


def _more_rules() -> list:
    """Ops beyond issue 14's list that real models use between the ones above; last, so graphs shrink away
    from them."""
    def chunk(owned, params, spelling, xs):
        return (xs[0].chunk(2, 1) if spelling == "method" else torch.chunk(xs[0], 2, 1))[0]

    def mean(owned, params, spelling, xs):
        return xs[0].mean(-1, keepdim=True) if spelling == "method" else torch.mean(xs[0], -1, keepdim=True)
    return [
        _unary("tanh", lambda p: nn.Tanh(), torch.tanh, "tanh"),
        _unary("hardswish", lambda p: nn.Hardswish(), F.hardswish),
        _unary("silu", lambda p: nn.SiLU(), F.silu),
        _unary("elu", lambda p: nn.ELU(), F.elu),
        _unary("leaky_relu", lambda p: nn.LeakyReLU(**p), F.leaky_relu,
               params=lambda draw, shape, spelling: {"negative_slope": draw(st.sampled_from([0.01, 0.2]))}),
        _unary("dropout", lambda p: nn.Dropout(p["p"]), F.dropout,
               params=lambda draw, shape, spelling: {"p": 0.5, "training": False} if spelling == "function"
               else {"p": 0.5}),
        OpRule("mean", (2, 3, 4), ("method", "function"), mean, fits=lambda shape: shape[-1] > 1),
        OpRule("chunk", (2, 3, 4), ("method", "function"), chunk, fits=lambda shape: shape[1] % 2 == 0),
        OpRule("pad", (3, 4), ("function",), lambda owned, params, spelling, xs: F.pad(xs[0], (1, 1))),
        replace(_unary("interpolate", lambda p: nn.Upsample(scale_factor=2), F.interpolate, ranks=(4,),
                       params=lambda draw, shape, spelling: {"scale_factor": 2} if spelling == "function" else {}),
                fits=lambda shape: max(shape[2:]) <= 8),
    ]


RULES = _rules()
