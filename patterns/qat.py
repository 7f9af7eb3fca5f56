"""QAT tables: fusion that keeps batch norm trainable, and float module -> QAT module swaps.

QAT fusion runs instead of the eval-mode fusion of patterns/fusion.py (which folds batch norm away): conv / linear
+ bn (+ relu) become the float chains of fxq.nn.qat.intrinsic, which the swap then turns into QAT modules.
"""
from __future__ import annotations

from torch import nn

from fxq.nn import fused
from fxq.nn import qat
from fxq.nn.qat import intrinsic
from fxq.patterns.matcher import Table, chain, row
from fxq.patterns.ops import BATCH_NORMS, RELU

_CONV_BN = {nn.Conv1d: intrinsic.ConvBn1d, nn.Conv2d: intrinsic.ConvBn2d, nn.Conv3d: intrinsic.ConvBn3d}
_CONV_BN_RELU = {nn.Conv1d: intrinsic.ConvBnReLU1d, nn.Conv2d: intrinsic.ConvBnReLU2d,
                 nn.Conv3d: intrinsic.ConvBnReLU3d}
_CONV_RELU = {nn.Conv1d: fused.ConvReLU1d, nn.Conv2d: fused.ConvReLU2d, nn.Conv3d: fused.ConvReLU3d}


def _conv_bn_relu(conv, bn, relu):
    return _CONV_BN_RELU[type(conv)](conv, bn, nn.ReLU())


def _conv_bn(conv, bn):
    return _CONV_BN[type(conv)](conv, bn)


def _conv_relu(conv, relu):
    return _CONV_RELU[type(conv)](conv, nn.ReLU())


def _bn_relu(bn, relu):
    return {nn.BatchNorm2d: fused.BNReLU2d, nn.BatchNorm3d: fused.BNReLU3d}[type(bn)](bn, nn.ReLU())


def _fusion_rows():
    for conv, bn in BATCH_NORMS.items():
        yield row(chain(conv, bn, RELU), _conv_bn_relu)                 # conv -> bn -> relu  =>  ConvBnReLU
        yield row(chain(conv, bn), _conv_bn)                            # conv -> bn          =>  ConvBn
        yield row(chain(conv, RELU), _conv_relu)                        # conv -> relu        =>  ConvReLU
    yield row(chain(nn.Linear, RELU), lambda linear, relu: fused.LinearReLU(linear, nn.ReLU()))  # => LinearReLU
    yield row(chain(nn.Linear, nn.BatchNorm1d), intrinsic.LinearBn1d)  # linear -> bn1d      =>  LinearBn1d
    yield row(chain((nn.BatchNorm2d, nn.BatchNorm3d), RELU), _bn_relu)  # bn -> relu          =>  BNReLU


FUSION_QAT = Table("fusion_qat", _fusion_rows())

# float (or float fused) module type -> the QAT module that replaces it when its qconfig is static
QAT_MODULES = {
    nn.Linear: qat.Linear,
    nn.Conv1d: qat.Conv1d, nn.Conv2d: qat.Conv2d, nn.Conv3d: qat.Conv3d,
    fused.LinearReLU: qat.LinearReLU,
    fused.ConvReLU1d: qat.ConvReLU1d, fused.ConvReLU2d: qat.ConvReLU2d, fused.ConvReLU3d: qat.ConvReLU3d,
    intrinsic.ConvBn1d: qat.ConvBn1d, intrinsic.ConvBn2d: qat.ConvBn2d, intrinsic.ConvBn3d: qat.ConvBn3d,
    intrinsic.ConvBnReLU1d: qat.ConvBnReLU1d, intrinsic.ConvBnReLU2d: qat.ConvBnReLU2d,
    intrinsic.ConvBnReLU3d: qat.ConvBnReLU3d,
    intrinsic.LinearBn1d: qat.LinearBn1d,
}
QAT_MODULE_TYPES = tuple(dict.fromkeys(QAT_MODULES.values()))
