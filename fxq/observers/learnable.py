"""LearnableFakeQuantize: LSQ, the scale (and zero point) as parameters trained with the weights.

Esser et al., "Learned Step Size Quantization" (2020): the step size gets a straight-through gradient, scaled by
``1 / sqrt(numel * quant_max)`` when ``use_grad_scaling`` so it learns at the pace of the weights. The first batch
initializes scale and zero point from the observer; after that they are learned (``observer_enabled`` then only
matters while learning is off, where the module behaves like :class:`~fxq.observers.FakeQuantize`).

    >>> import torch
    >>> lsq = LearnableFakeQuantize(quant_min=0, quant_max=15, use_grad_scaling=True)
    >>> x = torch.rand(64, requires_grad=True)
    >>> lsq(x).sum().backward()
    >>> lsq.scale.grad is not None
    True
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fxq.observers import qparams as qp
from fxq.observers.fake_quantize import FakeQuantizeBase
from fxq.observers.minmax import MovingAverageMinMaxObserver

__all__ = ["LearnableFakeQuantize"]


class LearnableFakeQuantize(FakeQuantizeBase):
    """Fake quantization whose ``scale`` and ``zero_point`` are ``nn.Parameter``s (PyTorch AO's
    ``_LearnableFakeQuantize`` keywords). ``channel_len`` > 0 makes it per channel along the observer's ch_axis;
    -1 (default) learns one scale, or as many as the first batch has channels for a per-channel observer."""

    def __init__(self, observer: Any = MovingAverageMinMaxObserver, quant_min: int = 0, quant_max: int = 255,
                 scale: float = 1.0, zero_point: float = 0.0, channel_len: int = -1, use_grad_scaling: bool = False,
                 **observer_kwargs: Any) -> None:
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        activation_post_process = observer(**observer_kwargs)
        super().__init__(dtype=activation_post_process.dtype)
        self.activation_post_process = activation_post_process
        qscheme = activation_post_process.qscheme
        self._set_plain(qscheme=qscheme, quant_min=quant_min, quant_max=quant_max, use_grad_scaling=use_grad_scaling,
                        ch_axis=getattr(activation_post_process, "ch_axis", -1),
                        is_per_channel=qscheme in qp.PER_CHANNEL_QSCHEMES,
                        is_symmetric=qscheme in qp.SYMMETRIC_QSCHEMES)
        count = channel_len if channel_len > 0 else 1
        self.scale = nn.Parameter(torch.full((count,), float(scale)))
        self.zero_point = nn.Parameter(torch.full((count,), float(zero_point)), requires_grad=not self.is_symmetric)
        self.register_buffer("learning_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("initialized", torch.tensor([0], dtype=torch.uint8))
        self.register_buffer("eps", torch.tensor([torch.finfo(torch.float32).eps]))

    def enable_param_learning(self) -> "LearnableFakeQuantize":
        """Learn scale and zero point by gradient (the default once initialized)."""
        self.learning_enabled[0] = 1
        return self

    def enable_static_estimate(self) -> "LearnableFakeQuantize":
        """Take scale and zero point from the observer at every batch, as FakeQuantize does."""
        self.learning_enabled[0] = 0
        self.enable_observer()
        return self

    def has_data(self) -> bool:
        return bool(self.initialized[0])

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frozen_qparams()

    def frozen_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and integer zero point the kernel uses (scale kept above eps, zero point rounded and clamped)."""
        scale = self.scale.detach().clamp(min=float(self.eps)).clone()
        zero_point = torch.zeros_like(self.zero_point) if self.is_symmetric else self.zero_point.detach()
        zero_point = zero_point.round().clamp(self.quant_min, self.quant_max)
        return scale, zero_point.to(torch.long if self.is_per_channel else torch.int)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        static = not bool(self.initialized[0]) or (self.learning_enabled[0] == 0 and self.observer_enabled[0] == 1)
        if static:
            self._initialize_from(x)
        if self.fake_quant_enabled[0] == 0:
            return x
        # out of place: a quantizer shared by two ops is used twice in one graph, and autograd saved the first use
        scale = self.scale.clamp(min=float(self.eps))
        zero_point = torch.zeros_like(self.zero_point) if self.is_symmetric else self.zero_point
        grad_factor = 1.0 / math.sqrt(x.numel() * self.quant_max) if self.use_grad_scaling else 1.0
        if self.is_per_channel:
            return torch._fake_quantize_learnable_per_channel_affine(
                x, scale, zero_point, self.ch_axis, self.quant_min, self.quant_max, grad_factor)
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, scale, zero_point, self.quant_min, self.quant_max, grad_factor)

    def _initialize_from(self, x: torch.Tensor) -> None:
        self.activation_post_process(x.detach())
        scale, zero_point = self.activation_post_process.calculate_qparams()
        with torch.no_grad():
            if self.scale.shape != scale.shape:  # per channel: the channel count comes with the first batch
                self.scale.data = torch.empty_like(scale, dtype=torch.float)
                self.zero_point.data = torch.empty_like(scale, dtype=torch.float)
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point.float())
        self.initialized[0] = 1

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("scale", "zero_point"):
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != getattr(self, name).shape:
                getattr(self, name).data = torch.empty_like(incoming, dtype=torch.float)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"quant_min={self.quant_min}, quant_max={self.quant_max}, qscheme={self.qscheme}, "
                f"learning_enabled={int(self.learning_enabled)}, use_grad_scaling={self.use_grad_scaling}")
