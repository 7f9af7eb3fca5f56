"""The default QConfigMappings: PyTorch AO's post-training defaults per backend, and dynamic ones.

    >>> import torch
    >>> mapping = get_default_qconfig_mapping("x86")
    >>> mapping.qconfig_for("", (torch.sigmoid,)).short()
    'QConfig(act=FixedQParamsObserver(quint8, quant_max=255, quant_min=0, scale=0.00390625, zero_point=0), w=MinMaxObserver(qint8, per_tensor_symmetric))'
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxq import observers as obs
from fxq.config.qconfig import (QConfig, check_backend, default_dynamic_qconfig, float16_dynamic_qconfig,
                                float_qparams_weight_only_qconfig, get_default_qconfig)
from fxq.config.qconfig_mapping import QConfigMapping

__all__ = ["get_default_qconfig_mapping", "get_default_dynamic_qconfig_mapping", "fixed_qparams_observers"]


def fixed_qparams_observers() -> dict:
    """Ops whose output range is known, in module, function and method spellings -> their fixed observer.

    sigmoid, hardsigmoid and softmax land in [0, 1]; tanh in [-1, 1]. Built on call so importing is cheap.
    """
    zero_to_one = obs.default_fixed_qparams_range_0to1_observer
    minus_one_to_one = obs.default_fixed_qparams_range_neg1to1_observer
    return {
        nn.Hardsigmoid: zero_to_one, F.hardsigmoid: zero_to_one,
        "hardsigmoid": zero_to_one, "hardsigmoid_": zero_to_one,
        nn.Sigmoid: zero_to_one, torch.sigmoid: zero_to_one, "sigmoid": zero_to_one, "sigmoid_": zero_to_one,
        nn.Softmax: zero_to_one,
        nn.Tanh: minus_one_to_one, torch.tanh: minus_one_to_one, "tanh": minus_one_to_one, "tanh_": minus_one_to_one,
    }


def get_default_qconfig_mapping(backend: str = "x86") -> QConfigMapping:
    """PyTorch AO's default post-training mapping for `backend` ("x86", "fbgemm", "qnnpack", "onednn").

    Global: get_default_qconfig(backend), plus per-op exceptions:
    reshape reuses its input's observer (when fxq.observers has ReuseInputObserver); conv-transpose has per-tensor weights on x86/fbgemm (no
    per-channel kernels there); layer_norm keeps float weights; PReLU's weight is quint8; ops with a
    known output range (sigmoid, tanh, ...) get fixed qparams.
    """
    qconfig = get_default_qconfig(check_backend(backend))
    per_tensor_transpose = backend in ("x86", "fbgemm")
    transpose = QConfig(qconfig.activation, obs.default_weight_observer) if per_tensor_transpose else qconfig
    layer_norm = QConfig(qconfig.activation, obs.default_placeholder_observer)
    mapping = QConfigMapping().set_global(qconfig)
    reuse_input = getattr(obs, "ReuseInputObserver", None)
    if reuse_input is not None:  # absent from fxq.observers so far; reshape then follows the global qconfig
        mapping.set_object_type("reshape", QConfig(reuse_input, obs.NoopObserver))
    for op in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        mapping.set_object_type(op, transpose)
    mapping.set_object_type(F.layer_norm, layer_norm)
    mapping.set_object_type(nn.LayerNorm, layer_norm)
    mapping.set_object_type(nn.PReLU, QConfig(obs.HistogramObserver, obs.MinMaxObserver))
    for op, observer in fixed_qparams_observers().items():
        mapping.set_object_type(op, QConfig(observer, obs.default_weight_observer))
    return mapping


_DYNAMIC_QCONFIGS = {
    torch.qint8: (default_dynamic_qconfig, (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)),
    torch.float16: (float16_dynamic_qconfig, (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)),
    torch.quint8: (float_qparams_weight_only_qconfig, (nn.EmbeddingBag, nn.Embedding)),
}


def get_default_dynamic_qconfig_mapping(dtype: torch.dtype = torch.qint8) -> QConfigMapping:
    """The modules PyTorch AO's quantize_dynamic converts by default for `dtype`, as a mapping (global None).

    qint8 and float16: Linear and the recurrent modules; quint8: Embedding and EmbeddingBag weights only.

    >>> get_default_dynamic_qconfig_mapping().qconfig_for("fc", (torch.nn.Linear,)).short()
    'QConfig(act=PlaceholderObserver(quint8, is_dynamic=True, quant_max=255, quant_min=0), w=MinMaxObserver(qint8, per_tensor_symmetric))'
    """
    if dtype not in _DYNAMIC_QCONFIGS:
        valid = ", ".join(str(d) for d in _DYNAMIC_QCONFIGS)
        raise ValueError(f"no default dynamic quantization for dtype {dtype}; expected one of {valid}")
    qconfig, module_types = _DYNAMIC_QCONFIGS[dtype]
    mapping = QConfigMapping()
    for module_type in module_types:
        mapping.set_object_type(module_type, qconfig)
    return mapping
