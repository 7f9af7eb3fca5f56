"""The observer base classes: the interface every observer has, and the shared range handling.

    >>> import torch
    >>> from fxq.observers import MinMaxObserver
    >>> observer = MinMaxObserver()
    >>> observer.has_data()
    False
    >>> _ = observer(torch.tensor([-1.0, 3.0]))
    >>> observer.has_data(), observer.calculate_qparams()
    (True, (tensor([0.0157]), tensor([64], dtype=torch.int32)))
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from fxq.observers import qparams as qp
from fxq.observers.constructor import ObserverConstructor


class ObserverBase(nn.Module):
    """An observer records statistics of the tensors passing through it and turns them into qparams.

    Attributes every observer has: `dtype`, `qscheme`, `quant_min`, `quant_max`, `reduce_range`,
    `is_dynamic` (None where an attribute does not apply). `forward(x)` returns `x` unchanged.
    """

    # Buffers that start empty (or at a placeholder shape) and take the shape of the data they see;
    # loading a state_dict resizes them first instead of failing on the shape mismatch.
    _resizable_buffers: tuple[str, ...] = ()

    def __init__(self, dtype: torch.dtype, is_dynamic: bool = False) -> None:
        super().__init__()
        # qscheme and the range are set by subclasses that quantize
        self._set_plain(dtype=dtype, is_dynamic=is_dynamic, qscheme=None, quant_min=None, quant_max=None,
                        reduce_range=False)

    def _set_plain(self, **settings: Any) -> None:
        """Set attributes that are not tensors or modules, skipping nn.Module.__setattr__'s checks.

        Those checks cost ~3 us an attribute; prepare builds an observer per value, thousands on a large model.
        """
        self.__dict__.update(settings)

    @classmethod
    def with_args(cls, **kwargs: Any) -> ObserverConstructor:
        """A constructor that builds `cls(**kwargs)` on each call; picklable, chainable with `.with_args`.

        >>> import torch
        >>> from fxq.observers import MinMaxObserver
        >>> MinMaxObserver.with_args(dtype=torch.qint8)
        MinMaxObserver.with_args(dtype=torch.qint8)
        """
        return ObserverConstructor(cls, kwargs)

    @classmethod
    def with_callable_args(cls, **callable_kwargs: Any) -> ObserverConstructor:
        """A constructor whose kwargs are computed by calling these functions at each construction."""
        return ObserverConstructor(cls, {}, callable_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _count_batch(self) -> int:
        """Number this batch (from 1), for messages about it; a plain attribute, so no state_dict entry."""
        count = self.__dict__.get("batches_seen", 0) + 1
        self.__dict__["batches_seen"] = count
        return count

    def batch_number(self) -> int:
        """Which calibration batch this is (from 1): calls so far over the calls a batch makes (shared observers)."""
        calls_per_batch = self.__dict__.get("fxq_calls_per_batch", 1)
        return -(-self.__dict__.get("batches_seen", 0) // calls_per_batch)

    def non_finite_error(self, what: str) -> ValueError:
        """The error for a batch holding NaN (or infinities where they cannot be skipped): which observer, which
        node it watches (``fxq_site``, set where prepare inserts it), which batch, and what to do."""
        site = self.__dict__.get("fxq_site") or f"{type(self).__name__} (not inserted by prepare_fx)"
        batch = self.batch_number()
        return ValueError(
            f"{site}: calibration batch {batch} (counting the prepared model's calls from 1) holds {what}; an "
            "observer records no range from them. Check that batch and the layers before this node (fxq.compare "
            "shows per-layer values), or leave the node float with QConfigMapping.set_module_name(..., None)")

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not compute quantization parameters")

    def has_data(self) -> bool:
        """True when calculate_qparams has real statistics (or fixed values) to work from."""
        return False

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for name in self._resizable_buffers:
            incoming = state_dict.get(prefix + name)
            buffer = getattr(self, name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != buffer.shape:
                buffer.resize_(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class UniformQuantizationObserverBase(ObserverBase):
    """Base of the observers that compute affine/symmetric qparams from a recorded range.

    Validates dtype, qscheme and the quantization range at construction, with errors that name the
    argument and list the valid values. `eps` (the smallest scale) lives in a buffer, as in PyTorch AO.
    """

    _allowed_qschemes: tuple = qp.PER_TENSOR_QSCHEMES + qp.PER_CHANNEL_QSCHEMES

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict] = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        owner = type(self).__name__
        qp.check_qscheme(owner, qscheme, self._allowed_qschemes)
        low, high = qp.quant_range(dtype, reduce_range, quant_min, quant_max, owner)
        self._set_plain(qscheme=qscheme, reduce_range=reduce_range, quant_min=low, quant_max=high,
                        has_customized_qrange=quant_min is not None and quant_max is not None)
        if qscheme in qp.SYMMETRIC_QSCHEMES and reduce_range and dtype == torch.quint8:
            raise ValueError(
                f"{owner}(qscheme={qscheme}, reduce_range=True, dtype=torch.quint8) is not supported: symmetric "
                "quint8 centres on 128, outside the reduced range [0, 127]. Use dtype=torch.qint8 or reduce_range=False."
            )
        self.register_buffer("eps", torch.full((1,), eps, **_factory(factory_kwargs)))

    def _qparams_from_min_max(self, min_val: torch.Tensor, max_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return qp.qparams_from_min_max(self, min_val, max_val)

    def _reject_dynamic(self, is_dynamic: bool) -> None:
        if is_dynamic:
            raise ValueError(
                f"{type(self).__name__}(is_dynamic=True) is not supported; dynamic quantization computes qparams "
                "at run time. Use PlaceholderObserver.with_args(is_dynamic=True, dtype=...) for the activation."
            )


def _factory(factory_kwargs: Optional[dict]) -> dict:
    """Keyword arguments for creating buffers: device and dtype from PyTorch AO's `factory_kwargs`."""
    return torch.nn.factory_kwargs(factory_kwargs)
