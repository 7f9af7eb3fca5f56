"""Modules for quantization-aware training: weighted layers that fake-quantize their weights, and the float fused
chains QAT fusion builds (``intrinsic``).

    fxq.nn.qat.Linear, Conv1d/2d/3d, LinearReLU, ConvReLU1d/2d/3d     weight fake-quant
    fxq.nn.qat.ConvBn1d/2d/3d, ConvBnReLU1d/2d/3d, LinearBn1d         + batch norm trained, folded at convert
"""
from fxq.nn.qat import intrinsic
from fxq.nn.qat.batchnorm import (ConvBn1d, ConvBn2d, ConvBn3d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d,
                                  LinearBn1d, freeze_bn_stats, update_bn_stats)
from fxq.nn.qat.modules import (Conv1d, Conv2d, Conv3d, ConvReLU1d, ConvReLU2d, ConvReLU3d, Linear, LinearReLU,
                                weight_qparams_of)

__all__ = ["Linear", "Conv1d", "Conv2d", "Conv3d", "LinearReLU", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d",
           "ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d", "LinearBn1d",
           "freeze_bn_stats", "update_bn_stats", "weight_qparams_of", "intrinsic"]
