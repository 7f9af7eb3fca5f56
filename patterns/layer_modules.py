"""Which aten layer calls of a torch.export graph become module calls, and the module each becomes.

Equalization and SmoothQuant rescale the weights of ``nn.Linear`` / ``nn.Conv*d`` / ``nn.LayerNorm`` modules; an
exported graph calls ``aten.linear(x, w, b)``, ``aten.conv2d(x, w, b, ...)`` and ``aten.layer_norm(x, shape, w, b,
eps)`` on ``get_attr`` weights instead.
Each row names an aten spelling and a builder: the builder gets the GraphModule and the node, and returns the
module holding the node's own weight tensors (the same tensors, not copies) with the node's tensor input and the
``get_attr`` nodes it replaces, or None when the node's weights are not attributes only it reads (a shared or
computed weight: the layer stays a function call). Builders never touch the graph; passes/layer_modules.py does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.passes.context import attribute_value
from fxq.patterns.matcher import Table, row
from fxq.patterns.ops import CONV_FUNCTIONS, LAYER_NORM, LINEAR_FUNCTIONS, TORCH_SPELLING, aten_spellings

# node.meta key: the aten op a module call was made from. Qconfig lookups read it, so a QConfigMapping selects the
# module call exactly as it selected the aten call (by object type aten.linear / F.linear / the emitting class).
ATEN_TARGET_KEY = "fxq_aten_target"


@dataclass
class LayerModule:
    """What an aten layer call becomes: ``module(input)`` in place of the call, and the attributes it held."""

    module: nn.Module
    input: fx.Node
    attributes: dict  # module parameter name ("weight", "bias") -> the get_attr node the call read it from


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if index < len(node.args) else node.kwargs.get(name, default)


def _own_attribute(gm: fx.GraphModule, value: Any, dims: int) -> Optional[torch.Tensor]:
    """The floating tensor of ``dims`` dims a get_attr node reads, when the node has one user (the layer)."""
    if not isinstance(value, fx.Node) or value.op != "get_attr" or len(value.users) != 1:
        return None
    tensor = attribute_value(gm, value.target)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != dims or not tensor.is_floating_point():
        return None
    return tensor


def _parameter(tensor: torch.Tensor) -> nn.Parameter:
    """The tensor as a Parameter, without a copy (fuse's folded weights are plain Parameters already)."""
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)


def _weights(gm: fx.GraphModule, node: fx.Node, weight: Any, bias: Any, weight_dims: int) -> Optional[dict]:
    """{"weight": get_attr, "bias": get_attr} (bias only when given), or None when either is not the layer's own."""
    if _own_attribute(gm, weight, weight_dims) is None:
        return None
    if bias is not None and _own_attribute(gm, bias, 1) is None:
        return None
    return {"weight": weight} if bias is None else {"weight": weight, "bias": bias}


def _holding(module: nn.Module, gm: fx.GraphModule, attributes: dict) -> nn.Module:
    for name, node in attributes.items():
        setattr(module, name, _parameter(attribute_value(gm, node.target)))
    return module


def linear_module(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerModule]:
    """aten.linear(x, w, b) on its own attributes => nn.Linear(in, out) holding w and b."""
    attributes = _weights(gm, node, _arg(node, 1, "weight"), _arg(node, 2, "bias"), weight_dims=2)
    if attributes is None or not isinstance(node.args[0], fx.Node):
        return None
    out_features, in_features = attribute_value(gm, attributes["weight"].target).shape
    module = nn.Linear(in_features, out_features, bias="bias" in attributes, device="meta")
    return LayerModule(_holding(module, gm, attributes), node.args[0], attributes)


def layer_norm_module(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerModule]:
    """aten.layer_norm(x, shape, w, b, eps) over the last dim, on its own attributes => nn.LayerNorm holding w, b.
    Without a weight there is nothing for SmoothQuant to rescale: the call stays."""
    shape = _arg(node, 1, "normalized_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 1 or not isinstance(shape[0], int):
        return None
    attributes = _weights(gm, node, _arg(node, 2, "weight"), _arg(node, 3, "bias"), weight_dims=1)
    if attributes is None or not isinstance(node.args[0], fx.Node):
        return None
    eps = _arg(node, 4, "eps", 1e-5)
    module = nn.LayerNorm(shape[0], eps=eps, bias="bias" in attributes, device="meta")
    return LayerModule(_holding(module, gm, attributes), node.args[0], attributes)


_CONV_MODULES = {F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d}
_CONV_WEIGHT_DIMS = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}


def conv_module(gm: fx.GraphModule, node: fx.Node) -> Optional[LayerModule]:
    """aten.conv{1,2,3}d(x, w, b, stride, padding, dilation, groups) with constant arguments, on its own
    attributes => nn.Conv{1,2,3}d holding w and b."""
    module_class = _CONV_MODULES[TORCH_SPELLING[node.target]]
    dims = _CONV_WEIGHT_DIMS[module_class]
    attributes = _weights(gm, node, _arg(node, 1, "weight"), _arg(node, 2, "bias"), weight_dims=dims)
    options = {"stride": _arg(node, 3, "stride", 1), "padding": _arg(node, 4, "padding", 0),
               "dilation": _arg(node, 5, "dilation", 1), "groups": _arg(node, 6, "groups", 1)}
    if attributes is None or not isinstance(node.args[0], fx.Node) or not _constant(options):
        return None
    out_channels, group_channels, *kernel = attribute_value(gm, attributes["weight"].target).shape
    module = module_class(group_channels * options["groups"], out_channels, tuple(kernel), bias="bias" in attributes,
                          device="meta", **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    return LayerModule(_holding(module, gm, attributes), node.args[0], attributes)


def _constant(options: dict) -> bool:
    """Ints or lists of ints only (a stride computed at run time cannot become a module attribute)."""
    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)
    return all(is_int(v) or (isinstance(v, (list, tuple)) and all(map(is_int, v))) for v in options.values())


LAYER_MODULES = Table("layer_modules", [
    row(aten_spellings(LINEAR_FUNCTIONS), linear_module),   # aten.linear(x, w, b) -> nn.Linear(x)
    row(aten_spellings(CONV_FUNCTIONS), conv_module),       # aten.conv2d(x, w, b, ...) -> nn.Conv2d(x)
    row(aten_spellings(LAYER_NORM), layer_norm_module),     # aten.layer_norm(x, [n], w, b, eps) -> nn.LayerNorm(x)
])
