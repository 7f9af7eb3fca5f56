"""plain.DynamicLinear against fxq.nn.quantized.dynamic.Linear (SQNR to float), and the saturation probe."""
import pytest
import torch

from conftest import sqnr
from fxq.nn import plain
from fxq.nn.quantized import dynamic as quantized_dynamic
from fxq.observers import PerChannelMinMaxObserver
from plain_helpers import reference_of


def _inputs() -> torch.Tensor:
    # tokens of very different magnitudes and one outlier feature: what per-token quantization is for
    x = torch.randn(4, 16, 128) * (torch.rand(4, 16, 1) * 10)
    x[..., 3] *= 20
    return x


@pytest.mark.parametrize("per_token", [False, True])
def test_as_accurate_as_the_quantized_dynamic_linear(per_token):
    float_linear = torch.nn.Linear(128, 64)
    ref = reference_of(float_linear)
    x = _inputs()
    expected = float_linear(x).detach()
    ours = plain.DynamicLinear.from_reference(ref, per_token=per_token)(x)
    theirs = quantized_dynamic.Linear.from_reference(ref, per_token=per_token)(x)
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    assert sqnr(expected, ours) >= sqnr(expected, theirs) - 0.5
    assert sqnr(expected, ours) >= (24 if per_token else 15)


def test_from_float_with_an_observer_or_default_qparams():
    float_linear = torch.nn.Linear(32, 16)
    x = torch.randn(5, 32)
    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    for weight_qparams in (observer, None):
        module = plain.DynamicLinear.from_float(float_linear, weight_qparams)
        assert sqnr(float_linear(x).detach(), module(x)) >= 30


def test_saturation_probe_agrees_with_the_cpu_flags():
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    has_vnni = any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))
    saturates = plain.plain_linear_saturates()
    assert saturates is plain.plain_linear_saturates()  # probed once, cached
    if flags and "avx2" in flags:
        assert saturates == (not has_vnni)
    assert plain.DynamicLinear(4, 2).quant_max == (127 if saturates else 255)
