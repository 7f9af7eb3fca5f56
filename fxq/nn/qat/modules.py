"""QAT weighted modules: Linear and Conv1d/2d/3d (+ ReLU) whose forward fake-quantizes the weight.

Each keeps its float weight as the trained parameter and owns the ``weight_fake_quant`` built from the qconfig.
At convert, :meth:`to_reference` hands over a reference module quantizing the weight with exactly the qparams the
weight fake-quant last used (read, not recomputed: running it again would move them, pytorch/pytorch#73941).

    >>> import torch
    >>> from fxq.observers import default_per_channel_weight_fake_quant
    >>> qat = Linear.from_float(torch.nn.Linear(4, 3), default_per_channel_weight_fake_quant)
    >>> qat(torch.randn(2, 4)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxq.nn import fused, reference
from fxq.nn.quantized import weight_only
from fxq.observers.base import ObserverBase
from fxq.observers.weight_grids import is_grouped

__all__ = ["Linear", "Conv1d", "Conv2d", "Conv3d", "LinearReLU", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d",
           "weight_qparams_of"]

_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)


def weight_qparams_of(quantizer: ObserverBase, weight: torch.Tensor) -> dict:
    """The qparams dict of fxq.nn.reference for ``weight`` under a weight fake-quant, as its forward used them.

    A fake-quant that never ran (convert straight after prepare) observes ``weight`` once first.
    """
    if not quantizer.has_data():
        quantizer(weight.detach())
    frozen = getattr(quantizer, "frozen_qparams", quantizer.calculate_qparams)
    scale, zero_point = frozen()
    qparams = {"qscheme": quantizer.qscheme, "dtype": quantizer.dtype, "scale": scale, "zero_point": zero_point,
               "quant_min": quantizer.quant_min, "quant_max": quantizer.quant_max}
    if quantizer.qscheme in _PER_CHANNEL:
        qparams["axis"] = quantizer.ch_axis
    return qparams


def _check_qconfig(cls: type, weight_constructor: Any) -> None:
    if weight_constructor is None:
        raise ValueError(f"fxq.nn.qat.{cls.__name__}.from_float needs a qconfig with a weight fake-quant; the "
                         f"qconfig's weight is None. Give the layer a QAT qconfig "
                         f"(fxq.get_default_qat_qconfig_mapping()) or None to keep it float")


class _WeightFakeQuant:
    """Mixin: ``weight_fake_quant`` and the conversions to and from float / reference modules."""

    _float_type: type = nn.Module
    _reference_type: type = nn.Module
    _fused_float_type: Any = None  # the float fused module (Linear + ReLU) this QAT module stands for

    def fake_quantized_weight(self) -> torch.Tensor:
        return self.weight_fake_quant(self.weight)

    @classmethod
    def from_float(cls, module: nn.Module, weight_constructor: Any) -> nn.Module:
        """A QAT module sharing ``module``'s parameters, with a fresh weight fake-quant."""
        _check_qconfig(cls, weight_constructor)
        inner = module[0] if isinstance(module, nn.Sequential) else module
        qat = cls.__new__(cls)
        nn.Module.__init__(qat)
        qat.__dict__.update({k: v for k, v in inner.__dict__.items() if k not in ("_modules", "_parameters")})
        qat._parameters = dict(inner._parameters)  # the same Parameter objects: an optimizer built on them trains it
        qat._modules = {}
        qat._buffers = dict(inner._buffers)
        qat.weight_fake_quant = weight_constructor()
        return qat

    def to_reference(self) -> nn.Module:
        """The reference module (float op on the quantize-dequantized weight) computing what this module does in
        eval mode, wrapped with ReLU for the fused kinds."""
        weight, bias = self.folded_weight_and_bias()
        quantizer = self.weight_fake_quant
        if is_grouped(quantizer):  # no int8 kernel takes per-group scales: a weight-only Linear computes it in float
            if self._float_type is not nn.Linear:
                raise NotImplementedError(f"fxq.nn.qat.{type(self).__name__}: grouped weights convert for Linear "
                                          f"layers only; give this layer granularity='channel'")
            ref = weight_only.Linear.from_grouped(self._float_carrier(weight, bias), quantizer)
            return nn.Sequential(ref, nn.ReLU()) if self._fused_float_type is not None else ref
        qparams = weight_qparams_of(quantizer, weight)
        if hasattr(quantizer, "grid_weight"):  # binary: the integers are sign(w), not round(w / scale)
            weight = quantizer.grid_weight(weight)
        carrier = self._float_carrier(weight, bias)
        ref = self._reference_type.from_float(carrier, qparams)
        return self._fused_float_type(ref, nn.ReLU()) if self._fused_float_type is not None else ref

    def folded_weight_and_bias(self) -> tuple:
        return self.weight.detach(), None if self.bias is None else self.bias.detach()

    def _float_carrier(self, weight: torch.Tensor, bias: Any) -> nn.Module:
        carrier = self._float_type.__new__(self._float_type)
        carrier.__dict__.update(self.__dict__)
        carrier._parameters = {"weight": nn.Parameter(weight), "bias": None if bias is None else nn.Parameter(bias)}
        carrier._modules = {}
        return carrier


class Linear(_WeightFakeQuant, nn.Linear):
    """``nn.Linear`` training on its fake-quantized weight."""

    _float_type, _reference_type = nn.Linear, reference.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fake_quantized_weight(), self.bias)


class _Conv(_WeightFakeQuant):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.fake_quantized_weight(), self.bias)


class Conv1d(_Conv, nn.Conv1d):
    """``nn.Conv1d`` training on its fake-quantized weight."""

    _float_type, _reference_type = nn.Conv1d, reference.Conv1d


class Conv2d(_Conv, nn.Conv2d):
    """``nn.Conv2d`` training on its fake-quantized weight."""

    _float_type, _reference_type = nn.Conv2d, reference.Conv2d


class Conv3d(_Conv, nn.Conv3d):
    """``nn.Conv3d`` training on its fake-quantized weight."""

    _float_type, _reference_type = nn.Conv3d, reference.Conv3d


class LinearReLU(Linear):
    """Linear + ReLU (from fxq.nn.fused.LinearReLU), fake-quantized weight."""

    _fused_float_type = fused.LinearReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class ConvReLU1d(Conv1d):
    """Conv1d + ReLU, fake-quantized weight."""

    _fused_float_type = fused.ConvReLU1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class ConvReLU2d(Conv2d):
    """Conv2d + ReLU, fake-quantized weight."""

    _fused_float_type = fused.ConvReLU2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class ConvReLU3d(Conv3d):
    """Conv3d + ReLU, fake-quantized weight."""

    _fused_float_type = fused.ConvReLU3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))
