"""Turn in-place ops on values read later into out-of-place ops, so that every later pass can trust the graph.

``y = conv(x); y.mul_(0.5); return y + x`` reads ``y`` after ``mul_`` changed it, but nothing in the graph says
so: ``mul_`` has no users, so dead-code elimination drops it, and lowering makes ``y + x`` read the int8 conv
output directly, bypassing the mutation. Here the mutation becomes a value: ``mul = y.mul(0.5)``, and every node
after it that read ``y`` reads ``mul`` (which then quantizes like any other op).

An in-place op is left alone (and kept by cleanup's dead-code elimination) when the mutated value may share
memory with another one: a placeholder (the caller's tensor), an attribute (a buffer), or the result of a view,
reshape or other aliasing op, or a value of which such a view was taken before the mutation.
Requires: a freshly traced graph. Guarantees: no call_method / call_function in-place op on an unaliased value.
Position: first in prepare, before record_values records each node's value.

Before / after::

    conv = self.conv(x); mul_ = conv.mul_(0.5); add = conv + x
    conv = self.conv(x); mul = conv.mul(0.5);   add = mul + x
"""
from __future__ import annotations

from torch import fx

from fxq.passes.context import PassContext, modules_of, out_of_place
from fxq.patterns.matcher import op_of
from fxq.patterns.ops import ALIASING


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    position = {node: index for index, node in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        replacement = out_of_place(node)
        if replacement is None or not node.args:
            continue
        mutated = node.args[0]
        if not _unaliased(mutated, node, modules, position):
            ctx.count("in-place ops kept (the value may be aliased)")
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.create_node(node.op, replacement, node.args, _without_inplace(node.kwargs))
        new.meta.update(node.meta)
        position[new] = position[node] - 0.5  # sits just before the in-place node it replaces
        for user in list(mutated.users):
            if position.get(user, -1) > position[node]:
                user.replace_input_with(mutated, new)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        ctx.count("in-place ops made out-of-place")
    return gm


def _unaliased(value, inplace: fx.Node, modules: dict, position: dict) -> bool:
    """``value`` is a tensor computed here whose memory nothing else can see (no view of it was taken first)."""
    if not isinstance(value, fx.Node) or value.op not in ("call_module", "call_function", "call_method"):
        return False
    if op_of(value, modules) in ALIASING or out_of_place(value) is not None or value.kwargs.get("inplace"):
        return False
    if value.op == "call_module" and getattr(modules[value.target], "inplace", False):
        return False  # nn.ReLU(inplace=True) returns its input
    return not any(op_of(user, modules) in ALIASING for user in value.users if position[user] < position[inplace])


def _without_inplace(kwargs: dict) -> dict:
    return {key: False if key == "inplace" else value for key, value in kwargs.items()}
