"""Observers that record nothing: they carry a configuration (dtype, fixed qparams) to convert.

    >>> import torch
    >>> observer = FixedQParamsObserver(scale=1.0 / 256.0, zero_point=0)
    >>> observer.calculate_qparams()
    (tensor([0.0039]), tensor([0], dtype=torch.int32))
"""
from __future__ import annotations

from typing import Optional

import torch

from fxq.observers import qparams as qp
from fxq.observers.base import ObserverBase


class PlaceholderObserver(ObserverBase):
    """Carries `dtype` and `is_dynamic` to convert: for float16, and for dynamic quantization, where the
    activation's qparams are computed at run time. There is nothing to compute at calibration.

    >>> PlaceholderObserver(dtype=torch.float16)
    PlaceholderObserver(dtype=torch.float16, is_dynamic=False)
    """

    def __init__(
        self,
        dtype: torch.dtype = torch.float32,
        custom_op_name: str = "",
        compute_dtype: Optional[torch.dtype] = None,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        qscheme: Optional[torch.qscheme] = None,
        eps: Optional[float] = None,
        is_dynamic: bool = False,
        per_token: bool = False,
    ) -> None:
        # compute_dtype is PyTorch AO's deprecated spelling of is_dynamic=True.
        super().__init__(dtype=dtype, is_dynamic=is_dynamic or compute_dtype is not None)
        self.qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.eps = torch.finfo(torch.float32).eps if eps is None else eps
        self.custom_op = custom_op_name
        self.per_token = per_token  # fxq's own: dynamic Linear quantizes each row with its own scale

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError(
            f"PlaceholderObserver(dtype={self.dtype}, is_dynamic={self.is_dynamic}) has no qparams to calculate: it "
            "only carries the dtype. Dynamic quantization computes them at run time; float16 needs none."
        )

    def extra_repr(self) -> str:
        per_token = ", per_token=True" if self.per_token else ""
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}{per_token}"


class NoopObserver(ObserverBase):
    """Passes its `dtype` (float16 by default) to convert and records nothing."""

    def __init__(self, dtype: torch.dtype = torch.float16, custom_op_name: str = "") -> None:
        super().__init__(dtype=dtype, is_dynamic=False)
        self.custom_op = custom_op_name

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError(f"NoopObserver(dtype={self.dtype}) has no qparams to calculate: it only carries the dtype")

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


class FixedQParamsObserver(ObserverBase):
    """Always reports the given scale and zero point: for ops whose output range is known (sigmoid, tanh)."""

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int = 0,
        quant_max: int = 255,
        is_dynamic: bool = False,
    ) -> None:
        if is_dynamic:
            raise ValueError("FixedQParamsObserver(is_dynamic=True) is not supported: its qparams are fixed")
        qp.check_dtype("FixedQParamsObserver", dtype)
        qp.check_qscheme("FixedQParamsObserver", qscheme, qp.PER_TENSOR_QSCHEMES)
        super().__init__(dtype=dtype, is_dynamic=False)
        self.qscheme = qscheme
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int))

    def has_data(self) -> bool:
        return True  # nothing to learn: the qparams are given

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, zero_point={int(self.zero_point)}, dtype={self.dtype}"
