"""``fxq.compile``: torch.compile for a model fxq.convert_fx returned, for users who accept a compile step.

The plain lowering's kernels are opaque ops to the compiler (fxq.nn.plain.traced): inductor keeps them and fuses
what lies between them — the quantize / dequantize ops and the float ops the lowering left — into generated C++
loops, which is where the eager graph spends its time outside the int8 kernels.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 8),))
    >>> _ = prepared(torch.randn(2, 8))
    >>> compiled = fxq.compile(fxq.convert_fx(prepared))  # compiles on its first call
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx

from fxq.debug import provenance

__all__ = ["compile"]


def compile(quantized_model: fx.GraphModule, **torch_compile_options: Any) -> Callable:  # noqa: A001 (fxq.compile)
    """``torch.compile(quantized_model, **torch_compile_options)`` (inductor by default) after checking that
    ``quantized_model`` is what convert_fx returned; the result compiles on its first call."""
    if getattr(quantized_model, provenance.ATTRIBUTE, None) is None:
        raise ValueError(f"fxq.compile expects the model fxq.convert_fx returned, got a "
                         f"{type(quantized_model).__name__}; call fxq.convert_fx(prepared) first (or torch.compile "
                         "for a float model)")
    return torch.compile(quantized_model, **torch_compile_options)
