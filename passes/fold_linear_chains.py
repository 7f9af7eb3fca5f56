"""Fold chains of linear maps with nothing nonlinear between them into one Linear: W = W2·W1, b = W2·b1 + b2.

Requires: eval mode (Dropout between the layers is then the identity). Runs only when asked
(``FuseCustomConfig.set_fold_linear_chains(True)``): it changes the parameter count and the module tree.
Guarantees: the float outputs are unchanged up to rounding; a value with other users is never folded through.
Position: before fuse (a folded linear can still fuse with a following relu).

Why: one kernel call instead of two, and one rounding of the activation between the layers instead of two.
Not always smaller: folding (out2 x mid) · (mid x in) gives out2 x in, which has more weights when the middle
is narrow (a bottleneck); the pass folds anyway, since the user asked, and reports the parameter change.

Before / after::

    y = self.fc2(self.drop(self.fc1(x)))   ->   y = self.fc1(x)      # fc1 now holds fc2·fc1
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.passes.context import PassContext, attribute_value, delete_unused_submodules, eliminate_dead_code, modules_of

_TRANSPARENT = (nn.Dropout, nn.Identity)  # identity maps in eval mode


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if gm.training:
        ctx.warnings.append("the model is in training mode: linear chains not folded; call model.eval()")
        return gm
    modules = modules_of(gm)
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")  # a shared module keeps its weights
    erased: set = set()
    for node in list(gm.graph.nodes):
        current = None if node in erased else node
        while current is not None and _linear_parameters(current, gm, modules) is not None:
            chain = _chain_to_next_linear(current, modules, gm)
            if chain is None:
                break
            current = _fold_pair(gm, modules, chain, calls, ctx)
            erased.update(chain)
    eliminate_dead_code(gm)
    delete_unused_submodules(gm)
    return gm


def _linear_parameters(node: fx.Node, gm: fx.GraphModule, modules: dict) -> Optional[tuple]:
    """(weight, bias) of an nn.Linear call or of F.linear on attribute parameters; None otherwise."""
    if node.op == "call_module" and type(modules.get(node.target)) is nn.Linear:
        linear = modules[node.target]
        return linear.weight, linear.bias
    if node.op == "call_function" and node.target is F.linear:
        weight = _attribute(gm, node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
        bias_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        bias = None if bias_arg is None else _attribute(gm, bias_arg)
        if weight is None or (bias_arg is not None and bias is None):
            return None
        return weight, bias
    return None


def _attribute(gm: fx.GraphModule, node) -> Optional[torch.Tensor]:
    """The tensor behind a ``get_attr`` argument; None for anything else (an activation, a constant)."""
    is_attribute = isinstance(node, fx.Node) and node.op == "get_attr"
    return attribute_value(gm, node.target) if is_attribute else None


def _chain_to_next_linear(node: fx.Node, modules: dict, gm: fx.GraphModule) -> Optional[list]:
    """[node, identity maps..., linear]: the linear that consumes ``node``'s output through identity maps
    only, each node before it with no other user; None when there is no such linear."""
    chain = [node]
    while len(chain[-1].users) == 1:
        (user,) = chain[-1].users
        if not user.args or user.args[0] is not chain[-1]:
            return None
        chain.append(user)
        if _linear_parameters(user, gm, modules) is not None:
            return chain
        transparent = user.op == "call_module" and isinstance(modules.get(user.target), _TRANSPARENT)
        if not (transparent or user.target is F.dropout):
            return None
    return None


def _fold_pair(gm: fx.GraphModule, modules: dict, chain: list, calls: Counter, ctx: PassContext) -> fx.Node:
    """Replace ``chain`` (linear, identities, linear) by one call to a folded Linear; return that call."""
    first, second = chain[0], chain[-1]
    w1, b1 = _linear_parameters(first, gm, modules)
    w2, b2 = _linear_parameters(second, gm, modules)
    with torch.no_grad():
        weight = w2.detach() @ w1.detach()
        bias = w2.detach() @ b1.detach() if b1 is not None else None
        bias = b2.detach().clone() if bias is None and b2 is not None else bias
        if b2 is not None and b1 is not None:
            bias = bias + b2.detach()
    folded = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    folded.weight = nn.Parameter(weight, requires_grad=w1.requires_grad)
    if bias is not None:
        folded.bias = nn.Parameter(bias, requires_grad=w1.requires_grad)
    name = _module_name(gm, first, calls)
    gm.add_submodule(name, folded)
    modules[name] = folded
    with gm.graph.inserting_before(second):
        call = gm.graph.call_module(name, (first.args[0],))
    call.meta.update(first.meta)
    second.replace_all_uses_with(call)
    for stale in reversed(chain):  # each node's only user was the next one: now all are dead
        gm.graph.erase_node(stale)
    ctx.count("linear layers folded")
    return call


def _module_name(gm: fx.GraphModule, first: fx.Node, calls: Counter) -> str:
    """The first layer's own path for a module (the folded layer takes its place), a fresh name otherwise."""
    if first.op == "call_module" and calls[first.target] == 1:  # a shared module must keep its weights
        return first.target
    base, index = f"{first.name.replace('.', '_')}_folded", 0
    while hasattr(gm, f"{base}_{index}"):
        index += 1
    return f"{base}_{index}"
