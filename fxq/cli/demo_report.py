"""Small numeric helpers shared by the demo and the CLI."""
from __future__ import annotations

import torch


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``other`` against ``reference`` in dB (inf when equal).

    >>> sqnr(torch.ones(4), torch.ones(4) * 1.1) > 19
    True
    """
    reference = reference.dequantize() if reference.is_quantized else reference
    other = other.dequantize() if other.is_quantized else other
    noise = (reference.float() - other.float()).pow(2).mean()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.float().pow(2).mean() / noise))
