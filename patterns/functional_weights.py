"""Rebuild float Linear / Conv modules from functional calls whose weight is a quantize-dequantized attribute.

``F.conv2d(x, self.w, self.b, padding=1)`` (or torch.export's ``aten.conv2d(x, w, b, [1, 1], [1, 1])``, the same
arguments in the same positions) is lowered to the same quantized module as ``nn.Conv2d``: these
helpers read the weight, bias and geometry off the call (positional or keyword, defaults omitted) and return
``(float_module, weight_qparams)``, or ``(None, None)`` when the call cannot be lowered (a computed weight, a
string padding such as ``"same"``).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.patterns.ops import TORCH_SPELLING

_CONV_TYPES = {F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d}
_NOTHING = (None, None)


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if index < len(node.args) else node.kwargs.get(name, default)


def _weight_and_qparams(low, dequantized: Any) -> tuple:
    quantized = low.quantized_source(dequantized)
    if quantized is None or quantized.op != "call_function":
        return _NOTHING
    weight = low.attribute(quantized.args[0])
    if weight is None:
        return _NOTHING
    if quantized.target is torch.quantize_per_tensor:
        _, scale, zero_point, dtype = quantized.args
        qscheme = torch.per_tensor_affine
        return weight, {"qscheme": qscheme, "dtype": dtype, "scale": low.attribute(scale),
                        "zero_point": low.attribute(zero_point)}
    if quantized.target is torch.quantize_per_channel:
        _, scale, zero_point, axis, dtype = quantized.args
        return weight, {"qscheme": torch.per_channel_affine, "dtype": dtype, "scale": low.attribute(scale),
                        "zero_point": low.attribute(zero_point), "axis": axis}
    return _NOTHING


def _bias(low, node: fx.Node, index: int) -> tuple:
    """(ok, bias tensor or None): a bias must be absent or a plain attribute to be packed with the weight."""
    bias = _arg(node, index, "bias")
    if bias is None:
        return True, None
    value = low.attribute(bias)
    return value is not None, value


def float_linear(low, node: fx.Node) -> tuple:
    weight, qparams = _weight_and_qparams(low, _arg(node, 1, "weight"))
    ok, bias = _bias(low, node, 2)
    if weight is None or not ok:
        return _NOTHING
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    _set_parameters(linear, weight, bias)
    return linear, qparams


def float_conv(low, node: fx.Node) -> tuple:
    weight, qparams = _weight_and_qparams(low, _arg(node, 1, "weight"))
    ok, bias = _bias(low, node, 2)
    padding = _arg(node, 4, "padding", 0)
    if weight is None or not ok or isinstance(padding, str) and padding != "valid":
        return _NOTHING
    groups = _arg(node, 6, "groups", 1)
    conv = _CONV_TYPES[TORCH_SPELLING.get(node.target, node.target)](
        weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=_arg(node, 3, "stride", 1),
        padding=0 if padding == "valid" else padding, dilation=_arg(node, 5, "dilation", 1), groups=groups,
        bias=bias is not None)
    _set_parameters(conv, weight, bias)
    return conv, qparams


def _set_parameters(module: nn.Module, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    module.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        module.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
