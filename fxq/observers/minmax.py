"""Observers that record the (running or moving-average) min and max, per tensor or per channel.

    >>> import torch
    >>> from fxq.observers import PerChannelMinMaxObserver
    >>> observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    >>> _ = observer(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    >>> observer.calculate_qparams()[0]
    tensor([0.0157, 0.0039])
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from fxq.observers import qparams as qp
from fxq.observers.base import UniformQuantizationObserverBase, _factory

_EPS = torch.finfo(torch.float32).eps


class MinMaxObserver(UniformQuantizationObserverBase):
    """Records the running min and max of everything it sees; qparams cover exactly that range.

    >>> observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    >>> _ = observer(torch.tensor([-1.0, 0.5]))
    >>> observer.calculate_qparams()
    (tensor([0.0078]), tensor([0]))
    """

    _allowed_qschemes = qp.PER_TENSOR_QSCHEMES

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict] = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.register_buffer("min_val", torch.full((), float("inf"), **_factory(factory_kwargs)))
        self.register_buffer("max_val", torch.full((), float("-inf"), **_factory(factory_kwargs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        values = x.detach()
        dtype = self._buffers["min_val"].dtype  # _buffers, not nn.Module.__getattr__: this runs once per batch
        values = values if values.dtype == dtype else values.to(dtype)
        current_min, current_max = torch.aminmax(values)
        self._count_batch()
        if not bool(torch.isfinite(current_min + current_max)):  # one check a batch: NaN or an infinity somewhere
            finite = self._finite(values)
            if finite.numel() == 0:
                return x
            current_min, current_max = torch.aminmax(finite)
        self._record(current_min, current_max)
        return x

    def _finite(self, values: torch.Tensor) -> torch.Tensor:
        """values without infinities (PyTorch AO's HistogramObserver drops them too); NaN is an error."""
        if bool(torch.isnan(values).any()):
            raise self.non_finite_error("NaN values")
        warnings.warn(f"{self.__dict__.get('fxq_site') or type(self).__name__}: ignoring infinite values in "
                      f"calibration batch {self.batch_number()}", stacklevel=3)
        return values[torch.isfinite(values)]

    def _record(self, current_min: torch.Tensor, current_max: torch.Tensor) -> None:
        min_val, max_val = self._buffers["min_val"], self._buffers["max_val"]
        torch.minimum(current_min, min_val, out=min_val)
        torch.maximum(current_max, max_val, out=max_val)

    def has_data(self) -> bool:
        return bool(self.min_val != float("inf") or self.max_val != float("-inf"))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._qparams_from_min_max(self.min_val, self.max_val)

    def reset_min_max_vals(self) -> None:
        """Forget everything observed so far."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    def extra_repr(self) -> str:
        if not self.has_data():
            return "no data"
        return f"min_val={self.min_val}, max_val={self.max_val}"


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Records an exponential moving average of each batch's min and max (weight `averaging_constant`).

    >>> observer = MovingAverageMinMaxObserver(averaging_constant=0.5)
    >>> _ = observer(torch.tensor([0.0, 2.0])); _ = observer(torch.tensor([0.0, 4.0]))
    >>> float(observer.max_val)
    3.0
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        factory_kwargs: Optional[dict] = None,
    ) -> None:
        if is_dynamic and averaging_constant != 1:
            raise ValueError(
                f"MovingAverageMinMaxObserver(is_dynamic=True, averaging_constant={averaging_constant}) is not "
                "supported: a dynamic observer must forget earlier batches, so set averaging_constant=1"
            )
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.averaging_constant = averaging_constant

    def _record(self, current_min: torch.Tensor, current_max: torch.Tensor) -> None:
        if self.has_data():
            current_min = self.min_val + self.averaging_constant * (current_min - self.min_val)
            current_max = self.max_val + self.averaging_constant * (current_max - self.max_val)
        self.min_val.copy_(current_min)
        self.max_val.copy_(current_max)


class PerChannelMinMaxObserver(UniformQuantizationObserverBase):
    """Records the running min and max of each slice along `ch_axis`; one scale/zero point per channel.

    >>> observer = PerChannelMinMaxObserver(ch_axis=1)
    >>> _ = observer(torch.zeros(2, 3, 4))
    >>> observer.min_val.shape
    torch.Size([3])
    """

    _allowed_qschemes = qp.PER_CHANNEL_QSCHEMES
    _resizable_buffers = ("min_val", "max_val")

    def __init__(
        self,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict] = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
    ) -> None:
        self._reject_dynamic(is_dynamic)
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.ch_axis = ch_axis
        # Empty until the first batch tells how many channels there are.
        self.register_buffer("min_val", torch.tensor([], **_factory(factory_kwargs)))
        self.register_buffer("max_val", torch.tensor([], **_factory(factory_kwargs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        rows = self._channels_first(x)
        # amin + amax, not aminmax(dim=1): the fused reduction over a dim is ~14x slower on CPU (same values)
        current_min, current_max = torch.amin(rows, dim=1), torch.amax(rows, dim=1)
        self._count_batch()
        if not bool(torch.isfinite(current_min.sum() + current_max.sum())):
            raise self.non_finite_error("NaN or infinite values (a per-channel range cannot skip them)")
        if self.has_data() and current_min.shape != self.min_val.shape:
            raise ValueError(
                f"{type(self).__name__}(ch_axis={self.ch_axis}) saw {current_min.numel()} channels, but earlier "
                f"inputs had {self.min_val.numel()}; per-channel observers need the same channel count every batch"
            )
        self._record(current_min, current_max)
        return x

    def _channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """x as a (channels, everything else) matrix; a view when ch_axis is already 0."""
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(
                f"{type(self).__name__}(ch_axis={self.ch_axis}) cannot observe a tensor of shape {tuple(x.shape)}; "
                f"ch_axis must be in [{-x.dim()}, {x.dim() - 1}]"
            )
        x = x.detach().to(self.min_val.dtype)
        return x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1)

    def _record(self, current_min: torch.Tensor, current_max: torch.Tensor) -> None:
        if self.has_data():
            current_min = torch.min(current_min, self.min_val)
            current_max = torch.max(current_max, self.max_val)
        self._store(current_min, current_max)

    def _store(self, min_val: torch.Tensor, max_val: torch.Tensor) -> None:
        if self.min_val.shape != min_val.shape:
            self.min_val.resize_(min_val.shape)
            self.max_val.resize_(max_val.shape)
        self.min_val.copy_(min_val)
        self.max_val.copy_(max_val)

    def has_data(self) -> bool:
        return self.min_val.numel() > 0

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._qparams_from_min_max(self.min_val, self.max_val)

    def reset_min_max_vals(self) -> None:
        """Forget everything observed so far (the channel count too)."""
        self.min_val.resize_(0)
        self.max_val.resize_(0)

    def extra_repr(self) -> str:
        if not self.has_data():
            return f"ch_axis={self.ch_axis}, no data"
        return f"ch_axis={self.ch_axis}, min_val={self.min_val}, max_val={self.max_val}"


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel moving averages of min and max (weight `averaging_constant`)."""

    def __init__(
        self,
        averaging_constant: float = 0.01,
        ch_axis: int = 0,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_channel_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: float = _EPS,
        is_dynamic: bool = False,
        factory_kwargs: Optional[dict] = None,
    ) -> None:
        super().__init__(ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.averaging_constant = averaging_constant

    def _record(self, current_min: torch.Tensor, current_max: torch.Tensor) -> None:
        if self.has_data():
            current_min = self.min_val + self.averaging_constant * (current_min - self.min_val)
            current_max = self.max_val + self.averaging_constant * (current_max - self.max_val)
        self._store(current_min, current_max)
