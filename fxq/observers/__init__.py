"""Observers: record statistics of tensors during calibration and compute quantization parameters.

Same classes, constructor keywords, defaults and numbers as PyTorch AO's observer module, with no
dependency on PyTorch AO. The HistogramObserver's range search and per-batch counting are vectorised (same
results, far faster).

    >>> import torch
    >>> from fxq.observers import default_weight_observer, observer_qparams_as_python
    >>> observer = default_weight_observer()
    >>> _ = observer(torch.tensor([-0.5, 1.0]))
    >>> observer_qparams_as_python(observer)
    (0.007843137718737125, 0)
"""
from __future__ import annotations

import torch

from fxq.observers.base import ObserverBase, UniformQuantizationObserverBase
from fxq.observers.constructor import ObserverConstructor, constructor_parts
from fxq.observers.histogram import HistogramObserver
from fxq.observers.percentile import PercentileObserver
from fxq.observers.pair_limited import PairLimitedPerChannelObserver
from fxq.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from fxq.observers.qparams import quant_range
from fxq.observers.simple import FixedQParamsObserver, NoopObserver, PlaceholderObserver
from fxq.observers.fake_quantize import (FakeQuantize, FakeQuantizeBase, FixedQParamsFakeQuantize,
                                         FusedMovingAvgObsFakeQuantize, disable_fake_quant, disable_observer,
                                         enable_fake_quant, enable_observer)
from fxq.observers.learnable import LearnableFakeQuantize
from fxq.observers.weight_grids import BinaryWeightFakeQuantize, GroupedWeightFakeQuantize
from fxq.observers import qat_defaults
from fxq.observers.qat_defaults import *  # noqa: F401,F403  (PyTorch AO's default fake-quant names)

__all__ = [
    "ObserverBase",
    "UniformQuantizationObserverBase",
    "ObserverConstructor",
    "constructor_parts",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "PairLimitedPerChannelObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PercentileObserver",
    "PlaceholderObserver",
    "FixedQParamsObserver",
    "NoopObserver",
    "quant_range",
    "observer_qparams_as_python",
    "default_observer",
    "default_weight_observer",
    "weight_observer_range_neg_127_to_127",
    "default_per_channel_weight_observer",
    "per_channel_weight_observer_range_neg_127_to_127",
    "default_histogram_observer",
    "default_placeholder_observer",
    "default_dynamic_quant_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "default_fixed_qparams_range_0to1_observer",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_affine_fixed_qparams_observer",
    "FakeQuantizeBase", "FakeQuantize", "FixedQParamsFakeQuantize", "FusedMovingAvgObsFakeQuantize",
    "LearnableFakeQuantize", "GroupedWeightFakeQuantize", "BinaryWeightFakeQuantize", "enable_fake_quant", "disable_fake_quant", "enable_observer", "disable_observer",
]
__all__ += qat_defaults.__all__

# The defaults below carry PyTorch AO's names and settings, so configs written for PyTorch AO read the same.

# Activations: 7-bit unsigned, so x86 int8 kernels cannot overflow.
default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_placeholder_observer = PlaceholderObserver
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
)

# Weights: signed, symmetric around 0.
default_weight_observer = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric
)
# [-127, 127] keeps -128 out, and eps 2**-12 keeps qnnpack's requantization scale in range.
weight_observer_range_neg_127_to_127 = MinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-127, quant_max=127, eps=2**-12
)
per_channel_weight_observer_range_neg_127_to_127 = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127, eps=2**-12
)

# Embedding weights: one float zero point per row.
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.quint8, qscheme=torch.per_channel_affine_float_qparams, ch_axis=0
)
default_float_qparams_observer_4bit = PerChannelMinMaxObserver.with_args(
    dtype=torch.quint4x2, qscheme=torch.per_channel_affine_float_qparams, ch_axis=0
)

# Ops with a known output range (sigmoid: [0, 1]; tanh: [-1, 1]).
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=torch.quint8, quant_min=0, quant_max=255
)
default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255
)
default_symmetric_fixed_qparams_observer = default_fixed_qparams_range_neg1to1_observer
default_affine_fixed_qparams_observer = default_fixed_qparams_range_0to1_observer


def observer_qparams_as_python(observer: ObserverBase) -> tuple[float, int]:
    """A per-tensor observer's (scale, zero_point) as Python numbers, e.g. for torch.quantize_per_tensor.

    Raises a ValueError for per-channel observers (use calculate_qparams for their tensors).
    """
    scale, zero_point = observer.calculate_qparams()
    if scale.numel() != 1:
        raise ValueError(
            f"{type(observer).__name__} has {scale.numel()} scales (one per channel); observer_qparams_as_python "
            "is for per-tensor observers. Use observer.calculate_qparams() to get the tensors."
        )
    return float(scale), int(zero_point)
