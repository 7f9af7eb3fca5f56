"""Fusion table: chains of float ops that become one float module before observers are inserted.

A fuser gets the matched modules (``None`` for function nodes such as ``F.relu``) and returns the fused module,
which replaces the first module of the chain; the other nodes of the chain are bypassed.
"""
from __future__ import annotations

from torch import nn

from fxq.nn import fused
from fxq.nn.qat import intrinsic
from fxq.patterns.matcher import Table, chain, row
from fxq.patterns.ops import BATCH_NORMS, RELU

_CONV_RELU = {nn.Conv1d: fused.ConvReLU1d, nn.Conv2d: fused.ConvReLU2d, nn.Conv3d: fused.ConvReLU3d}


def _conv_bn_relu(conv, bn, relu):
    return _CONV_RELU[type(conv)](fused.fold_bn_into_conv(conv, bn), nn.ReLU())


def _conv_bn(conv, bn):
    return fused.fold_bn_into_conv(conv, bn)


def _conv_relu(conv, relu):
    return _CONV_RELU[type(conv)](conv, nn.ReLU())


def _linear_relu(linear, relu):
    return fused.LinearReLU(linear, nn.ReLU())


def _linear_bn_relu(linear, bn, relu):
    return fused.LinearReLU(fused.fold_bn_into_linear(linear, bn), nn.ReLU())


def _linear_bn(linear, bn):
    return fused.fold_bn_into_linear(linear, bn)


def _bn_relu(bn, relu):
    return {nn.BatchNorm2d: fused.BNReLU2d, nn.BatchNorm3d: fused.BNReLU3d}[type(bn)](bn, nn.ReLU())


def _rows():
    for conv, bn in BATCH_NORMS.items():
        yield row(chain(conv, bn, RELU), _conv_bn_relu)           # conv -> bn -> relu  =>  ConvReLU(conv with bn folded)
        yield row(chain(conv, bn), _conv_bn)                      # conv -> bn          =>  conv with bn folded
        yield row(chain(conv, RELU), _conv_relu)                  # conv -> relu        =>  ConvReLU
    yield row(chain(nn.Linear, RELU), _linear_relu)               # linear -> relu      =>  LinearReLU
    yield row(chain(nn.Linear, nn.BatchNorm1d, RELU), _linear_bn_relu)  # linear -> bn1d -> relu  =>  LinearReLU, bn folded
    yield row(chain(nn.Linear, nn.BatchNorm1d), _linear_bn)       # linear -> bn1d      =>  linear with bn folded
    yield row(chain((nn.BatchNorm2d, nn.BatchNorm3d), RELU), _bn_relu)  # bn -> relu    =>  BNReLU


FUSION = Table("fusion", _rows())

# Fused float module -> the float types it stands for, for qconfig lookups by object type.
FUSED_CONSTITUENTS = {
    fused.LinearReLU: (nn.Linear, nn.ReLU),
    fused.ConvReLU1d: (nn.Conv1d, nn.ReLU),
    fused.ConvReLU2d: (nn.Conv2d, nn.ReLU),
    fused.ConvReLU3d: (nn.Conv3d, nn.ReLU),
    fused.BNReLU2d: (nn.BatchNorm2d, nn.ReLU),
    fused.BNReLU3d: (nn.BatchNorm3d, nn.ReLU),
}
FUSED_CONSTITUENTS.update(intrinsic.CONSTITUENTS)  # QAT fusion's conv / linear + bn chains
