"""The one place the plain lowering makes a quantized tensor: for readers written to take one.

A user's static quantized custom module (the FX guide's contract) and ``output_quantized_idxs`` expect PyTorch
AO's quantized tensors; passes/plain_values.py wraps the uint8 value for them, and unwraps what they return
with ``int_repr`` before a plain kernel reads it.

    >>> q = to_quantized_tensor(torch.tensor([0, 128, 255], dtype=torch.uint8), torch.tensor(0.1), torch.tensor(128))
    >>> q.dequantize().tolist()
    [-12.800000190734863, 0.0, 12.700000762939453]
"""
import torch

__all__ = ["to_quantized_tensor"]


def to_quantized_tensor(values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """The quantized tensor (quint8 for uint8, qint8 for int8) with these integers, scale and zero point."""
    return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
