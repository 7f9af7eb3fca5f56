"""``fxq::quantize_per_tensor`` and ``fxq::dequantize_per_tensor``: uint8/int8 activations as plain tensors.

The plain int8 lowering carries activations as ordinary ``torch.uint8`` tensors and their scale and zero point
beside them, instead of quantized tensors (whose dtypes torch 2.13 deprecates). The graph holds scale and zero
point as 0-dim buffers (get_attr nodes), so the ops take them as tensors. Both ops are registered with
``torch.library`` and have fake implementations, so ``torch.export`` and ``torch.compile`` trace through them.

The integers are those of ``torch.quantize_per_tensor(x, scale, zero_point, dtype).int_repr()`` bit for bit:
``round_half_to_even(fma(x, float32(1 / scale), zero_point))``, clamped (tests/test_plain_ops.py checks ties too).

Cost: four passes over the tensor (fused multiply-add, rounding add, clamp, narrowing) against torch's single fused
kernel: on a 128x3072 activation, one thread of this AVX2 host, about 230 us against 48 us for
torch.quantize_per_tensor, and 120 us against 47 us to dequantize (tools/bench_plain.py).

    >>> x = torch.tensor([-1.0, 0.0, 0.25, 10.0])
    >>> q = torch.ops.fxq.quantize_per_tensor(x, torch.tensor(0.1), torch.tensor(10), 0, 255, torch.uint8)
    >>> q
    tensor([  0,  10,  12, 110], dtype=torch.uint8)
    >>> torch.ops.fxq.dequantize_per_tensor(q, torch.tensor(0.1), torch.tensor(10))
    tensor([-1.0000,  0.0000,  0.2000, 10.0000])
"""
import torch

__all__ = ["quantize_per_tensor", "dequantize_per_tensor"]

_INTEGER_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}
_ROUNDING_OFFSET = 12582912.0  # 1.5 * 2**23: float32 values in [2**23, 2**24) are whole numbers

torch.library.define(
    "fxq::quantize_per_tensor",
    "(Tensor x, Tensor scale, Tensor zero_point, int quant_min, int quant_max, ScalarType dtype) -> Tensor")
torch.library.define("fxq::dequantize_per_tensor", "(Tensor q, Tensor scale, Tensor zero_point) -> Tensor")


def _check_range(quant_min: int, quant_max: int, dtype: torch.dtype) -> None:
    if dtype not in _INTEGER_RANGE:
        raise ValueError(f"fxq::quantize_per_tensor: dtype must be torch.uint8 or torch.int8, got {dtype}.")
    low, high = _INTEGER_RANGE[dtype]
    if not low <= quant_min <= quant_max <= high:
        raise ValueError(f"fxq::quantize_per_tensor: [quant_min, quant_max] = [{quant_min}, {quant_max}] must lie "
                         f"within {dtype}'s [{low}, {high}].")


@torch.library.impl("fxq::quantize_per_tensor", "CompositeExplicitAutograd")
def _quantize_per_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int,
                         quant_max: int, dtype: torch.dtype) -> torch.Tensor:
    _check_range(quant_min, quant_max, dtype)
    # float32 1/scale, as the quantized kernels compute it (exact as a Python float)
    inverse_scale = float(torch.reciprocal(scale.detach().to(torch.float32)))
    # zero_point + x * inverse_scale in one fused multiply-add, rounded once to float32: the integers of
    # torch.quantize_per_tensor depend on that single rounding when x / scale lands near a tie
    values = torch.add(zero_point.detach().to(torch.float32), x.to(torch.float32), alpha=inverse_scale)
    # adding 1.5 * 2**23 rounds half to even into the low mantissa bits, so the int32 view's low byte is the
    # integer: cheaper than round() plus float -> uint8, which torch converts element by element
    values.add_(_ROUNDING_OFFSET).clamp_(_ROUNDING_OFFSET + quant_min, _ROUNDING_OFFSET + quant_max)
    return values.view(torch.int32).to(dtype)


@torch.library.impl("fxq::dequantize_per_tensor", "CompositeExplicitAutograd")
def _dequantize_per_tensor(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    values = q.to(torch.float32)
    return values.sub_(zero_point.to(torch.float32)).mul_(scale.to(torch.float32))


@torch.library.register_fake("fxq::quantize_per_tensor")
def _quantize_per_tensor_fake(x, scale, zero_point, quant_min, quant_max, dtype):
    return torch.empty_like(x, dtype=dtype)


@torch.library.register_fake("fxq::dequantize_per_tensor")
def _dequantize_per_tensor_fake(q, scale, zero_point):
    return torch.empty_like(q, dtype=torch.float32)


def quantize_per_tensor(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quant_min: int = 0,
                        quant_max: int = 255, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """``torch.ops.fxq.quantize_per_tensor`` with uint8 defaults."""
    return torch.ops.fxq.quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)


def dequantize_per_tensor(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``torch.ops.fxq.dequantize_per_tensor``: ``(q - zero_point) * scale`` in float32."""
    return torch.ops.fxq.dequantize_per_tensor(q, scale, zero_point)
