"""The stock fake-quant constructors, with PyTorch AO's names and settings, so QAT configs written for PyTorch AO
read the same with ``import fxq``.

    >>> default_fused_per_channel_wt_fake_quant().quant_min
    -128
"""
from __future__ import annotations

import torch

from fxq.observers.fake_quantize import FakeQuantize, FixedQParamsFakeQuantize, FusedMovingAvgObsFakeQuantize
from fxq.observers.histogram import HistogramObserver
from fxq.observers.minmax import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from fxq.observers.simple import FixedQParamsObserver

__all__ = [
    "default_fake_quant", "default_weight_fake_quant", "default_per_channel_weight_fake_quant",
    "default_dynamic_fake_quant", "default_histogram_fake_quant", "default_embedding_fake_quant",
    "default_fused_act_fake_quant", "default_fused_wt_fake_quant", "default_fused_per_channel_wt_fake_quant",
    "fused_wt_fake_quant_range_neg_127_to_127", "fused_per_channel_wt_fake_quant_range_neg_127_to_127",
    "default_fixed_qparams_range_0to1_fake_quant", "default_fixed_qparams_range_neg1to1_fake_quant",
]

_SIGNED_PER_TENSOR = dict(quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
_SIGNED_PER_CHANNEL = dict(quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)

# Activations: moving-average min/max, 7-bit unsigned (reduce_range) as PyTorch AO's default.
default_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                            dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=True)
default_histogram_fake_quant = FakeQuantize.with_args(observer=HistogramObserver, quant_min=0, quant_max=255,
                                                      dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                                      reduce_range=True)
default_dynamic_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                                    is_dynamic=True, dtype=torch.quint8, averaging_constant=1)
# Weights: signed, symmetric.
default_weight_fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, reduce_range=False,
                                                   **_SIGNED_PER_TENSOR)
default_per_channel_weight_fake_quant = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                                               reduce_range=False, ch_axis=0, **_SIGNED_PER_CHANNEL)
default_embedding_fake_quant = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                                      qscheme=torch.per_channel_affine_float_qparams,
                                                      dtype=torch.quint8, quant_min=0, quant_max=255, ch_axis=0,
                                                      averaging_constant=1)
# One torch kernel for observe + qparams + fake-quantize (PyTorch AO's version-1 QAT defaults).
default_fused_act_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8)
default_fused_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver,
                                                                      **_SIGNED_PER_TENSOR)
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, **_SIGNED_PER_CHANNEL)
fused_wt_fake_quant_range_neg_127_to_127 = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, **{**_SIGNED_PER_TENSOR, "quant_min": -127}, eps=2**-12)
fused_per_channel_wt_fake_quant_range_neg_127_to_127 = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver, **{**_SIGNED_PER_CHANNEL, "quant_min": -127}, eps=2**-12)
# Ops with a known output range (sigmoid: [0, 1]; tanh: [-1, 1]).
default_fixed_qparams_range_0to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=FixedQParamsObserver.with_args(scale=1.0 / 256.0, zero_point=0, dtype=torch.quint8, quant_min=0,
                                            quant_max=255))
default_fixed_qparams_range_neg1to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=FixedQParamsObserver.with_args(scale=2.0 / 256.0, zero_point=128, dtype=torch.quint8, quant_min=0,
                                            quant_max=255))
