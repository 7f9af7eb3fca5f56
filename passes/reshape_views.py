"""Turn ``x.view(...)`` into ``x.reshape(...)`` in the converted graph, so int8 layouts cannot break it.

The int8 convolution kernels return channels-last tensors, and so do the pools and dequantizes after them:
``x.view(x.size(0), -1)`` after a quantized conv, fine on the user's contiguous float tensor, raises "view size
is not compatible with input tensor's size and stride" (PyTorch AO's converted models too). ``reshape`` is
``view`` wherever ``view`` works (same result, same aliasing, no copy) and copies only where ``view`` would
raise, so the rewrite costs nothing on graphs that ran before.
Requires: a lowered graph. Guarantees: no call_method ``view`` / ``view_as`` with a shape argument, no
``aten.view`` (torch.export's spelling; ``aten.view.dtype`` is another overload and stays).
Position: after lower (which matched view as a shape op), before cleanup.

Before / after::

    conv = self.conv(q); flat = conv.view(size, -1)
    conv = self.conv(q); flat = conv.reshape(size, -1)
"""
from __future__ import annotations

import torch
from torch import fx

from fxq.passes.context import PassContext
from fxq.patterns.ops import aten

_RESHAPING = {"view": "reshape", "view_as": "reshape_as", aten.view.default: aten.reshape.default}  # aten: torch.export


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    for node in gm.graph.nodes:
        if node.op not in ("call_method", "call_function") or node.target not in _RESHAPING or not _changes_shape(node):
            continue
        node.target = _RESHAPING[node.target]
        ctx.count("views made reshapes")
    return gm


def _changes_shape(node: fx.Node) -> bool:
    """``x.view(torch.float16)`` reinterprets the dtype: that one has no reshape."""
    return node.target == "view_as" or not (len(node.args) == 2 and isinstance(node.args[1], torch.dtype))
