"""The one place the plain lowering makes a quantized tensor: for readers written to take one.

A user's static quantized custom module (the FX guide's contract) and ``output_quantized_idxs`` expect PyTorch
AO's quantized tensors; passes/plain_values.py wraps the uint8 value for them, and unwraps what they return
with ``int_repr`` before a plain kernel reads it.

    >>> q = to_quantized_tensor(torch.tensor([0, 128, 255], dtype=torch.uint8), torch.tensor(0.1), torch.tensor(128))
    >>> q.dequantize().tolist()
    [-12.800000190734863, 0.0, 12.699999809265137]
"""
import torch

__all__ = ["to_quantized_tensor", "from_quantized_tensor"]


def to_quantized_tensor(values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """The quantized tensor (quint8 for uint8, qint8 for int8) with these integers, scale and zero point."""
    if isinstance(values, torch.fx.Proxy):  # symbolic tracing (torch.load rebuilding a graph): one node
        return values.tracer.create_proxy("call_function", to_quantized_tensor, (values, scale, zero_point), {})
    return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))


def from_quantized_tensor(value: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """The uint8 integers of a quantized tensor in the scale and zero point a plain kernel was built for: its own
    integers when they match (a custom module's output), else requantized (a model input quantized by the caller
    with other qparams, which PyTorch AO's kernels would have read off the tensor)."""
    from fxq.nn.plain.ops import quantize_per_tensor
    if isinstance(value, torch.fx.Proxy):  # symbolic tracing: one node
        return value.tracer.create_proxy("call_function", from_quantized_tensor, (value, scale, zero_point), {})
    if value.q_scale() == float(scale) and value.q_zero_point() == int(zero_point):
        return value.int_repr()
    return quantize_per_tensor(value.dequantize(), scale, zero_point)

