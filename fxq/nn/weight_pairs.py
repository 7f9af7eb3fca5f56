"""Whether this CPU's int8 linear kernel saturates neighbour pairs of products, probed once per engine and process.

Without VNNI, fbgemm multiplies uint8 activations by int8 weights and adds each two neighbouring products along the
input dimension (inputs 2i and 2i+1) into a saturating int16 (fxq.nn.quantized.saturation checks that it
saturates at all). Knowing the pairs lets weights keep 8 bits where no pair can overflow
(fxq.observers.PairLimitedPerChannelObserver) instead of narrowing every weight to 7.

:func:`kernel_pairs_saturate` checks that this engine's kernel saturates inputs 0 and 1 together and inputs 2 and
3 together, and is exact for inputs 1 and 2. Elsewhere (VNNI, AMX, another layout) it is False: either nothing
saturates, or the layout is unknown and only 7-bit weights are safe.

    >>> kernel_pairs_saturate() in (True, False)
    True
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from fxq.nn.plain.saturation import plain_linear_output
from fxq.nn.quantized._packing import current_engine, pack_linear

__all__ = ["kernel_pairs_saturate"]

PLAIN = "plain"  # the engine name of fxq's plain lowering: onednn::qlinear_pointwise on plain uint8 / int8 tensors


def kernel_pairs_saturate(engine: Optional[str] = None) -> bool:
    """True when ``quantized::linear`` on ``engine`` (or, for ``engine="plain"``, oneDNN's plain-tensor linear)
    saturates exactly the neighbour pairs (2i, 2i+1)."""
    return _pairs_saturate(engine or current_engine())


def _product_error(first: int, second: int, engine: str) -> float:
    """Relative error of the kernel on 255 * 127 at inputs ``first`` and ``second`` of 8 (zeros elsewhere)."""
    x, weight = torch.zeros(1, 8), torch.zeros(1, 8)
    x[0, [first, second]], weight[0, [first, second]] = 255.0, 127.0
    exact = 2 * 255.0 * 127.0
    if engine == PLAIN:
        return _plain_product_error(x, weight, exact)
    try:
        packed = pack_linear(torch.quantize_per_tensor(weight, 1.0, 0, torch.qint8), None, engine)
        y = torch.ops.quantized.linear(torch.quantize_per_tensor(x, 1.0, 0, torch.quint8), packed, exact / 200, 0)
    except RuntimeError:  # no such kernel here
        return 0.0
    return abs(float(y.dequantize()) - exact) / exact


def _plain_product_error(x: torch.Tensor, weight: torch.Tensor, exact: float) -> float:
    """The same measurement on ``onednn::qlinear_pointwise``, with plain tensors only (no quantized tensor)."""
    y = plain_linear_output(x, weight)
    return 0.0 if y is None else abs(float(y) - exact) / exact  # None: no oneDNN kernel in this build


@functools.lru_cache(maxsize=None)
def _pairs_saturate(engine: str) -> bool:
    return (_product_error(0, 1, engine) > 0.02 and _product_error(2, 3, engine) > 0.02
            and _product_error(1, 2, engine) <= 0.01)
