"""HistogramObserver: a running histogram, and qparams for the range that minimises the L2 error.

Updates follow PyTorch AO exactly: the first batch fixes the histogram's range to its min and max;
a later batch that widens the range re-bins the old histogram into the new range (spreading each
old bin over 16 sub-bins, placed by their centres) before adding the new counts. The counting and
re-binning (histogram_bins.py) give PyTorch AO's numbers bit for bit at a fraction of its cost.

    >>> import torch
    >>> observer = HistogramObserver(bins=64)
    >>> _ = observer(torch.linspace(0.0, 1.0, 1000))
    >>> observer.calculate_qparams()
    (tensor([0.0039]), tensor([0], dtype=torch.int32))
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from fxq.observers import qparams as qp
from fxq.observers.base import UniformQuantizationObserverBase, _factory
from fxq.observers.histogram_bins import SMALL_INPUT, histc, rebin
from fxq.observers.histogram_search import search_range

_INF = float("inf")
_UPSAMPLE_RATE = 16  # sub-bins per old bin when re-binning; reduces the error of moving bin edges


class HistogramObserver(UniformQuantizationObserverBase):
    """Records a `bins`-bin histogram of everything it sees; qparams clip outliers to minimise L2 error."""

    _allowed_qschemes = qp.PER_TENSOR_QSCHEMES
    _resizable_buffers = ("min_val", "max_val")

    def __init__(
        self,
        bins: int = 2048,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict] = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
    ) -> None:
        self._reject_dynamic(is_dynamic)
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"HistogramObserver(bins={bins!r}): bins must be a positive int")
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.register_buffer("histogram", torch.zeros(bins, **_factory(factory_kwargs)))
        self.register_buffer("min_val", torch.full((), float("inf"), **_factory(factory_kwargs)))
        self.register_buffer("max_val", torch.full((), float("-inf"), **_factory(factory_kwargs)))
        # The error is measured against all 2**bits levels of the dtype, whatever quant_min/max say (as PyTorch AO).
        self._set_plain(bins=bins, dst_nbins=2 ** torch.iinfo(dtype).bits, upsample_rate=_UPSAMPLE_RATE)

    def has_data(self) -> bool:
        return bool(self.min_val != float("inf") or self.max_val != float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        values = x.detach() if x.requires_grad else x
        self._count_batch()
        if values.numel() < SMALL_INPUT and self._counted_within_range(values):
            return x
        values, low, high = self._finite_values(values)
        if values.numel() == 0:
            return x
        # Calibration calls this once per observer per batch, so the fixed cost counts: buffers are read from
        # _buffers (nn.Module.__getattr__ costs microseconds) and range tests are made on Python floats.
        buffers = self._buffers
        old_min, old_max = buffers["min_val"].item(), buffers["max_val"].item()
        if old_min == _INF and old_max == -_INF:  # no data yet
            self._reset(values, low, high)
            return x
        new_min, new_max = min(old_min, low), max(old_max, high)
        counts = histc(values, self.bins, new_min, new_max)
        histogram = buffers["histogram"]
        if counts.device != histogram.device:
            counts = counts.to(histogram.device)
        if new_min == old_min and new_max == old_max:
            histogram.add_(counts)
        else:
            histogram.copy_(counts + self._rebinned(new_min, new_max))
            buffers["min_val"].fill_(new_min)
            buffers["max_val"].fill_(new_max)
        return x

    def _counted_within_range(self, values: torch.Tensor) -> bool:
        """Count a small batch into the histogram if all of it lies in the recorded range; False changes nothing.

        At a few hundred values, finding the batch's range (aminmax and two reads) costs as much as counting it,
        so the count comes first: torch.histc skips values outside [min, max] (NaN and infinities included), so
        a count of every value means the range holds and the histogram is what the full path would make.
        """
        buffers = self._buffers
        histogram, low, high = buffers["histogram"], buffers["min_val"].item(), buffers["max_val"].item()
        # No range yet, or a single value so far (torch.histc would pick its own range): the full path decides.
        if not low < high or values.device != histogram.device:
            return False
        counts = torch.histc(values, self.bins, min=low, max=high)
        if counts.sum().item() != values.numel():
            return False
        histogram.add_(counts)
        return True

    def _finite_values(self, x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """x without infinities (they would make the range infinite; PyTorch AO drops them too), and its min, max."""
        x_min, x_max = torch.aminmax(x)
        low, high = x_min.item(), x_max.item()
        if -_INF < low and high < _INF:  # also False for NaN
            return x, low, high
        if math.isnan(low) or math.isnan(high):
            raise self.non_finite_error("NaN values")
        warnings.warn(f"{self.__dict__.get('fxq_site') or 'HistogramObserver'}: ignoring infinite values in "
                      f"calibration batch {self.batch_number()}", stacklevel=3)
        x = x[x.abs() != _INF]
        if x.numel():
            low, high = (value.item() for value in torch.aminmax(x))
        return x, low, high

    def _reset(self, x: torch.Tensor, low: float, high: float) -> None:
        self.min_val.fill_(low)
        self.max_val.fill_(high)
        self.histogram.copy_(histc(x, self.bins, low, high))

    def _rebinned(self, new_min: float, new_max: float) -> torch.Tensor:
        """The recorded histogram moved onto `bins` equal bins over the wider range [new_min, new_max]."""
        if bool(self.min_val == self.max_val):  # everything so far was one value: it lands in a single new bin
            return torch.histc(self.min_val, self.bins, min=new_min, max=new_max) * torch.sum(self.histogram)
        return rebin(self.histogram, self.min_val, self.max_val, new_min, new_max, self.upsample_rate)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_data():
            return qp.default_qparams(self.min_val.device)
        if self.histogram.numel() != self.bins:
            raise RuntimeError(
                f"HistogramObserver(bins={self.bins}) holds a histogram of {self.histogram.numel()} bins; "
                "was a state_dict from an observer with different bins loaded?"
            )
        new_min, new_max = search_range(self.histogram, self.min_val, self.max_val, self.dst_nbins)
        return self._qparams_from_min_max(new_min, new_max)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        incoming = state_dict.get(prefix + "histogram")
        if isinstance(incoming, torch.Tensor) and incoming.shape != self.histogram.shape:
            error_msgs.append(
                f"HistogramObserver at '{prefix}' has bins={self.bins}, but the state_dict holds a histogram of "
                f"{incoming.numel()} bins; build the observer with HistogramObserver.with_args(bins={incoming.numel()})"
            )
            return
        for name, empty in (("min_val", float("inf")), ("max_val", float("-inf"))):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.numel() == 0:  # old PyTorch AO files stored [] for "unset"
                state_dict[prefix + name] = torch.tensor(empty)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        if not self.has_data():
            return f"bins={self.bins}, no data"
        return f"bins={self.bins}, min_val={self.min_val}, max_val={self.max_val}"
