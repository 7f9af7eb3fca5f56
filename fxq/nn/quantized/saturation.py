"""Whether this CPU's int8 linear kernel saturates its intermediate sums, checked once per engine and process.

Without VNNI, fbgemm multiplies uint8 activations by int8 weights with an instruction that adds adjacent products
into int16 and saturates: two products of 255 x 127 overflow it. PyTorch AO's x86 default avoids that with 7-bit
activations (``reduce_range``); fxq's transformer mapping instead narrows the weights to 7 bits where the kernel
saturates (|w1| + |w2| <= 128 keeps every pair in range), which per-channel weights afford better than per-tensor
activations afford a lost bit. On CPUs with VNNI or AMX the sums are exact and the weights keep 8 bits.

    >>> linear_kernel_saturates() in (True, False)
    True
"""
import functools
from typing import Optional

import torch

from fxq.nn.quantized._packing import current_engine, pack_linear

__all__ = ["linear_kernel_saturates"]

_WIDTH = 64  # input features of the probe: 32 pairs, each 255 * 127 * 2 when exact


def linear_kernel_saturates(engine: Optional[str] = None) -> bool:
    """True when ``quantized::linear`` on ``engine`` (default: the current one) loses full-range products."""
    return _saturates(engine or current_engine())


@functools.lru_cache(maxsize=None)
def _saturates(engine: str) -> bool:
    x = torch.quantize_per_tensor(torch.full((1, _WIDTH), 255.0), 1.0, 0, torch.quint8)
    weight = torch.quantize_per_tensor(torch.full((1, _WIDTH), 127.0), 1.0, 0, torch.qint8)
    exact = 255.0 * 127.0 * _WIDTH
    try:
        y = torch.ops.quantized.linear(x, pack_linear(weight, None, engine), exact / 200, 0)
    except RuntimeError:  # no such kernel here: nothing to avoid
        return False
    return abs(float(y.dequantize()) - exact) > 0.02 * exact
