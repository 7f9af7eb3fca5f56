"""Float fused modules that QAT fusion builds before qconfigs are assigned: the batch norm stays a module (it
keeps training), unlike the eval-mode fusion that folds it away.

    >>> import torch
    >>> fused = ConvBnReLU2d(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    >>> fused(torch.randn(2, 3, 5, 5)).shape
    torch.Size([2, 4, 3, 3])
"""
from __future__ import annotations

from torch import nn

__all__ = ["ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d", "LinearBn1d",
           "CONSTITUENTS"]


class _Chain(nn.Sequential):
    """A float ``layer -> bn (-> relu)`` chain; checks its members so a wrong fusion fails where it is made."""

    _parts: tuple = ()

    def __init__(self, *modules: nn.Module) -> None:
        if len(modules) != len(self._parts) or not all(isinstance(m, t) for m, t in zip(modules, self._parts)):
            expected = ", ".join(t.__name__ for t in self._parts)
            got = ", ".join(type(m).__name__ for m in modules)
            raise TypeError(f"fxq.nn.qat.intrinsic.{type(self).__name__} expects ({expected}), got ({got})")
        super().__init__(*modules)


class ConvBn1d(_Chain):
    _parts = (nn.Conv1d, nn.BatchNorm1d)


class ConvBn2d(_Chain):
    _parts = (nn.Conv2d, nn.BatchNorm2d)


class ConvBn3d(_Chain):
    _parts = (nn.Conv3d, nn.BatchNorm3d)


class ConvBnReLU1d(_Chain):
    _parts = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU)


class ConvBnReLU2d(_Chain):
    _parts = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)


class ConvBnReLU3d(_Chain):
    _parts = (nn.Conv3d, nn.BatchNorm3d, nn.ReLU)


class LinearBn1d(_Chain):
    _parts = (nn.Linear, nn.BatchNorm1d)


# fused type -> the float types it stands for, for qconfig lookups by object type
CONSTITUENTS = {cls: cls._parts for cls in (ConvBn1d, ConvBn2d, ConvBn3d, ConvBnReLU1d, ConvBnReLU2d, ConvBnReLU3d,
                                            LinearBn1d)}
