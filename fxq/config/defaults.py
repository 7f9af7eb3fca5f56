"""The default QConfigMappings: PyTorch AO's post-training defaults per backend, and dynamic ones.

    >>> import torch
    >>> mapping = get_default_qconfig_mapping("x86")
    >>> mapping.qconfig_for("", (torch.sigmoid,)).short()
    'QConfig(act=FixedQParamsObserver(quint8, quant_max=255, quant_min=0, scale=0.00390625, zero_point=0), w=MinMaxObserver(qint8, per_tensor_symmetric))'
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fxq import observers as obs
from fxq.config.qconfig import (FloatOutputQConfig, QConfig, check_backend, default_dynamic_qconfig,
                                float16_dynamic_qconfig,
                                float_qparams_weight_only_qconfig, get_default_qconfig,
                                per_token_dynamic_qconfig)
from fxq.config.qconfig_mapping import QConfigMapping
from fxq.config.lowering import resolve_lowering
from fxq.nn.plain.saturation import plain_linear_saturates
from fxq.nn.quantized.saturation import linear_kernel_saturates
from fxq.nn.weight_pairs import PLAIN, kernel_pairs_saturate
from fxq.observers.row_checked import RowCheckedHistogramObserver

__all__ = ["get_default_qconfig_mapping", "get_default_dynamic_qconfig_mapping", "fixed_qparams_observers",
           "get_transformer_qconfig_mapping"]


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


def get_default_qconfig_mapping(backend: str = "x86", transformers: str = "auto") -> QConfigMapping:
    """PyTorch AO's default post-training mapping for `backend` ("x86", "fbgemm", "qnnpack", "onednn").

    ``transformers="auto"``: on a torch.export graph that looks like a transformer (a layer norm feeding a linear
    layer; fxq.passes.choose_default_mapping), prepare_fx quantizes with :func:`get_transformer_qconfig_mapping`
    instead, on the x86 and fbgemm backends (whose kernels return float linear outputs), and logs it once. The
    backend default quantizes the residual stream and the norms' outputs, which costs transformers 30 dB of SQNR
    (tools/export_acceptance.py). On other exported graphs it takes :func:`full_range_default` (8-bit activations,
    kernel-exact weights). ``transformers="keep"``, or any change to the returned mapping, keeps it as it is.

    Global: get_default_qconfig(backend), plus per-op exceptions:
    reshape reuses its input's observer (when fxq.observers has ReuseInputObserver); conv-transpose has per-tensor weights on x86/fbgemm (no
    per-channel kernels there); layer_norm keeps float weights; PReLU's weight is quint8; ops with a
    known output range (sigmoid, tanh, ...) get fixed qparams.
    """
    qconfig = get_default_qconfig(check_backend(backend))
    transpose_weight = obs.default_weight_observer if backend in ("x86", "fbgemm") else None
    mapping = mapping_with_op_exceptions(qconfig, transpose_weight,
                                         lambda observer: QConfig(observer, obs.default_weight_observer))
    reuse_input = getattr(obs, "ReuseInputObserver", None)
    if reuse_input is not None:  # absent from fxq.observers so far; reshape then follows the global qconfig
        mapping.set_object_type("reshape", QConfig(reuse_input, obs.NoopObserver))
    if transformers not in ("auto", "keep"):
        raise ValueError(f"get_default_qconfig_mapping(transformers={transformers!r}): expected 'auto' or 'keep'")
    mapping.stock_default = backend if transformers == "auto" else None
    return mapping


def full_range_default(backend: str = "x86") -> QConfigMapping:
    """The backend default with 8-bit activations and weights this CPU's int8 kernels multiply by them exactly:
    8 bits with VNNI / AMX; without, where the kernels add neighbouring products into a saturating int16,
    pair-limited per-channel weights (fxq.observers.PairLimitedPerChannelObserver: 7 to 8 bits per channel), or
    7 bits where the pair layout is unknown. prepare_fx takes it in place of an untouched x86 / fbgemm default on
    torch.export graphs that are not transformers (passes/choose_default_mapping.py): PyTorch AO's FX default
    narrows the activations to 7 bits instead (transformers' ResNet, tools/export_acceptance.py: 34.5 dB with 7-bit
    activations, 38.2 dB with this mapping, pt2e 38.1 dB).

    >>> full_range_default().to_dict()["object_type"][0][1].activation.p.keywords
    {'reduce_range': False}
    """
    check_backend(backend)
    narrow = _kernel_saturates()
    transpose = (obs.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-63,
                                              quant_max=63) if narrow else obs.default_weight_observer)
    qconfig = QConfig(obs.HistogramObserver.with_args(reduce_range=False), _exact_weight_observer(False))
    return mapping_with_op_exceptions(qconfig, transpose, lambda observer: QConfig(observer, obs.default_weight_observer))


def mapping_with_op_exceptions(qconfig: QConfig, transpose_weight: Optional[Callable],
                               fixed_qconfig: Callable[[Callable], QConfig]) -> QConfigMapping:
    """``qconfig`` globally with PyTorch AO's per-op exceptions, shared by the PTQ and QAT defaults: conv-transpose
    weights by ``transpose_weight`` (None: the global weight), float layer-norm weights, a quint8 PReLU weight, and
    ``fixed_qconfig(observer)`` for the ops whose output range is known."""
    mapping = QConfigMapping().set_global(qconfig)
    transpose = QConfig(qconfig.activation, transpose_weight) if transpose_weight is not None else qconfig
    for op in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        mapping.set_object_type(op, transpose)
    layer_norm = QConfig(qconfig.activation, obs.default_placeholder_observer)
    mapping.set_object_type(F.layer_norm, layer_norm)
    mapping.set_object_type(nn.LayerNorm, layer_norm)
    mapping.set_object_type(nn.PReLU, QConfig(obs.HistogramObserver, obs.MinMaxObserver))
    for op, observer in fixed_qparams_observers().items():
        mapping.set_object_type(op, fixed_qconfig(observer))
    return mapping


_DYNAMIC_QCONFIGS = {
    torch.qint8: (default_dynamic_qconfig, (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)),
    torch.float16: (float16_dynamic_qconfig, (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.RNNCell, nn.GRUCell)),
    torch.quint8: (float_qparams_weight_only_qconfig, (nn.EmbeddingBag, nn.Embedding)),
}


def get_default_dynamic_qconfig_mapping(dtype: torch.dtype = torch.qint8) -> QConfigMapping:
    """The modules PyTorch AO's quantize_dynamic converts by default for `dtype`, as a mapping (global None).

    qint8 and float16: Linear and the recurrent modules; quint8: Embedding and EmbeddingBag weights only.
    qint8 Linear weights are per channel, as wide as this CPU's int8 kernel multiplies exactly by 8-bit
    activations (8 bits with VNNI / AMX, pair-limited without: fxq.observers.PairLimitedPerChannelObserver), and
    its activations per token (PyTorch AO's default: both per tensor, 8-bit weights). F.linear too: torch.export
    spells transformers' Conv1D (GPT-2) as a linear.

    >>> get_default_dynamic_qconfig_mapping().qconfig_for("fc", (torch.nn.Linear,)).activation()
    PlaceholderObserver(dtype=torch.quint8, is_dynamic=True, per_token=True)
    """
    if dtype not in _DYNAMIC_QCONFIGS:
        valid = ", ".join(str(d) for d in _DYNAMIC_QCONFIGS)
        raise ValueError(f"no default dynamic quantization for dtype {dtype}; expected one of {valid}")
    qconfig, module_types = _DYNAMIC_QCONFIGS[dtype]
    mapping = QConfigMapping()
    for module_type in module_types:
        mapping.set_object_type(module_type, qconfig)
    if dtype == torch.qint8:
        # MiniLM's embedding cosine to fp32 (tools/bench_transformer.py): per-tensor 0.948, per-channel weights 0.977
        # (same speed), and per-token activations 0.995 (about 15% more time, still faster than fp32). The recurrent
        # cells keep per-tensor weights and activations (their kernels take one scale)
        linear = QConfig(per_token_dynamic_qconfig.activation, _exact_weight_observer(False))
        mapping.set_object_type(nn.Linear, linear).set_object_type(F.linear, linear)
    return mapping


def get_transformer_qconfig_mapping(reduce_range: bool = False, weight_bits: Optional[int] = None) -> QConfigMapping:
    """Static int8 for transformers: every Linear int8 (per-channel weights, HistogramObserver activations over the
    full 0..255 range) with a float output (FloatOutputQConfig: no rounding where float ops read it), everything
    else float (residual stream, LayerNorm, softmax, attention matmuls, the mask).

    Measured on sentence-transformers/all-MiniLM-L6-v2 (tools/bench_transformer.py, an AVX2 host): the x86 mapping
    quantizes the residual stream and the additive attention mask per tensor and reaches a mean embedding cosine
    of 0.23; this mapping 0.955 with int8 linear outputs and 0.993 with float ones (0.995 with SmoothQuant), at
    1.6x fp32's speed; the linears are almost all of the time. Pair it with ``_equalization_config=fxq.SmoothQuant()``.

    ``weight_bits`` (default: what this CPU's int8 linear kernel computes exactly): 8 where the kernel is exact
    (VNNI, AMX); where it adds neighbouring products into a saturating int16 (fbgemm without VNNI,
    fxq.nn.quantized.saturation and fxq.nn.weight_pairs probe it), 8-bit weights whose per-channel scales keep
    every same-sign neighbour pair in range (fxq.observers.PairLimitedPerChannelObserver, between 7 and 8 bits per
    channel); 7 bits where it saturates in a layout the probe does not know. ``weight_bits=8`` or ``7`` forces plain
    min-max weights of that width. On an AVX2 host the zoo's 4-layer BERT measured 25.3 dB SQNR vs float with plain
    8-bit weights (saturated), 41.4 dB with 7-bit ones (36.9 dB with 7-bit activations instead).

    >>> get_transformer_qconfig_mapping(weight_bits=8).qconfig_for("fc", (torch.nn.Linear,)).short()
    'FloatOutputQConfig(act=RowCheckedHistogramObserver(reduce_range=False), w=PerChannelMinMaxObserver(qint8, per_channel_symmetric))'
    """
    activation = RowCheckedHistogramObserver.with_args(reduce_range=reduce_range)
    if weight_bits is None:
        return _linears_with(FloatOutputQConfig(activation, _exact_weight_observer(reduce_range)))
    if not 2 <= weight_bits <= 8:
        raise ValueError(f"get_transformer_qconfig_mapping(weight_bits={weight_bits}): the int8 kernels take 2 to 8 "
                         f"bits")
    return _linears_with(FloatOutputQConfig(activation, _per_channel_weights(weight_bits)))


def _per_channel_weights(bits: int) -> Callable:
    largest = 2 ** (bits - 1) - 1
    narrower = {"quant_min": -largest, "quant_max": largest} if bits < 8 else {}
    return obs.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, **narrower)


def _exact_weight_observer(reduce_range: bool) -> Callable:
    """The widest weights this CPU's int8 linear kernel multiplies exactly by the activations (7-bit ones never
    overflow a pair; neither do 8-bit weights times them)."""
    if reduce_range or not _kernel_saturates():
        return _per_channel_weights(8)
    pairs = kernel_pairs_saturate(PLAIN if resolve_lowering() == "plain" else None)
    return obs.PairLimitedPerChannelObserver.with_args() if pairs else _per_channel_weights(7)


def _kernel_saturates() -> bool:
    """Whether the int8 linear kernel convert_fx lowers to by default saturates full-range products here, probed
    on that kernel: the plain oneDNN one (no quantized tensor made, so no deprecation warning) unless
    FXQ_LOWERING or the engine asks for the quantized-tensor one."""
    return plain_linear_saturates() if resolve_lowering() == "plain" else linear_kernel_saturates()


def _linears_with(qconfig: QConfig) -> QConfigMapping:
    # F.linear too: torch.export spells transformers' Conv1D (GPT-2) as a linear on its transposed weight
    return QConfigMapping().set_object_type(nn.Linear, qconfig).set_object_type(F.linear, qconfig)
