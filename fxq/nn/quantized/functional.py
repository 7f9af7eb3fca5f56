"""Quantized ops as plain functions, usable as `call_function` targets in a lowered graph.

Each takes quantized tensors and the output `scale` / `zero_point` and returns a quantized tensor;
all are TorchScript-compatible. The argument order of each wraps a `torch.ops.quantized` kernel,
checked against the kernel's schema. (There is no int8 gelu kernel in torch: a graph keeps gelu in
float. sigmoid, tanh, relu and hardsigmoid work on quantized tensors directly.)

    >>> a = torch.quantize_per_tensor(torch.randn(4), 0.05, 128, torch.quint8)
    >>> add(a, a, 0.1, 128).q_scale()
    0.1
"""
from typing import List, Optional

import torch

__all__ = ["add", "add_relu", "mul", "mul_relu", "cat", "matmul", "softmax", "layer_norm",
           "hardswish", "elu", "leaky_relu"]


def add(a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `a + b` (broadcasting) requantized to (scale, zero_point)."""
    return torch.ops.quantized.add(a, b, scale, zero_point)


def add_relu(a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `relu(a + b)`."""
    return torch.ops.quantized.add_relu(a, b, scale, zero_point)


def mul(a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `a * b` (broadcasting)."""
    return torch.ops.quantized.mul(a, b, scale, zero_point)


def mul_relu(a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `relu(a * b)`."""
    return torch.ops.quantized.mul_relu(a, b, scale, zero_point)


def cat(tensors: List[torch.Tensor], dim: int, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `torch.cat(tensors, dim)`; inputs may have different qparams."""
    return torch.ops.quantized.cat(tensors, dim, scale, zero_point)


def matmul(a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized `a @ b` for two quantized activations of the same dtype."""
    return torch.ops.quantized.matmul(a, b, scale, zero_point)


def softmax(x: torch.Tensor, dim: int, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized softmax along `dim`."""
    return torch.ops.quantized.softmax(x, dim, scale, zero_point)


def layer_norm(x: torch.Tensor, normalized_shape: List[int], weight: Optional[torch.Tensor],
               bias: Optional[torch.Tensor], eps: float, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized layer norm with float `weight` / `bias` (either may be None)."""
    return torch.ops.quantized.layer_norm(x, normalized_shape, weight, bias, eps, scale, zero_point)


def hardswish(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized hardswish."""
    return torch.ops.quantized.hardswish(x, scale, zero_point)


def elu(x: torch.Tensor, scale: float, zero_point: int, alpha: float = 1.0) -> torch.Tensor:
    """Quantized ELU."""
    return torch.ops.quantized.elu(x, scale, zero_point, alpha)


def leaky_relu(x: torch.Tensor, negative_slope: float, scale: float, zero_point: int) -> torch.Tensor:
    """Quantized leaky ReLU."""
    return torch.ops.quantized.leaky_relu(x, negative_slope, False, scale, zero_point)
