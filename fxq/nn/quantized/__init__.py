"""Quantized modules: quint8 tensors in, quint8 tensors out, on `torch.ops.quantized` kernels.

Weighted modules are built from `fxq.nn.reference` modules with `from_reference`; the others from
float modules with `from_float` or directly. None of them knows observers.

    >>> import torch
    >>> from fxq.nn import quantized as nnq
    >>> qa = torch.quantize_per_tensor(torch.randn(4), 0.05, 128, torch.quint8)
    >>> nnq.functional.add(qa, qa, 0.1, 128).dtype
    torch.quint8
"""
from fxq.nn.quantized import functional
from fxq.nn.quantized._packing import current_engine, pack_conv, pack_linear, unpack_conv, unpack_linear
from fxq.nn.quantized.activation import ELU, Hardswish, LeakyReLU, PReLU, Softmax
from fxq.nn.quantized.conv import Conv1d, Conv2d, Conv3d, ConvReLU1d, ConvReLU2d, ConvReLU3d
from fxq.nn.quantized.conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from fxq.nn.quantized.linear import Linear, LinearFloatOutput, LinearReLU
from fxq.nn.quantized.normalization import (BatchNorm2d, BatchNorm3d, BNReLU2d, BNReLU3d, GroupNorm, InstanceNorm1d,
                                            InstanceNorm2d, InstanceNorm3d, LayerNorm)

__all__ = [
    "functional", "current_engine", "pack_linear", "unpack_linear", "pack_conv", "unpack_conv",
    "Linear", "LinearReLU", "LinearFloatOutput", "Conv1d", "Conv2d", "Conv3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "BatchNorm2d", "BatchNorm3d", "BNReLU2d", "BNReLU3d", "LayerNorm", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "GroupNorm",
    "Hardswish", "ELU", "LeakyReLU", "Softmax", "PReLU",
]
