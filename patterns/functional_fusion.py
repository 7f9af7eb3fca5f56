"""Fusion table for aten-level graphs (torch.export): rewrites on function calls whose weights are attributes.

An exported graph has no Conv2d / BatchNorm2d modules to fuse, only ``aten.conv2d(x, w, b)`` and
``aten.batch_norm(y, gamma, beta, mean, var, False, momentum, eps, ...)`` on ``get_attr`` nodes. The rows here
rewrite those calls into the spellings the observation and lowering tables already know, so a folded conv then
meets ``conv -> relu`` like a symbolically traced functional conv. A rewrite gets the GraphModule and the match,
returns True when it rewrote, and touches the graph only after it has decided. The get_attr nodes it stops reading
are left for the fuse pass to erase, with their parameters.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Optional

import torch
from torch import fx, nn

from fxq.nn.fused import fold_bn_into_weights
from fxq.passes.context import free_name
from fxq.patterns.matcher import Match, Table, chain, row
from fxq.patterns.ops import BATCH_NORM_FUNCTIONS, CONV_FUNCTIONS, LINEAR_FUNCTIONS, aten, aten_spellings

ADDMM = (aten.addmm.default,)


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if index < len(node.args) else node.kwargs.get(name, default)


def _attribute(gm: fx.GraphModule, node: Any) -> Optional[torch.Tensor]:
    """The tensor a ``get_attr`` node reads, when no other node reads it (so it can be replaced)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr" or len(node.users) != 1:
        return None
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _set_attribute(gm: fx.GraphModule, near: fx.Node, target: str, value: torch.Tensor, like: fx.Node) -> fx.Node:
    """A new parameter ``target`` on ``gm`` (a free name next to it) and a get_attr node reading it, with the node
    meta of ``like`` (the attribute it replaces: scope, recorded dtype; a recorded shape becomes ``value``'s)."""
    owner_path, _, name = target.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    name = free_name(owner, name)
    owner.register_parameter(name, nn.Parameter(value.detach(), requires_grad=False))
    with gm.graph.inserting_before(near):
        node = gm.graph.get_attr(f"{owner_path}.{name}" if owner_path else name)
    for key, meta in like.meta.items():
        has_shape = dataclasses.is_dataclass(meta) and any(f.name == "shape" for f in dataclasses.fields(meta))
        node.meta[key] = dataclasses.replace(meta, shape=tuple(value.shape)) if has_shape else meta
    return node


def fold_batch_norm(gm: fx.GraphModule, match: Match) -> bool:
    """aten.conv / aten.linear -> aten.batch_norm (eval) on attributes => the conv / linear on folded weights."""
    layer, norm = match.nodes
    weight_node, bias_node = layer.args[1], _arg(layer, 2, "bias")
    weight, bias = _attribute(gm, weight_node), _attribute(gm, bias_node) if bias_node is not None else None
    stats = [_attribute(gm, a) for a in norm.args[1:5]]
    if weight is None or (bias_node is not None and bias is None) or _arg(norm, 5, "training") is not False:
        return False
    if stats[2] is None or stats[3] is None:
        return False  # running statistics are needed to fold
    bn = SimpleNamespace(num_features=weight.shape[0], weight=stats[0], bias=stats[1], running_mean=stats[2],
                         running_var=stats[3], eps=_arg(norm, 7, "eps"))
    new_weight, new_bias = fold_bn_into_weights(weight, bias, bn)
    new_weight_node = _set_attribute(gm, layer, f"{weight_node.target}_folded", new_weight, weight_node)
    new_bias_node = _set_attribute(gm, layer, f"{weight_node.target}_folded_bias", new_bias, norm.args[2])
    layer.args = (layer.args[0], new_weight_node, new_bias_node) + tuple(layer.args[3:])
    layer.kwargs = {k: v for k, v in layer.kwargs.items() if k != "bias"}
    norm.replace_all_uses_with(layer)
    gm.graph.erase_node(norm)
    return True


def addmm_as_linear(gm: fx.GraphModule, match: Match) -> bool:
    """addmm(b, x, W) with W an (in, out) attribute (transformers' Conv1D, GPT-2) => aten.linear(x, W.T, b)."""
    node = match.anchor
    if len(node.args) != 3 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return False  # beta / alpha scale the terms: not a linear layer
    bias_node, source, weight_node = node.args
    weight = _attribute(gm, weight_node)
    if weight is None or weight.dim() != 2 or bias_node.op != "get_attr":
        return False
    transposed = _set_attribute(gm, node, f"{weight_node.target}_t", weight.t().contiguous(), weight_node)
    node.target, node.args = aten.linear.default, (source, transposed, bias_node)
    return True


def _rows():
    layers = aten_spellings(CONV_FUNCTIONS + LINEAR_FUNCTIONS)
    yield row(chain(layers, BATCH_NORM_FUNCTIONS), fold_batch_norm)  # conv -> batch_norm => conv on folded weights
    yield row(ADDMM, addmm_as_linear)                                # addmm(b, x, W) => linear(x, W.T, b)


FUSION_FUNCTIONAL = Table("fusion_functional", _rows())
