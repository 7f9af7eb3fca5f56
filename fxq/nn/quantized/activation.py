"""Quantized activations whose output qparams differ from the input's: Hardswish, ELU, LeakyReLU, Softmax, PReLU.

(ReLU, ReLU6, sigmoid, tanh, hardsigmoid run on quantized tensors directly and need no module.)

    >>> Hardswish(scale=0.02, zero_point=20)
    QuantizedHardswish(scale=0.02, zero_point=20)
    >>> qsoftmax = Softmax.from_float(torch.nn.Softmax(dim=-1), 1 / 256, 0)
"""
from typing import Optional

import torch
from torch import nn

from fxq.nn.quantized._base import QuantizedModule

__all__ = ["Hardswish", "ELU", "LeakyReLU", "Softmax", "PReLU"]


def _check_type(cls: type, float_module: nn.Module, float_type: type) -> None:
    if not isinstance(float_module, float_type):
        raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_float expects nn.{float_type.__name__}, "
                        f"got {type(float_module).__name__}.")


class Hardswish(QuantizedModule):
    """int8 hardswish."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.hardswish(x, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, float_module: nn.Hardswish, output_scale: float, output_zero_point: int) -> "Hardswish":
        _check_type(cls, float_module, nn.Hardswish)
        return cls(output_scale, output_zero_point)


class ELU(QuantizedModule):
    """int8 ELU with slope `alpha` for negative inputs."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0, alpha: float = 1.0) -> None:
        super().__init__(scale, zero_point)
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.elu(x, self.scale, self.zero_point, self.alpha)

    @classmethod
    def from_float(cls, float_module: nn.ELU, output_scale: float, output_zero_point: int) -> "ELU":
        _check_type(cls, float_module, nn.ELU)
        return cls(output_scale, output_zero_point, float_module.alpha)


class LeakyReLU(QuantizedModule):
    """int8 leaky ReLU with `negative_slope`."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0, negative_slope: float = 0.01) -> None:
        super().__init__(scale, zero_point)
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.leaky_relu(x, self.negative_slope, False, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, float_module: nn.LeakyReLU, output_scale: float, output_zero_point: int) -> "LeakyReLU":
        _check_type(cls, float_module, nn.LeakyReLU)
        return cls(output_scale, output_zero_point, float_module.negative_slope)


class Softmax(QuantizedModule):
    """int8 softmax along `dim` (None picks the legacy implicit dim, as `nn.Softmax(dim=None)` does)."""

    def __init__(self, dim: Optional[int] = None, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim
        if dim is None:
            rank = x.dim()
            dim = 0 if rank == 0 or rank == 1 or rank == 3 else 1
        return torch.ops.quantized.softmax(x, dim, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, float_module: nn.Softmax, output_scale: float, output_zero_point: int) -> "Softmax":
        _check_type(cls, float_module, nn.Softmax)
        return cls(float_module.dim, output_scale, output_zero_point)


class PReLU(QuantizedModule):
    """int8 PReLU. The learned slopes are a quint8 tensor (the only weight dtype `quantized::prelu` takes) whose
    range includes 1.0 as well as 0: the kernel multiplies positive inputs by 1.0 *quantized with the slopes'
    qparams*, so with slopes of 0.25 quantized over [0, 0.25] (PyTorch AO's MinMaxObserver) every positive input
    is scaled by 0.25 too (5-8 dB SQNR in PyTorch AO's converted PReLU; 32 dB here).

    >>> PReLU.from_float(torch.nn.PReLU(4), 0.05, 100).weight.dtype
    torch.quint8
    """

    def __init__(self, num_parameters: int = 1, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__(scale, zero_point)
        self.register_buffer("weight", _quantize_slopes(torch.full((num_parameters,), 0.25)))

    def extra_repr(self) -> str:
        return f"num_parameters={self.weight.numel()}, {self._output_repr()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.prelu(x, self.weight, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, float_module: nn.PReLU, output_scale: float, output_zero_point: int) -> "PReLU":
        _check_type(cls, float_module, nn.PReLU)
        module = cls(float_module.num_parameters, output_scale, output_zero_point)
        module.weight = _quantize_slopes(float_module.weight.detach().float())
        return module


def _quantize_slopes(weight: torch.Tensor) -> torch.Tensor:
    low, high = min(float(weight.min()), 0.0), max(float(weight.max()), 1.0)
    scale = (high - low) / 255.0
    zero_point = min(max(int(round(-low / scale)), 0), 255)
    return torch.quantize_per_tensor(weight, scale, zero_point, torch.quint8)
