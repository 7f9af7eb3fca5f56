"""EqualizationQConfig: which observers input-weight equalization uses for one layer.

    >>> import fxq
    >>> eq = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)
    >>> eq.global_qconfig.input_activation().__class__.__name__
    'InputEqualizationObserver'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from fxq.config.qconfig import QConfig
from fxq.equalization.observers import InputEqualizationObserver, WeightEqualizationObserver


class EqualizationQConfig(QConfig):
    """``(input_activation, weight)`` constructors of the equalization observers for one layer.

    A QConfig subclass so a QConfigMapping holds it like any qconfig (``set_global``, ``set_module_name``, ...).
    It holds constructors, not observer instances: prepare builds one observer per layer.

    >>> from fxq.equalization.observers import InputEqualizationObserver, WeightEqualizationObserver
    >>> EqualizationQConfig(InputEqualizationObserver.with_args(dtype=torch.quint8), WeightEqualizationObserver)
    EqualizationQConfig(input_activation=InputEqualizationObserver(quint8), weight=WeightEqualizationObserver())
    """

    __slots__ = ()

    def __new__(cls, input_activation: Callable[..., Any] = nn.Identity,
                weight: Callable[..., Any] = nn.Identity) -> "EqualizationQConfig":
        for field, value in (("input_activation", input_activation), ("weight", weight)):
            if isinstance(value, nn.Module):
                name = type(value).__name__
                raise TypeError(
                    f"EqualizationQConfig({field}=...) got an observer instance of {name}; pass the class "
                    f"`{name}` or a constructor with arguments, e.g. `{name}.with_args(dtype=torch.quint8)`: "
                    f"prepare builds one observer per layer")
        return super().__new__(cls, input_activation, weight)

    @property
    def input_activation(self) -> Callable[..., Any]:
        return self.activation

    def short(self) -> str:
        from fxq.config.qconfig import describe_constructor
        return (f"EqualizationQConfig(input_activation={describe_constructor(self.activation)}, "
                f"weight={describe_constructor(self.weight)})")

    __str__ = short
    __repr__ = short


input_equalization_observer = InputEqualizationObserver.with_args(dtype=torch.quint8,
                                                                  qscheme=torch.per_tensor_symmetric)
weight_equalization_observer = WeightEqualizationObserver.with_args(dtype=torch.qint8,
                                                                    qscheme=torch.per_channel_symmetric)
default_equalization_qconfig = EqualizationQConfig(input_equalization_observer, weight_equalization_observer)


@dataclass(frozen=True)
class CrossLayerEqualization:
    """Pass as ``prepare_fx(..., _equalization_config=CrossLayerEqualization())`` to run data-free cross-layer
    equalization (:func:`fxq.cross_layer_equalize`) on the copy before tracing; ``input_weight`` optionally adds
    input-weight equalization with that QConfigMapping afterwards.

    >>> import fxq
    >>> CrossLayerEqualization(iterations=4).iterations
    4
    """

    input_weight: Optional[Any] = None
    iterations: int = 8


def split_equalization_config(config: Any) -> tuple[Optional[CrossLayerEqualization], Any]:
    """(cross-layer options or None, input-weight QConfigMapping-like or None) from ``_equalization_config``.
    A :class:`fxq.SmoothQuant` config contributes its ``input_weight`` mapping (smoothing is read separately)."""
    from fxq.equalization.smoothing import SmoothQuant
    if isinstance(config, CrossLayerEqualization):
        return config, config.input_weight
    if isinstance(config, SmoothQuant):
        return None, config.input_weight
    return None, config
