"""Plain int8 modules: uint8 activations as ordinary tensors with their scale and zero point as arguments,
int8 weights, on torch core's oneDNN kernels (``torch.ops.onednn``). No quantized tensor (torch.quint8 /
qint8 / qint32, which torch 2.13 deprecates) is created by building or running them.

    ops        ``fxq::quantize_per_tensor`` / ``fxq::dequantize_per_tensor``
    linear     Linear, LinearBinary (fused residual add)
    conv       Conv1d/2d/3d, ConvBinary1d/2d (fused residual add)
    dynamic    DynamicLinear: float in and out, activations quantized per call (per tensor or per token)
    recurrent  LSTM, GRU: dynamic int8 projections (DynamicLinear) around a float recurrence
    saturation whether this CPU's kernel loses full-range uint8 x int8 products
    traced     ``fxq::plain_linear`` / ``fxq::plain_conv``: what Linear and Conv become under torch.export/compile

    >>> from fxq.nn import plain
    >>> plain.ops.quantize_per_tensor(torch.tensor([0.5]), torch.tensor(0.1), torch.tensor(3))
    tensor([8], dtype=torch.uint8)
"""
import torch  # noqa: F401  (the docstring example uses it)

from fxq.nn.plain import ops, recurrent, traced
from fxq.nn.plain.conv import Conv1d, Conv2d, Conv3d, ConvBinary1d, ConvBinary2d
from fxq.nn.plain.dynamic import DynamicLinear
from fxq.nn.plain.linear import Linear, LinearBinary
from fxq.nn.plain.saturation import plain_linear_saturates

__all__ = ["ops", "recurrent", "traced", "Linear", "LinearBinary", "Conv1d", "Conv2d", "Conv3d", "ConvBinary1d", "ConvBinary2d",
           "DynamicLinear", "plain_linear_saturates", "reads_uint8"]


def reads_uint8(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a plain kernel taking a uint8 input (DynamicLinear takes float)."""
    return isinstance(module, (Linear, Conv1d, Conv2d, Conv3d)) and not isinstance(module, DynamicLinear)
