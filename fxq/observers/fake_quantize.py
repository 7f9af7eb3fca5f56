"""Fake-quantize modules for quantization-aware training: observe, then quantize-dequantize in float.

Same class names, constructor keywords and defaults as PyTorch AO's fake_quantize module, built on fxq's own
observers and on torch core's fake-quantize kernels. A fake-quant is an observer too (``ObserverBase``), so
prepare inserts it where an observer would go and convert reads its qparams where it would read an observer's.

What convert reads is :meth:`FakeQuantizeBase.frozen_qparams`: the ``scale`` / ``zero_point`` buffers the last
forward used, never a fresh ``calculate_qparams`` (at 4 bits the two can differ), so the int8 model computes
what the fake-quant model computed.

    >>> import torch
    >>> fq = FakeQuantize(quant_min=0, quant_max=15)
    >>> y = fq(torch.tensor([0.0, 0.3, 1.5]))
    >>> fq.frozen_qparams()
    (tensor([0.1000]), tensor([0], dtype=torch.int32))
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from fxq.observers import qparams as qp
from fxq.observers.base import ObserverBase
from fxq.observers.minmax import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from fxq.observers.simple import FixedQParamsObserver

__all__ = ["FakeQuantizeBase", "FakeQuantize", "FixedQParamsFakeQuantize", "FusedMovingAvgObsFakeQuantize",
           "enable_fake_quant", "disable_fake_quant", "enable_observer", "disable_observer", "is_narrow_range"]


class FakeQuantizeBase(ObserverBase):
    """The switches every fake-quant has: ``fake_quant_enabled`` and ``observer_enabled``, as uint8 buffers so
    DistributedDataParallel broadcasts them with the other buffers."""

    def __init__(self, dtype: torch.dtype = torch.quint8) -> None:
        super().__init__(dtype=dtype)
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.uint8))

    def enable_fake_quant(self, enabled: bool = True) -> "FakeQuantizeBase":
        self.fake_quant_enabled[0] = 1 if enabled else 0
        return self

    def disable_fake_quant(self) -> "FakeQuantizeBase":
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> "FakeQuantizeBase":
        self.observer_enabled[0] = 1 if enabled else 0
        return self

    def disable_observer(self) -> "FakeQuantizeBase":
        return self.enable_observer(False)

    def frozen_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (scale, zero_point) the last forward used: what convert quantizes with."""
        return self.scale.detach().clone(), self.zero_point.detach().clone()


class FakeQuantize(FakeQuantizeBase):
    """``observer`` watches the input (while ``observer_enabled``); the input is then quantized to
    ``[quant_min, quant_max]`` with the observer's qparams and dequantized (while ``fake_quant_enabled``).

    >>> fq = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-8, quant_max=7,
    ...                             dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)()
    >>> fq(torch.tensor([-1.0, 0.26, 1.0]))
    tensor([-0.9333,  0.2667,  0.9333])
    """

    def __init__(self, observer: Any = MovingAverageMinMaxObserver, quant_min: Optional[int] = None,
                 quant_max: Optional[int] = None, is_dynamic: bool = False, **observer_kwargs: Any) -> None:
        if quant_min is not None and quant_max is not None:
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        if is_dynamic:
            observer_kwargs["is_dynamic"] = True
        activation_post_process = observer(**observer_kwargs)
        super().__init__(dtype=activation_post_process.dtype)
        self.activation_post_process = activation_post_process
        qscheme = activation_post_process.qscheme
        if qscheme not in qp.PER_TENSOR_QSCHEMES + qp.PER_CHANNEL_QSCHEMES:
            raise ValueError(f"{type(self).__name__}: observer {type(activation_post_process).__name__} has qscheme "
                             f"{qscheme}; fake quantization needs a per-tensor or per-channel one")
        self._set_plain(qscheme=qscheme, quant_min=activation_post_process.quant_min,
                        quant_max=activation_post_process.quant_max, is_dynamic=is_dynamic,
                        ch_axis=getattr(activation_post_process, "ch_axis", -1),
                        is_per_channel=qscheme in qp.PER_CHANNEL_QSCHEMES)
        float_zero_point = qscheme == torch.per_channel_affine_float_qparams
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.float if float_zero_point else torch.int))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.activation_post_process.calculate_qparams()

    def has_data(self) -> bool:
        return self.activation_post_process.has_data()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x.detach())
            self._store_qparams(*self.calculate_qparams())
        if self.fake_quant_enabled[0] == 1:
            x = self._fake_quantize(x)
        return x

    def _store_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        if self.scale.shape != scale.shape:  # per-channel: the channel count is known from the first batch
            self.scale.resize_(scale.shape)
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_per_channel:
            return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.ch_axis,
                                                          self.quant_min, self.quant_max)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled)}, observer_enabled={int(self.observer_enabled)}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # per-channel scales start as one element and take the channel count from the checkpoint
        for name in ("scale", "zero_point"):
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != getattr(self, name).shape:
                if not self.is_per_channel and incoming.numel() != 1:
                    error_msgs.append(f"{prefix}{name}: the checkpoint has {incoming.numel()} values (per channel) "
                                      f"but the quantizer {prefix.rstrip('.') or type(self).__name__} is per tensor "
                                      f"({self.qscheme}); prepare with a per-channel qconfig to load it")
                    state_dict = {k: v for k, v in state_dict.items() if k != prefix + name}
                    continue
                getattr(self, name).resize_(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class FixedQParamsFakeQuantize(FakeQuantize):
    """Fake quantization with fixed qparams (sigmoid: [0, 1], tanh: [-1, 1]); ``observer`` must be a
    :class:`~fxq.observers.FixedQParamsObserver` constructor."""

    def __init__(self, observer: Any) -> None:
        super().__init__(observer=observer)
        if not isinstance(self.activation_post_process, FixedQParamsObserver):
            raise TypeError(f"FixedQParamsFakeQuantize(observer=...) needs a FixedQParamsObserver constructor, got "
                            f"{type(self.activation_post_process).__name__}")
        self.scale = self.activation_post_process.scale
        self.zero_point = self.activation_post_process.zero_point

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale, self.zero_point


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """Moving-average min/max observation, qparams and fake quantization in one torch kernel
    (``torch.fused_moving_avg_obs_fake_quant``); the observer must be a moving-average min/max one."""

    def __init__(self, observer: Any = MovingAverageMinMaxObserver, quant_min: int = 0, quant_max: int = 255,
                 **observer_kwargs: Any) -> None:
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        if not isinstance(self.activation_post_process,
                          (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)):
            raise TypeError(f"FusedMovingAvgObsFakeQuantize needs a MovingAverage(PerChannel)MinMaxObserver, got "
                            f"{type(self.activation_post_process).__name__}; use FakeQuantize for other observers")
        # the fused kernel takes its switches as int64 tensors
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.long))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.long))
        self._set_plain(is_symmetric_quant=self.qscheme in qp.SYMMETRIC_QSCHEMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake_quant_enabled[0] == 0 and self.observer_enabled[0] == 1:
            # The kernel writes scale / zero_point only while fake-quantizing, so an observe-only phase would leave
            # them stale (pytorch/ao#2138, pytorch/pytorch PR 194815): run it fake-quantizing and drop the result,
            # so the buffers follow the statistics, with the kernel's own qparams formula.
            self._run_kernel(x.detach(), torch.ones_like(self.fake_quant_enabled))
            return x
        return self._run_kernel(x, self.fake_quant_enabled)

    def _run_kernel(self, x: torch.Tensor, fake_quant_enabled: torch.Tensor) -> torch.Tensor:
        observer = self.activation_post_process
        return torch.fused_moving_avg_obs_fake_quant(
            x, self.observer_enabled, fake_quant_enabled, observer.min_val, observer.max_val, self.scale,
            self.zero_point, observer.averaging_constant, self.quant_min, self.quant_max, self.ch_axis,
            self.is_per_channel, self.is_symmetric_quant)


def is_narrow_range(quantizer: Any) -> bool:
    """True when ``quantizer`` clamps to less than its dtype holds (reduce_range, 4-bit in an 8-bit dtype)."""
    bounds = qp.DTYPE_BOUNDS.get(getattr(quantizer, "dtype", None))
    return bounds is not None and (quantizer.quant_min, quantizer.quant_max) != bounds


def _switch(module: nn.Module, method: str) -> None:
    if isinstance(module, FakeQuantizeBase):
        getattr(module, method)()


def enable_fake_quant(module: nn.Module) -> None:
    """For ``model.apply(fxq.enable_fake_quant)``: turn fake quantization on in a fake-quant module."""
    _switch(module, "enable_fake_quant")


def disable_fake_quant(module: nn.Module) -> None:
    """For ``model.apply(fxq.disable_fake_quant)``: values pass through unquantized (statistics still update)."""
    _switch(module, "disable_fake_quant")


def enable_observer(module: nn.Module) -> None:
    """For ``model.apply(fxq.enable_observer)``: the fake-quant's statistics and qparams update again."""
    _switch(module, "enable_observer")


def disable_observer(module: nn.Module) -> None:
    """For ``model.apply(fxq.disable_observer)``: freeze the fake-quant's qparams."""
    _switch(module, "disable_observer")
