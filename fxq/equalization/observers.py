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

from typing import Any, Optional

import torch
from torch import nn

from fxq.equalization import histograms
from fxq.equalization.scales import weight_columns
from fxq.observers.constructor import ObserverConstructor

_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


class ChannelRangeObserver(nn.Module):
    """Running min/max of dim ``ch_axis`` of every tensor it sees; passes the tensor through unchanged.

    fxq also puts one after an intermediate quantization observer of an equalized chain
    (``linear1 -> obs -> leaky_relu -> obs -> linear2``) so convert can rescale that observer exactly.
    What else it records depends on the quantization observer whose state convert rebuilds from it
    (fxq.equalization.requantize): ``bins > 0`` keeps a histogram per channel (for a HistogramObserver),
    ``keep_batches`` each batch's per-channel min/max (for a moving-average observer). ``channel_map`` (set by
    prepare after a shape op) says which channel of the previous layer each feature came from: features of one
    channel share a scale, so they share one histogram.
    """

    _resizable = ("min_val", "max_val", "histogram", "batch_min", "batch_max", "channel_map")

    def __init__(self, ch_axis: int = 1) -> None:
        super().__init__()
        self.ch_axis = ch_axis  # 1 for conv inputs (N, C, ...); -1 for linear inputs (..., C)
        self.bins, self.keep_batches = 0, False
        for name in self._resizable:
            self.register_buffer(name, torch.tensor([]))
        self.channel_map = torch.tensor([], dtype=torch.long)

    with_args = classmethod(lambda cls, **kwargs: ObserverConstructor(cls, kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.ndim > 5:
            raise ValueError(f"{type(self).__name__} expects a linear/conv tensor of 2 to 5 dimensions, "
                             f"got shape {tuple(x.shape)}")
        columns = self._columns(x.detach().float())
        current_min, current_max = columns.amin(dim=1), columns.amax(dim=1)
        if self.keep_batches:
            self.batch_min = torch.cat([self.batch_min.reshape(-1, columns.shape[0]), current_min.unsqueeze(0)])
            self.batch_max = torch.cat([self.batch_max.reshape(-1, columns.shape[0]), current_max.unsqueeze(0)])
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = current_min, current_max
            if self.bins:
                low, high = self.row_range()
                self.bins = histograms.bins_for(low.numel(), self.bins)
                self.histogram = histograms.row_histograms(columns, low, high, self.bins, self._rows())
            return x
        old_range = self.row_range()
        self.min_val = torch.minimum(self.min_val, current_min)
        self.max_val = torch.maximum(self.max_val, current_max)
        if self.bins:
            self._add_to_histograms(columns, old_range)
        return x

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)

    def _rows(self):
        return self.channel_map if self.channel_map.numel() else None

    def row_range(self, scale: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per histogram row (channel): the min and max of its features, times ``scale`` (per feature, equal
        within a channel) when given."""
        low, high = (self.min_val, self.max_val) if scale is None else (self.min_val * scale, self.max_val * scale)
        rows = self._rows()
        if rows is None:
            return low, high
        count = int(rows.max()) + 1
        return (torch.zeros(count).scatter_reduce(0, rows, low, "amin", include_self=False),
                torch.zeros(count).scatter_reduce(0, rows, high, "amax", include_self=False))

    def _add_to_histograms(self, columns: torch.Tensor, old_range: tuple) -> None:
        new_low, new_high = self.row_range()
        widened = (new_low != old_range[0]) | (new_high != old_range[1])
        histogram = self.histogram
        if widened.any():
            histogram = histogram.clone()
            histogram[widened] = histograms.rebin_rows(histogram[widened], old_range[0][widened],
                                                       old_range[1][widened], new_low[widened], new_high[widened])
        self.histogram = histogram + histograms.row_histograms(columns, new_low, new_high, self.bins, self._rows())

    def has_data(self) -> bool:
        return self.min_val.numel() > 0

    def scaled_range(self, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-tensor (min, max) this tensor would have had with column c multiplied by ``scale[c] > 0``."""
        return (self.min_val * scale).min(), (self.max_val * scale).max()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._resizable:  # buffers start empty; take the saved shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.histogram.ndim == 2:  # the saved record may have chosen fewer bins (histograms.bins_for)
            self.bins = self.histogram.shape[1]


class InputEqualizationObserver(ChannelRangeObserver):
    """Per-input-column min/max of an equalized layer's input; sits after the input quantization observer.

    ``dtype`` / ``qscheme`` / ``quant_min`` / ``quant_max`` are accepted for PyTorch AO compatibility; the input is
    still quantized per tensor by its quantization observer, so only per-tensor schemes are allowed.
    """

    def __init__(self, dtype: torch.dtype = torch.quint8, qscheme: Any = torch.per_tensor_affine,
                 quant_min: Any = None, quant_max: Any = None, factory_kwargs: Any = None) -> None:
        if qscheme not in _PER_TENSOR:
            raise TypeError(f"InputEqualizationObserver(qscheme={qscheme}): the equalized input is quantized per "
                            f"tensor; use qscheme=torch.per_tensor_affine or torch.per_tensor_symmetric")
        super().__init__(ch_axis=1)
        self.dtype, self.qscheme, self.quant_min, self.quant_max = dtype, qscheme, quant_min, quant_max
        # channel_map (set by prepare) non-empty means the input comes from another layer through a foldable chain:
        # entry f is that layer's output channel feeding input feature f (arange for a plain chain; each conv
        # channel repeated H*W times after a flatten). Empty: convert inserts a mul.


class WeightEqualizationObserver(ChannelRangeObserver):
    """Per-input-channel min/max of a weight (dim 1; for a grouped conv, each group's column of its own rows).
    For ``F.linear`` / ``F.conv*d`` it sits on the weight path."""

    def __init__(self, dtype: torch.dtype = torch.qint8, qscheme: Any = torch.per_tensor_affine,
                 quant_min: Any = None, quant_max: Any = None, factory_kwargs: Any = None) -> None:
        super().__init__(ch_axis=1)  # weights are (out, in / groups, ...) for linear and conv alike
        self.dtype, self.qscheme, self.quant_min, self.quant_max = dtype, qscheme, quant_min, quant_max
        self.groups = 1  # prepare sets a grouped conv's groups: its columns are then per input channel

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        return weight_columns(x, self.groups)
