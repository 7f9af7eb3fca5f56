"""The float value behind a uint8 tensor of a plain-lowered graph, for tools that read intermediate values.

A plain graph's uint8 tensors carry no scale: the node that made one knows it. A kernel with a uint8 output
holds its output qparams, a quantize call takes them as arguments, and the ops that only move uint8 values
(reshape, max pool, cat of one scale) keep those of their input.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),),
    ...                           prepare_custom_config={"cost_model": False})
    >>> _ = prepared(torch.randn(2, 4))
    >>> converted = fxq.convert_fx(prepared)
    >>> node = next(n for n in converted.graph.nodes if n.target == "0")
    >>> output_qparams(converted, node) == (converted.get_submodule("0").output_scale,
    ...                                     converted.get_submodule("0").output_zero_point)
    True
"""
from typing import Optional, Tuple

import torch
from torch import fx

from fxq.nn.plain import boundary, ops
from fxq.nn.plain._base import PlainWeightedModule

__all__ = ["output_qparams", "as_float"]

_TAKES_QPARAMS = (ops.quantize_per_tensor, boundary.from_quantized_tensor)


def output_qparams(gm: fx.GraphModule, node: fx.Node) -> Optional[Tuple[float, int]]:
    """(scale, zero point) of the uint8 value ``node`` yields in ``gm``, None when it yields none."""
    while isinstance(node, fx.Node):
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, PlainWeightedModule):
                return None if module.output_scale is None else (module.output_scale, module.output_zero_point)
        if node.op == "call_function" and node.target in _TAKES_QPARAMS:
            return float(gm.get_buffer(node.args[1].target)), int(gm.get_buffer(node.args[2].target))
        if node.op in ("placeholder", "get_attr") or not node.args:
            return None
        node = node.args[0][0] if isinstance(node.args[0], (list, tuple)) else node.args[0]  # cat reads a list
    return None


def as_float(gm: fx.GraphModule, node: fx.Node, value: torch.Tensor) -> torch.Tensor:
    """``value`` (what ``node`` computed) as float: dequantized when it is a quantized or a plain uint8 tensor."""
    if value.is_quantized:
        return value.dequantize()
    qparams = output_qparams(gm, node) if value.dtype == torch.uint8 else None
    return value if qparams is None else (value.float() - qparams[1]) * qparams[0]
