"""Equalization: input-weight equalization (``prepare_fx(..., _equalization_config=...)``) and data-free
cross-layer equalization (:func:`cross_layer_equalize`).

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    >>> eq = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),),
    ...                           _equalization_config=eq)
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from fxq.equalization.cle import cross_layer_equalize
from fxq.equalization.observers import ChannelRangeObserver, InputEqualizationObserver, WeightEqualizationObserver
from fxq.equalization.smoothing import SmoothQuant, SmoothingObserver
from fxq.equalization.qconfig import (CrossLayerEqualization, EqualizationQConfig, default_equalization_qconfig,
                                      input_equalization_observer, split_equalization_config,
                                      weight_equalization_observer)

__all__ = ["EqualizationQConfig", "default_equalization_qconfig", "InputEqualizationObserver",
           "WeightEqualizationObserver", "ChannelRangeObserver", "CrossLayerEqualization", "cross_layer_equalize",
           "input_equalization_observer", "weight_equalization_observer", "apply_equalization_config", "SmoothQuant",
           "SmoothingObserver"]


def apply_equalization_config(model: nn.Module, config: Any) -> tuple[nn.Module, Optional[Any]]:
    """(model, input-weight QConfigMapping or None) for prepare_fx's ``_equalization_config``.

    A :class:`CrossLayerEqualization` config returns an equalized copy of ``model`` (the user's stays as is).
    """
    from fxq.config import QConfigMapping
    cross_layer, input_weight = split_equalization_config(config)
    if cross_layer is not None:
        model = cross_layer_equalize(model, cross_layer.iterations)
    return model, None if input_weight is None else QConfigMapping.coerce(input_weight)
