"""Whether this CPU's oneDNN int8 linear kernel saturates its intermediate sums, probed once per process.

The same question fxq.nn.quantized.saturation asks of ``quantized::linear``, for ``onednn::qlinear_pointwise``:
without VNNI (AVX2 only) the uint8 x int8 dot product adds pairs of products into saturating int16, so
full-range activations (255) against full-range weights (127) lose the top of their sums. 7-bit activations
(quant range 0..127) or 7-bit weights keep every pair in range. On CPUs with VNNI or AMX the sums are exact.
The probe uses plain tensors only (no quantized tensor).

    >>> plain_linear_saturates() in (True, False)
    True
"""
import functools

import torch

__all__ = ["plain_linear_saturates", "activation_quant_max", "plain_linear_output"]

_WIDTH = 64  # input features of the probe: 32 pairs, each 2 * 255 * 127 when exact


@functools.lru_cache(maxsize=None)
def plain_linear_saturates() -> bool:
    """True when ``onednn::qlinear_pointwise`` loses full-range uint8 x int8 products on this CPU."""
    exact = 255.0 * 127.0 * _WIDTH
    y = plain_linear_output(torch.full((1, _WIDTH), 255.0), torch.full((1, _WIDTH), 127.0))
    return y is not None and abs(float(y) - exact) > 0.02 * exact  # None: no oneDNN kernel, nothing to avoid


def plain_linear_output(x: torch.Tensor, weight: torch.Tensor) -> "torch.Tensor | None":
    """``onednn::qlinear_pointwise`` of uint8 ``x`` by int8 ``weight`` (one output row), scales 1, fp32 out: the
    kernel's integer sums as it computes them. None where this build has no oneDNN kernel."""
    try:
        packed = torch.ops.onednn.qlinear_prepack(weight.to(torch.int8), None)
        return torch.ops.onednn.qlinear_pointwise(x.to(torch.uint8), 1.0, 0, packed, torch.ones(1),
                                                  torch.zeros(1, dtype=torch.long), None, 1.0, 0, torch.float32,
                                                  "none", [], "")
    except (RuntimeError, AttributeError):
        return None


def activation_quant_max() -> int:
    """The largest uint8 activation value the lowering should use with 8-bit weights here: 127 or 255."""
    return 127 if plain_linear_saturates() else 255
