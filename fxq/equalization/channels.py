"""Which channel of the previous layer each input feature of an equalized layer comes from, through a shape op.

A flatten after a conv turns channel c into features ``c*H*W .. (c+1)*H*W - 1``; a flatten after a linear over a
sequence ``(N, T, C)`` tiles the channels T times. The scale of those features must then be one per channel, so it
can go into the previous layer's weight row c. Rather than a rule per op, prepare replays the recorded shape op on
a tensor holding each element's channel index and reads the indices along the equalized layer's feature axis.

    >>> import torch
    >>> from fxq.graph.tracer import trace
    >>> from fxq.equalization import graph as eqg
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Flatten(), torch.nn.Linear(8, 1))
    >>> gm = trace(model)
    >>> modules, nodes = dict(gm.named_modules()), {n.name: n for n in gm.graph.nodes}
    >>> chain = eqg.previous_layer(nodes["_2"], modules, eqg.call_counts(gm))
    >>> shapes = {"_0": (5, 2, 2, 2), "_1": (5, 8)}
    >>> channel_map(chain, nodes["_2"], modules, lambda n: shapes.get(n.name)).tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import fx

from fxq.equalization import graph as eqg


def channel_map(chain: eqg.Chain, layer: fx.Node, modules: dict,
                shape_of: Callable[[fx.Node], Optional[tuple]]) -> Optional[torch.Tensor]:
    """Entry f: the channel of ``chain.layer``'s output that input feature f of ``layer`` comes from, or None when
    a feature mixes channels (e.g. a linear over a conv's last dim). ``shape_of`` gives a node's recorded shape.

    Replays the chain's shape op on a tensor of channel indices (batch 1) and reads them along ``layer``'s axis.
    """
    start = chain.layer if chain.reshape is None else eqg.argument(chain.reshape, 0, "input")
    shape = shape_of(start)
    if shape is None or len(shape) < 2:
        return None
    shape, previous_axis = (1,) + tuple(shape[1:]), eqg.channel_axis(chain.layer, modules)
    view = [1] * len(shape)
    view[previous_axis] = shape[previous_axis]
    index = torch.arange(shape[previous_axis]).reshape(view).expand(shape).contiguous()
    if chain.reshape is not None:
        expected = shape_of(chain.reshape)
        try:
            index = _replay(chain.reshape, index, modules)
        except (RuntimeError, IndexError, TypeError, ValueError):
            return None
        if expected is None or tuple(index.shape) != (1,) + tuple(expected[1:]):
            return None  # the op treats the batch dim specially (e.g. a view with the batch size written in)
    axis = eqg.channel_axis(layer, modules)
    if index.ndim < 2:
        return None
    features = index.movedim(axis, 0).reshape(index.shape[axis], -1)
    return features[:, 0].clone() if bool((features == features[:, :1]).all()) else None


def _replay(node: fx.Node, index: torch.Tensor, modules: dict) -> torch.Tensor:
    if node.op == "call_module":
        return modules[node.target](index)
    if node.op == "call_method":
        return getattr(index, node.target)(*node.args[1:], **node.kwargs)
    return node.target(index, *node.args[1:], **node.kwargs)
