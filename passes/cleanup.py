"""Remove what lowering left behind: dead nodes, unused modules and buffers, ``quantize(dequantize(q))`` round trips.

Requires: a lowered graph. Guarantees: no dead node, no submodule the graph does not call, no root buffer that
only dead nodes read (the qparams of an output lowering moved into a quantized module, or of a branch whose
result nothing uses), and no dequantize that is immediately re-quantized with the qparams it already has.
Position: last in convert.
"""
from __future__ import annotations

import torch
from torch import fx

from fxq.passes.context import (PassContext, delete_unused_submodules, drop_unread_buffers, eliminate_dead_code,
                                 read_attributes)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    for node in list(gm.graph.nodes):
        if _is_requantize_of_same(gm, node):
            node.replace_all_uses_with(node.args[0].args[0])
            ctx.count("dequantize/quantize pairs removed")
    remove_dead(gm, ctx)
    return gm


def remove_dead(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Dead nodes, the submodules no node calls, and root buffers only dead nodes read (the state_dict need not
    carry them)."""
    read_before = read_attributes(gm)
    ctx.count("dead nodes removed", eliminate_dead_code(gm))
    delete_unused_submodules(gm)
    dropped = drop_unread_buffers(gm, read_before)
    if dropped:
        ctx.count("unread buffers removed", dropped)


def _is_requantize_of_same(gm: fx.GraphModule, node: fx.Node) -> bool:
    """quantize_per_tensor(dequantize(q), s, z, dtype) where q is quantize_per_tensor(x, s, z, dtype)."""
    if node.op != "call_function" or node.target is not torch.quantize_per_tensor:
        return False
    dequantized = node.args[0]
    if not (isinstance(dequantized, fx.Node) and dequantized.op == "call_method" and dequantized.target == "dequantize"):
        return False
    source = dequantized.args[0]
    same_kernel = source.op == "call_function" and source.target is torch.quantize_per_tensor
    return same_kernel and _values(gm, source.args[1:]) == _values(gm, node.args[1:])


def _values(gm: fx.GraphModule, args: tuple) -> tuple:
    """qparam arguments as plain numbers: get_attr buffers are read, other values kept."""
    return tuple(gm.get_buffer(a.target).item() if isinstance(a, fx.Node) and a.op == "get_attr" else a
                 for a in args)
