"""Quantized, reference and fused modules that fxq lowers to.

    fxq.nn.fused       float fused modules (LinearReLU, ConvReLU2d, ...) and BN folding
    fxq.nn.reference   float modules with a quantize-dequantized weight (Linear, Conv1d/2d/3d)
    fxq.nn.quantized   int8 modules and functions on torch.ops.quantized kernels
    fxq.nn.plain       int8 modules on plain uint8/int8 tensors and torch core's oneDNN kernels (no quantized tensors)
"""
from fxq.nn import fused, plain, quantized, reference

__all__ = ["fused", "reference", "quantized", "plain"]
