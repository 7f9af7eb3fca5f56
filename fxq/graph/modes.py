"""Which quantization mode a qconfig asks for, read off its observers.

=============  ==========================================  ===============================================
mode           activation observer                         what convert does
=============  ==========================================  ===============================================
static         int8 dtype (quint8 / qint8), not dynamic    observe in calibration, int8 in and out
dynamic        ``is_dynamic=True``, int8 dtype             int8 weights; activations quantized per call
dynamic_fp16   ``is_dynamic=True``, float16                float16 weights, fp32 activations
weight_only    a float dtype (float32 / bfloat16)          int8 weights, activations stay in that dtype
=============  ==========================================  ===============================================

This is the one place fxq decides a mode: the passes read it, and custom modules look their classes up under
``CUSTOM_MODULE_MODE[quant_mode(qconfig)]``.

>>> import fxq
>>> quant_mode(fxq.default_dynamic_qconfig)
'dynamic'
>>> CUSTOM_MODULE_MODE[quant_mode(fxq.float16_dynamic_qconfig)]
'dynamic'
"""
from __future__ import annotations

from typing import Any, Optional

import torch

STATIC, DYNAMIC, DYNAMIC_FP16, WEIGHT_ONLY = "static", "dynamic", "dynamic_fp16", "weight_only"
_INT8 = (torch.quint8, torch.qint8)
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
# The custom-module tables (registry, custom configs) are keyed by PyTorch AO's three modes: a float16 dynamic
# qconfig uses the "dynamic" classes, as PyTorch AO's get_quant_type files it.
CUSTOM_MODULE_MODE = {STATIC: "static", DYNAMIC: "dynamic", DYNAMIC_FP16: "dynamic", WEIGHT_ONLY: "weight_only"}
_cache: dict = {}


def quant_mode(qconfig: Any) -> Optional[str]:
    """The mode of ``qconfig`` (None for None: keep float). Raises a ValueError for a combination no mode runs."""
    if qconfig is None:
        return None
    key = id(qconfig)
    if key not in _cache:
        _cache[key] = (qconfig, _classify(qconfig))  # keep qconfig alive so its id is not reused
    return _cache[key][1]


def activation_dtype(qconfig: Any) -> torch.dtype:
    """The dtype the activation observer declares (weight-only: the dtype activations run in)."""
    return qconfig.activation().dtype


def _classify(qconfig: Any) -> str:
    activation, weight = qconfig.activation(), qconfig.weight()
    dynamic = bool(getattr(activation, "is_dynamic", False))
    if dynamic and activation.dtype in _INT8:
        return DYNAMIC
    if dynamic and activation.dtype == torch.float16:
        return DYNAMIC_FP16
    if not dynamic and activation.dtype in _INT8:
        return STATIC
    if activation.dtype in _FLOATS and getattr(weight, "dtype", None) in _INT8:
        return WEIGHT_ONLY
    raise ValueError(
        f"no quantization mode takes activation dtype {activation.dtype} (is_dynamic={dynamic}) with weight dtype "
        f"{getattr(weight, 'dtype', None)}; use fxq.get_default_qconfig (static), fxq.default_dynamic_qconfig, "
        f"fxq.float16_dynamic_qconfig or fxq.get_weight_only_qconfig()")
