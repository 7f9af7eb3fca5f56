"""Quantized, reference and fused modules that fxq lowers to.

    fxq.nn.fused       float fused modules (LinearReLU, ConvReLU2d, ...) and BN folding
    fxq.nn.reference   float modules with a quantize-dequantized weight (Linear, Conv1d/2d/3d)
    fxq.nn.quantized   int8 modules and functions on torch.ops.quantized kernels
"""
from fxq.nn import fused, quantized, reference

__all__ = ["fused", "reference", "quantized"]
