"""Which lowering convert_fx runs: plain uint8 tensors on oneDNN kernels, or PyTorch AO's quantized tensors.

"auto" (the default) picks the plain lowering on x86 CPUs whose torch has the oneDNN int8 kernels, unless the
quantized engine is set to qnnpack, and the quantized-tensor lowering elsewhere. ``convert_custom_config={"lowering": "quantized"}`` (or the environment
variable ``FXQ_LOWERING=quantized`` for a whole program) keeps PyTorch AO's graphs and modules.

    >>> resolve_lowering("quantized")
    'quantized'
"""
from __future__ import annotations

import os
import platform

import torch

from fxq.config.custom_config import LOWERINGS

_KERNELS = ("qlinear_prepack", "qlinear_pointwise", "qconv_prepack", "qconv_pointwise", "qconv2d_pointwise")
_X86 = ("x86_64", "amd64", "i386", "i686")


def resolve_lowering(requested: str = "auto") -> str:
    """"plain" or "quantized" for a convert_fx call that asked for ``requested``."""
    if requested == "auto":
        requested = os.environ.get("FXQ_LOWERING", "auto")
        if requested not in LOWERINGS:
            raise ValueError(f"FXQ_LOWERING={requested!r}; choose one of {', '.join(LOWERINGS)}")
    if requested == "quantized" or (requested == "auto" and torch.backends.quantized.engine == "qnnpack"):
        return "quantized"  # qnnpack asked for: its kernels, exact on full-range activations (x86's saturate)
    missing = plain_kernels_missing()
    if requested == "plain" and missing:
        raise ValueError(f"convert_custom_config['lowering'] = 'plain' needs {missing}; use 'quantized' (PyTorch "
                         "AO's quantized tensors) or 'auto' on this machine")
    return "quantized" if missing else "plain"


def plain_kernels_missing() -> str:
    """Why the plain lowering cannot run here ("" when it can)."""
    if platform.machine().lower() not in _X86:
        return f"an x86 CPU (this one is {platform.machine()})"
    if not torch.backends.mkldnn.is_available():
        return "a torch built with oneDNN (torch.backends.mkldnn.is_available() is False)"
    absent = [name for name in _KERNELS if not hasattr(torch.ops.onednn, name)]
    return f"the oneDNN kernels torch.ops.onednn.{', '.join(absent)}" if absent else ""
