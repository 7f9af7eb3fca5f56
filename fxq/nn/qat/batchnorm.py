"""QAT conv / linear + batch norm: batch-norm statistics keep updating in training, and the fake-quantized weight
is the folded one, so what trains is what convert folds.

Forward in training (Jacob et al. 2018, the one-pass approximation PyTorch AO uses): with
``s = bn.weight / sqrt(running_var + eps)``, ``y = conv(x, fq(w * s)) / s + bias``, then ``bn(y)`` with batch
statistics. A channel whose ``bn.weight`` is 0 would divide by zero there (NaN loss, PyTorch AO PR 85744): it
uses ``s = 1`` instead, which leaves its output (``beta``) and its batch statistics exact. In eval mode (or after
:func:`freeze_bn_stats`) the same forward equals the folded layer ``conv(x, fq(w * s)) + (bias - mean) * s + beta``,
which is what :meth:`to_reference` builds.

    >>> import torch
    >>> from fxq.observers import default_per_channel_weight_fake_quant
    >>> fused = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    >>> qat = LinearBn1d.from_float(fused, default_per_channel_weight_fake_quant)
    >>> qat(torch.randn(8, 4)).shape
    torch.Size([8, 3])
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn import fused
from fxq.nn.qat import modules

__all__ = ["ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d", "LinearBn1d",
           "freeze_bn_stats", "update_bn_stats"]


class _BnFolding:
    """Mixin over a QAT weighted module: owns ``bn``; ``freeze_bn`` pins it to its running statistics."""

    freeze_bn: bool = False
    _relu: bool = False

    @classmethod
    def from_float(cls, module: nn.Module, weight_constructor: Any) -> nn.Module:
        """From the float fused module ``[layer, bn(, relu)]``."""
        qat = super().from_float(module[0], weight_constructor)
        qat.bn = module[1]
        qat.freeze_bn = False
        return qat

    def freeze_bn_stats(self) -> "_BnFolding":
        """Normalize with the running statistics and stop updating them (also in train mode)."""
        self.freeze_bn = True
        self.bn.train(False)
        return self

    def update_bn_stats(self) -> "_BnFolding":
        """Normalize with batch statistics and update the running ones again (in train mode)."""
        self.freeze_bn = False
        self.bn.train(self.training)
        return self

    def train(self, mode: bool = True) -> "_BnFolding":
        super().train(mode)
        if self.freeze_bn:
            self.bn.train(False)
        return self

    def _bn_scale(self) -> torch.Tensor:
        """``bn.weight / running_std`` per channel, 1 where bn.weight is 0 (see the module docstring)."""
        bn = self.bn
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        return torch.where(scale == 0, torch.ones_like(scale), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._bn_scale()
        shape = [1] * self.weight.dim()
        weight = self.weight_fake_quant(self.weight * scale.reshape([-1] + shape[1:]))
        out_shape = [1, -1] + [1] * (x.dim() - 2) if x.dim() > 2 else [1, -1]
        y = self._raw_forward(x, weight) / scale.reshape(out_shape)
        if self.bias is not None:
            y = y + self.bias.reshape(out_shape)
        y = self.bn(y)
        return F.relu(y) if self._relu else y

    def folded_weight_and_bias(self) -> tuple:
        """The eval-mode layer as one weight and bias (running statistics folded in)."""
        with torch.no_grad():
            bn, scale = self.bn, self._bn_scale()
            gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
            true_scale = gamma / torch.sqrt(bn.running_var + bn.eps)
            shape = [-1] + [1] * (self.weight.dim() - 1)
            weight = self.weight * scale.reshape(shape)  # what the weight fake-quant saw
            bias = self.bias if self.bias is not None else torch.zeros_like(bn.running_mean)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
            folded_bias = (bias - bn.running_mean) * true_scale + beta
            # a zero-gamma channel outputs beta whatever its weights: zero them so only beta is left
            weight = weight * (true_scale != 0).reshape(shape)
        return weight.detach(), folded_bias.detach()


class _ConvBn(_BnFolding):
    def _raw_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, None)


class ConvBn1d(_ConvBn, modules.Conv1d):
    """Conv1d + BatchNorm1d for QAT."""


class ConvBn2d(_ConvBn, modules.Conv2d):
    """Conv2d + BatchNorm2d for QAT."""


class ConvBn3d(_ConvBn, modules.Conv3d):
    """Conv3d + BatchNorm3d for QAT."""


class ConvBnReLU1d(ConvBn1d):
    """Conv1d + BatchNorm1d + ReLU for QAT."""

    _relu, _fused_float_type = True, fused.ConvReLU1d


class ConvBnReLU2d(ConvBn2d):
    """Conv2d + BatchNorm2d + ReLU for QAT."""

    _relu, _fused_float_type = True, fused.ConvReLU2d


class ConvBnReLU3d(ConvBn3d):
    """Conv3d + BatchNorm3d + ReLU for QAT."""

    _relu, _fused_float_type = True, fused.ConvReLU3d


class LinearBn1d(_BnFolding, modules.Linear):
    """Linear + BatchNorm1d for QAT; fxq.freeze_bn_stats covers it too."""

    def _raw_forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)


def freeze_bn_stats(module: nn.Module) -> None:
    """For ``model.apply(fxq.freeze_bn_stats)``: every fused QAT batch norm (conv 1/2/3d and linear) stops
    updating its running statistics and normalizes with them."""
    if isinstance(module, _BnFolding):
        module.freeze_bn_stats()


def update_bn_stats(module: nn.Module) -> None:
    """For ``model.apply(fxq.update_bn_stats)``: fused QAT batch norms use and update batch statistics again."""
    if isinstance(module, _BnFolding):
        module.update_bn_stats()
