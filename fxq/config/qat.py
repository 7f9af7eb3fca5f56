"""QAT qconfigs and mappings: PyTorch AO's ``get_default_qat_qconfig(backend, version)`` and
``get_default_qat_qconfig_mapping(backend, version)``, with fxq's fake-quant modules.

Version 0 uses FakeQuantize around a moving-average observer; version 1 (the default) the fused kernel
(FusedMovingAvgObsFakeQuantize). x86 and fbgemm keep activations to 7 bits (reduce_range), as for PTQ.

    >>> get_default_qat_qconfig("x86").weight().quant_min
    -128
    >>> mapping = get_default_qat_qconfig_mapping("qnnpack", version=0)
"""
from __future__ import annotations

from fxq import observers as obs
from fxq.config.defaults import mapping_with_op_exceptions
from fxq.config.qconfig import QConfig, check_backend
from fxq.config.qconfig_mapping import QConfigMapping

__all__ = ["get_default_qat_qconfig", "get_default_qat_qconfig_mapping", "default_qat_qconfig"]

_PER_TENSOR_WEIGHT_BACKENDS = ("qnnpack",)
_REDUCED_RANGE_BACKENDS = ("x86", "fbgemm")


def get_default_qat_qconfig(backend: str = "x86", version: int = 1) -> QConfig:
    """The QAT qconfig PyTorch AO picks for ``backend`` and ``version`` (0: FakeQuantize, 1: fused kernel).

    >>> qconfig = get_default_qat_qconfig("onednn", version=0)
    >>> type(qconfig.activation()).__name__, qconfig.activation().quant_max, qconfig.weight().qscheme
    ('FakeQuantize', 255, torch.per_channel_symmetric)
    """
    check_backend(backend)
    if version not in (0, 1):
        raise ValueError(f"get_default_qat_qconfig(version={version!r}): version must be 0 (FakeQuantize) or 1 "
                         f"(FusedMovingAvgObsFakeQuantize)")
    per_tensor = backend in _PER_TENSOR_WEIGHT_BACKENDS
    activation_kwargs = dict(observer=obs.MovingAverageMinMaxObserver, quant_min=0, quant_max=255)
    if backend != "onednn":
        activation_kwargs["reduce_range"] = backend in _REDUCED_RANGE_BACKENDS
    if version == 0:
        weight = obs.default_weight_fake_quant if per_tensor else obs.default_per_channel_weight_fake_quant
        return QConfig(obs.FakeQuantize.with_args(**activation_kwargs), weight)
    weight = obs.default_fused_wt_fake_quant if per_tensor else obs.default_fused_per_channel_wt_fake_quant
    return QConfig(obs.FusedMovingAvgObsFakeQuantize.with_args(**activation_kwargs), weight)


def get_default_qat_qconfig_mapping(backend: str = "x86", version: int = 1) -> QConfigMapping:
    """PyTorch AO's default QAT mapping: ``get_default_qat_qconfig`` globally, per-tensor fake-quant weights for
    conv-transpose on x86/fbgemm, float layer-norm weights, fixed-qparams fake-quants for sigmoid / tanh /
    hardsigmoid / softmax.

    >>> import torch
    >>> mapping = get_default_qat_qconfig_mapping("x86")
    >>> type(mapping.qconfig_for("", (torch.sigmoid,)).activation()).__name__
    'FixedQParamsFakeQuantize'
    """
    qconfig = get_default_qat_qconfig(backend, version)
    transpose_weight = obs.default_weight_fake_quant if backend in _REDUCED_RANGE_BACKENDS else None
    return mapping_with_op_exceptions(qconfig, transpose_weight, lambda observer: QConfig(
        obs.FixedQParamsFakeQuantize.with_args(observer=observer), obs.default_weight_fake_quant))


default_qat_qconfig = QConfig(obs.default_fake_quant, obs.default_weight_fake_quant)
