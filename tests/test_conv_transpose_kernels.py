"""Transposed convolutions run on an engine whose kernel this CPU computes correctly, or in float.

torch 2.13's int8 transposed-conv kernels return garbage for some channel counts, which ones depending on the
engine and the CPU; fxq checks each layer shape on the machine that runs it (fxq/nn/quantized/_transpose_probe.py).
"""
import pickle

import pytest
import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from fxq.nn.quantized import _transpose_probe as probe

WEIGHT_QPARAMS = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.004),
                  "zero_point": torch.tensor(0)}
LAYERS = {  # name: (float layer, its fxq class, input shape)
    "2d 8->4": (lambda: nn.ConvTranspose2d(8, 4, 2, stride=2), ConvTranspose2d, (2, 8, 6, 6)),
    "2d 8->8": (lambda: nn.ConvTranspose2d(8, 8, 2, stride=2), ConvTranspose2d, (2, 8, 6, 6)),
    "2d 16->32": (lambda: nn.ConvTranspose2d(16, 32, 2, stride=2), ConvTranspose2d, (2, 16, 6, 6)),
    "2d 32->16 3x3 padded": (lambda: nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
                             ConvTranspose2d, (1, 32, 5, 5)),
    "1d 8->8": (lambda: nn.ConvTranspose1d(8, 8, 3, stride=2), ConvTranspose1d, (2, 8, 12)),
    "3d 8->16": (lambda: nn.ConvTranspose3d(8, 16, 2, stride=2), ConvTranspose3d, (1, 8, 4, 4, 4)),
}


def _quantized(name):
    torch.manual_seed(0)
    build, cls, shape = LAYERS[name]
    ref = getattr(reference, cls.__name__).from_float(build(), WEIGHT_QPARAMS)
    x = torch.quantize_per_tensor(torch.rand(shape), 1 / 127, 0, torch.quint8)
    expected = probe.float_conv_transpose(x.dequantize(), ref.quantized_weight().dequantize(), ref.bias,
                                          (ref.stride, ref.padding, ref.output_padding, ref.dilation, ref.groups))
    scale = float(expected.max() - expected.min()) / 255
    zero_point = int(round(-float(expected.min()) / scale))
    return cls.from_reference(ref, scale, zero_point), x, torch.quantize_per_tensor(expected, scale, zero_point,
                                                                                      torch.quint8)


def _steps_off(got, wanted):
    return int((got.int_repr().int() - wanted.int_repr().int()).abs().max())


@pytest.mark.parametrize("name", list(LAYERS))
def test_the_int8_layer_agrees_with_float_arithmetic_on_its_operands(name):
    module, x, wanted = _quantized(name)
    assert _steps_off(module(x), wanted) <= 1, module.kernel_engine  # a wrong kernel is off by up to 255


def test_with_no_correct_kernel_the_layer_computes_in_float_and_says_so(monkeypatch):
    monkeypatch.setattr(probe, "_VERDICTS", {})
    monkeypatch.setattr(probe, "_kernel_agrees_with_float", lambda shape, geometry, engine: False)
    with pytest.warns(UserWarning, match=r"no int8 transposed-conv kernel .* ConvTranspose2d\(8, 8"):
        module, x, wanted = _quantized("2d 8->8")
    assert module.kernel_engine is None and "kernel=float" in repr(module)
    got = module(x)
    assert got.dtype == torch.quint8 and _steps_off(got, wanted) <= 1
    again = ConvTranspose2d(8, 8, 2, stride=2)  # the same shape: warned once per process
    again.load_state_dict(module.state_dict())
    assert torch.equal(again(x).int_repr(), got.int_repr())
    assert torch.equal(pickle.loads(pickle.dumps(module))(x).int_repr(), got.int_repr())


def test_each_shape_is_probed_once_per_engine(monkeypatch):
    calls = []
    real = probe._kernel_agrees_with_float
    monkeypatch.setattr(probe, "_VERDICTS", {})
    monkeypatch.setattr(probe, "_kernel_agrees_with_float",
                        lambda shape, geometry, engine: calls.append(engine) or real(shape, geometry, engine))
    first, x, _ = _quantized("2d 16->32")
    probed = list(calls)
    second, _, _ = _quantized("2d 16->32")
    assert calls == probed and len(set(probed)) == len(probed)
    assert torch.equal(first(x).int_repr(), second(x).int_repr())


def test_probing_leaves_the_global_random_state_alone(monkeypatch):
    monkeypatch.setattr(probe, "_VERDICTS", {})
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    ConvTranspose2d(8, 8, 2, stride=2)
    assert torch.equal(torch.rand(4), expected)
