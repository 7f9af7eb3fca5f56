"""The ops the fuzzer draws from: one ``OpRule`` per op family, each with its spellings.

A rule says which input ranks it takes, how to draw its parameters (a hypothesis ``draw`` and the input
shape), how to build what it owns (a module for the module spelling, a holder of parameters for the
functional one) and how to call itself. Binary rules name which earlier values can be their second input.
Shapes always include the batch dimension (2); rules never touch it.

    >>> _unary("relu", lambda params: nn.ReLU(), F.relu, "relu").call(None, {}, "method", [torch.tensor([-1., 2.])])
    tensor([0., 2.])

The table of rules the fuzzer draws from is tools/fuzz_table.py.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

Shape = Tuple[int, ...]
MAX_CHANNELS = 16  # cat doubles channels; past this a graph is no longer tiny


@dataclass(frozen=True)
class OpRule:
    """One op family: ``call(owned, params, spelling, inputs)`` runs it; ``make`` builds what it owns."""
    name: str
    ranks: Tuple[int, ...]
    spellings: Tuple[str, ...]
    call: Callable[[Any, dict, str, List[torch.Tensor]], torch.Tensor]
    params: Callable[[Any, Shape, str], dict] = lambda draw, shape, spelling: {}
    make: Optional[Callable[[dict, Shape, str], nn.Module]] = None
    partner: Optional[Callable[[Shape, Shape], bool]] = None  # binary ops: may this shape be the second input?
    fits: Callable[[Shape], bool] = lambda shape: True
    has_reference_module: bool = False  # convert_fx swaps each call of its module for a reference module
    spelling_fits: Callable[[str, Shape], bool] = lambda spelling, shape: True


def _holder(**tensors: torch.Tensor) -> nn.Module:
    """A plain module holding parameters for a functional spelling (F.linear(x, holder.weight, holder.bias))."""
    holder = nn.Module()
    for name, tensor in tensors.items():
        setattr(holder, name, None if tensor is None else nn.Parameter(tensor.detach().clone()))
    return holder


def _weights_of(module: nn.Module, spelling: str) -> nn.Module:
    return module if spelling == "module" else _holder(weight=module.weight, bias=module.bias)


# --- linear and convolutions -------------------------------------------------------------------------------

def _linear_params(draw, shape, spelling):
    return {"out": draw(st.sampled_from([4, 2, 3, 6, 8])), "bias": draw(st.booleans())}


def _linear_make(params, shape, spelling):
    return _weights_of(nn.Linear(shape[-1], params["out"], bias=params["bias"]), spelling)


def _linear_call(owned, params, spelling, xs):
    return owned(xs[0]) if spelling == "module" else F.linear(xs[0], owned.weight, owned.bias)


def _conv_params(draw, shape, spelling):
    channels = shape[1]
    depthwise = draw(st.booleans()) if channels > 1 else False
    return {"dims": len(shape) - 2, "out": channels if depthwise else draw(st.sampled_from([4, 2, 3, 6])),
            "kernel": draw(st.sampled_from([1, 3])), "stride": draw(st.sampled_from([1, 2])),
            "groups": channels if depthwise else 1}


def _conv_make(params, shape, spelling):
    conv = (nn.Conv1d, nn.Conv2d)[params["dims"] - 1]
    return _weights_of(conv(shape[1], params["out"], params["kernel"], params["stride"], params["kernel"] // 2,
                            groups=params["groups"]), spelling)


def _conv_call(owned, params, spelling, xs):
    if spelling == "module":
        return owned(xs[0])
    conv = (F.conv1d, F.conv2d)[params["dims"] - 1]  # from the drawn shape: xs[0] is a Proxy while tracing
    return conv(xs[0], owned.weight, owned.bias, params["stride"], params["kernel"] // 2, 1, params["groups"])


# --- normalisations ----------------------------------------------------------------------------------------

def _batch_norm_make(params, shape, spelling):
    norm = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1])
    with torch.no_grad():  # non-trivial statistics, so folding them into a conv changes its weights
        norm.running_mean.uniform_(-0.3, 0.3)
        norm.running_var.uniform_(0.5, 1.5)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.3, 0.3)
    return norm


def _layer_norm_make(params, shape, spelling):
    norm = nn.LayerNorm(shape[-1])
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.3, 0.3)
    return _weights_of(norm, spelling)


def _layer_norm_call(owned, params, spelling, xs):
    if spelling == "module":
        return owned(xs[0])
    return F.layer_norm(xs[0], (params["features"],), owned.weight, owned.bias)


# --- one-input ops with several spellings --------------------------------------------------------------------

def _unary(name: str, module: Callable[[dict], nn.Module], function: Callable, method: Optional[str] = None,
           params: Callable = lambda draw, shape, spelling: {}, ranks=(2, 3, 4)) -> OpRule:
    """A weightless op: ``module(params)`` builds its module; ``function(x, **params)`` is its functional form."""
    spellings = ("module", "function") + (("method",) if method else ())

    def call(owned, params, spelling, xs):
        if spelling == "module":
            return owned(xs[0])
        if spelling == "method":
            return getattr(xs[0], method)(**params)
        return function(xs[0], **params)
    make = lambda params, shape, spelling: module(params) if spelling == "module" else None  # noqa: E731
    return OpRule(name, ranks, spellings, call, params, make)


def _hardtanh_bounds(draw, shape, spelling):
    low, high = draw(st.sampled_from([(-1.0, 1.0), (0.0, 2.0), (-0.5, 3.0)]))
    return {"min_val": low, "max_val": high}


def _softmax_dim(draw, shape, spelling):
    return {"dim": draw(st.sampled_from([-1, 1]))}


def _pool(kind: str) -> OpRule:
    """max / avg / adaptive-avg pooling over the last one or two dims, as a module or a function."""
    modules = {"max": (nn.MaxPool1d, nn.MaxPool2d), "avg": (nn.AvgPool1d, nn.AvgPool2d),
               "adaptive_avg": (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)}[kind]
    functions = {"max": (F.max_pool1d, F.max_pool2d), "avg": (F.avg_pool1d, F.avg_pool2d),
                 "adaptive_avg": (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d)}[kind]
    size = 1 if kind == "adaptive_avg" else 2

    def call(owned, params, spelling, xs):
        return owned(xs[0]) if spelling == "module" else functions[params["dims"] - 1](xs[0], size)
    make = lambda params, shape, spelling: modules[params["dims"] - 1](size) if spelling == "module" else None  # noqa
    return OpRule(f"{kind}_pool", (3, 4), ("module", "function"), call, lambda draw, shape, spelling: {
        "dims": len(shape) - 2}, make, fits=lambda shape: min(shape[2:]) >= size)
