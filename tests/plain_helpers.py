"""Helpers of the fxq.nn.plain tests: reference modules, 7-bit uint8 inputs and the float math they should match."""
import torch

from fxq.nn import reference
from nn_helpers import weight_qparams


def reference_of(float_module: torch.nn.Module, per_channel: bool = True) -> torch.nn.Module:
    """The fxq reference module of ``float_module`` with symmetric qint8 weight qparams."""
    kind = {torch.nn.Linear: reference.Linear, torch.nn.Conv1d: reference.Conv1d, torch.nn.Conv2d: reference.Conv2d,
            torch.nn.Conv3d: reference.Conv3d}[type(float_module)]
    return kind.from_float(float_module, weight_qparams(float_module.weight, per_channel, symmetric=True))


def seven_bit(*shape: int) -> torch.Tensor:
    """uint8 activations in 0..127: exact on kernels without VNNI (no saturating pair sums)."""
    return torch.randint(0, 128, shape, dtype=torch.uint8)


def dequantized(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return (q.float() - zero_point) * scale


def requantized(y: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return torch.clamp(torch.round(y / scale) + zero_point, 0, 255)


def as_quantized(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The same integers as a torch.quint8 tensor, for the fxq.nn.quantized modules."""
    return torch._make_per_tensor_quantized_tensor(q, scale, zero_point)
