"""Equalization observers: per-column (dim 1) running min/max of a layer's input and of its weight.

A column is what a linear or conv multiplies by one input feature / input channel: dim 1 of the input
``(N, C, ...)`` and dim 1 of the weight ``(out, C, ...)``. Input-weight equalization balances the two ranges
per column (see :func:`fxq.equalization.scales.equalization_scale`).

    >>> import torch
    >>> observer = InputEqualizationObserver()
    >>> _ = observer(torch.tensor([[1.0, -4.0], [3.0, 2.0]]))
    >>> observer.min_val.tolist(), observer.max_val.tolist()
    ([1.0, -4.0], [3.0, 2.0])
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fxq.observers.constructor import ObserverConstructor

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


class ChannelRangeObserver(nn.Module):
    """Running min/max of dim 1 of every tensor it sees; passes the tensor through unchanged.

    fxq also puts one after an intermediate quantization observer of an equalized chain
    (``linear1 -> obs -> leaky_relu -> obs -> linear2``) so convert can rescale that observer exactly.
    """

    def __init__(self, ch_axis: int = 1) -> None:
        super().__init__()
        self.ch_axis = ch_axis  # 1 for conv inputs (N, C, ...); -1 for linear inputs (..., C)
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))

    with_args = classmethod(lambda cls, **kwargs: ObserverConstructor(cls, kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.ndim > 5:
            raise ValueError(f"{type(self).__name__} expects a linear/conv tensor of 2 to 5 dimensions, "
                             f"got shape {tuple(x.shape)}")
        columns = x.detach().movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1).float()
        current_min, current_max = columns.amin(dim=1), columns.amax(dim=1)
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = current_min, current_max
        else:
            self.min_val = torch.minimum(self.min_val, current_min)
            self.max_val = torch.maximum(self.max_val, current_max)
        return x

    def has_data(self) -> bool:
        return self.min_val.numel() > 0

    def scaled_range(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-tensor (min, max) this tensor would have had with column c multiplied by ``scale[c] > 0``."""
        return (self.min_val * scale).min(), (self.max_val * scale).max()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("min_val", "max_val"):  # buffers start empty; take the saved shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class InputEqualizationObserver(ChannelRangeObserver):
    """Per-input-column min/max of an equalized layer's input; sits after the input quantization observer.

    ``dtype`` / ``qscheme`` / ``quant_min`` / ``quant_max`` are accepted for torch.ao compatibility; the input is
    still quantized per tensor by its quantization observer, so only per-tensor schemes are allowed.
    """

    def __init__(self, dtype: torch.dtype = torch.quint8, qscheme: Any = torch.per_tensor_affine,
                 quant_min: Any = None, quant_max: Any = None, factory_kwargs: Any = None) -> None:
        if qscheme not in _PER_TENSOR:
            raise TypeError(f"InputEqualizationObserver(qscheme={qscheme}): the equalized input is quantized per "
                            f"tensor; use qscheme=torch.per_tensor_affine or torch.per_tensor_symmetric")
        super().__init__(ch_axis=1)
        self.dtype, self.qscheme, self.quant_min, self.quant_max = dtype, qscheme, quant_min, quant_max


class WeightEqualizationObserver(ChannelRangeObserver):
    """Per-column (dim 1) min/max of a weight. For ``F.linear`` / ``F.conv*d`` it sits on the weight path."""

    def __init__(self, dtype: torch.dtype = torch.qint8, qscheme: Any = torch.per_tensor_affine,
                 quant_min: Any = None, quant_max: Any = None, factory_kwargs: Any = None) -> None:
        super().__init__(ch_axis=1)  # weights are (out, in, ...) for linear and conv alike
        self.dtype, self.qscheme, self.quant_min, self.quant_max = dtype, qscheme, quant_min, quant_max
