"""Cross-layer equalization (data-free, as in DFQ / AIMET): balance the ranges of consecutive weights.

For ``layer1 -> relu -> layer2`` (Linear/Conv, grouped and depthwise convs too), channel c of layer1's output is
divided by ``s[c] = sqrt(r1[c] / r2[c])`` (its weight row and bias) and layer2's input column c is multiplied by
it, where
``r1`` is the max |weight| per output row of layer1 and ``r2`` the max |weight| meeting input channel c in layer2
(for a grouped conv, within the group that channel belongs to).
Both become ``sqrt(r1 * r2)``; relu(x / s) = relu(x) / s for s > 0, so the float model computes the same thing.
Per-tensor int8 weights then waste far fewer levels on the widest channel.
"""
from __future__ import annotations

import copy

from torch import nn

from fxq.equalization import graph as eqg
from fxq.equalization.scales import safe_ratio_sqrt, scale_weight, weight_columns
from fxq.graph.tracer import trace


def cross_layer_equalize(model: nn.Module, iterations: int = 8) -> nn.Module:
    """A copy of ``model`` with every Linear/Conv pair joined by ReLU-like ops equalized; ``model`` is untouched.

    Chains of three or more layers are balanced by repeating the pairwise step ``iterations`` times.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> balanced = cross_layer_equalize(model)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(balanced(x), model(x), atol=1e-5)
    True
    """
    balanced = _copy_sharing_nothing_mutable(model)
    pairs = find_pairs(balanced)
    for _ in range(iterations):
        for first, second in pairs:
            _balance(first, second)
    return balanced


def find_pairs(model: nn.Module) -> list:
    """(layer1, layer2) module pairs where layer1's only consumer path reaches layer2 through ReLU-like ops."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    calls = eqg.call_counts(gm)
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not eqg.is_layer_kind(node, modules):
            continue
        if eqg.layer_problem(node, modules, calls) is not None:
            continue
        chain = eqg.previous_layer(node, modules, calls) if node.args else None
        if chain is None or chain.layer.op != "call_module" or chain.reshape is not None:
            continue  # no shapes recorded here: channels must reach layer2 where they left layer1
        if eqg.channel_axis(chain.layer, modules) == eqg.channel_axis(node, modules):
            pairs.append((eqg.inner_module(modules[chain.layer.target]), eqg.inner_module(modules[node.target])))
    return pairs


def _balance(first: nn.Module, second: nn.Module) -> None:
    """New weights for one pair (never written in place: the copy shares storage with the user's model)."""
    groups = getattr(second, "groups", 1)
    row_range = first.weight.detach().abs().flatten(1).amax(dim=1)
    column_range = weight_columns(second.weight.detach().abs(), groups).amax(dim=1)
    scale = safe_ratio_sqrt(row_range, column_range)
    first.weight = nn.Parameter(scale_weight(first.weight, None, 1 / scale), first.weight.requires_grad)
    if first.bias is not None:
        first.bias = nn.Parameter(first.bias.detach() / scale, first.bias.requires_grad)
    second.weight = nn.Parameter(scale_weight(second.weight, 1 / scale, None, groups), second.weight.requires_grad)


def _copy_sharing_nothing_mutable(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters share storage; safe because _balance only ever assigns new Parameters."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)
