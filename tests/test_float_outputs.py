"""FloatOutputQConfig: a linear read only by float ops returns fp32 from the int8 kernel, with no output rounding
(passes/float_outputs.py); get_transformer_qconfig_mapping uses it."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr
from fxq.config import FloatOutputQConfig
from fxq.nn.quantized import Linear, LinearFloatOutput

# FloatOutputQConfig's quantized-tensor module; the plain lowering fuses float outputs itself
# (test_plain_lowering.py).
pytestmark = pytest.mark.usefixtures("quantized_lowering")


class Block(nn.Module):
    """fc1 feeds fc2 only (an int8 reader); fc2 feeds a float residual add and GELU."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        return F.gelu(self.fc2(self.fc1(x)) + x)


def _converted(mapping):
    torch.manual_seed(0)
    model = Block().eval()
    data = [torch.randn(8, 16) for _ in range(3)]
    prepared = fxq.prepare_fx(model, mapping, (data[0],))
    with torch.no_grad():
        for x in data[:2]:
            prepared(x)
    return model, fxq.convert_fx(prepared), data[2]


def _mapping(qconfig_class):
    base = fxq.get_transformer_qconfig_mapping(weight_bits=7).qconfig_for("", (nn.Linear,))
    return fxq.QConfigMapping().set_object_type(nn.Linear, qconfig_class(base.activation, base.weight))


def test_only_the_linear_read_by_float_ops_returns_float():
    _, converted, _ = _converted(_mapping(FloatOutputQConfig))
    assert type(converted.get_submodule("fc1")) is Linear  # its reader is int8 fc2: the int8 output stays
    assert type(converted.get_submodule("fc2")) is LinearFloatOutput
    assert converted.code.count(".dequantize()") == 1  # fc1's int8 output, which fc2's kernel quantizes again exactly
    assert converted.code.count("torch.quantize_per_tensor(") == 1


def test_the_float_output_is_the_unrounded_product_of_the_quantized_operands():
    _, converted, x = _converted(_mapping(FloatOutputQConfig))
    fc2 = converted.get_submodule("fc2")
    hidden = converted.get_submodule("fc1")(torch.quantize_per_tensor(x, float(converted.x_scale),
                                                                     int(converted.x_zero_point), torch.quint8))
    weight, bias = fc2._unpack()
    with torch.no_grad():
        expected = F.linear(hidden.dequantize(), weight.dequantize(), bias)
        assert torch.allclose(fc2(hidden.dequantize()), expected, rtol=1e-4, atol=1e-5)


def test_float_outputs_are_closer_to_float_than_rounded_ones():
    model, ours, x = _converted(_mapping(FloatOutputQConfig))
    _, rounded, _ = _converted(_mapping(fxq.QConfig))
    with torch.no_grad():
        assert sqnr(model(x), ours(x)) > sqnr(model(x), rounded(x)) + 1


def test_round_trips_keep_the_outputs():
    _, converted, x = _converted(_mapping(FloatOutputQConfig))
    with torch.no_grad():
        expected = converted(x)
        buffer = io.BytesIO()
        torch.save(converted, buffer)
        buffer.seek(0)
        _, other, _ = _converted(_mapping(FloatOutputQConfig))
        for parameter_owner in (other.get_submodule("fc2"),):
            parameter_owner.scale = 1.0  # another model's qparams, replaced by load_state_dict
        other.load_state_dict(converted.state_dict())
        for model in (torch.load(buffer, weights_only=False), copy.deepcopy(converted), other,
                      torch.jit.script(converted)):
            assert torch.equal(model(x), expected)


def test_the_transformer_mapping_keeps_linear_outputs_float():
    qconfig = fxq.get_transformer_qconfig_mapping().qconfig_for("fc", (nn.Linear,))
    assert isinstance(qconfig, FloatOutputQConfig) and qconfig.short().startswith("FloatOutputQConfig(")


class Reused(nn.Module):
    """One Linear called twice: its first output feeds a float add, its second an int8 Linear."""

    def __init__(self):
        super().__init__()
        self.shared, self.head = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.shared(x) + 1.0, self.head(self.shared(x))


def test_each_call_of_a_reused_linear_gets_the_output_its_readers_need():
    torch.manual_seed(0)
    model, data = Reused().eval(), [torch.randn(8, 16) for _ in range(3)]
    prepared = fxq.prepare_fx(model, _mapping(FloatOutputQConfig), (data[0],))
    with torch.no_grad():
        for x in data[:2]:
            prepared(x)
        converted = fxq.convert_fx(prepared)
        # convert gives each call of a reused module its own copy: each call gets the output its readers need
        assert type(converted.get_submodule("shared")) is LinearFloatOutput
        assert type(converted.get_submodule("shared_call1")) is Linear
        assert type(converted.get_submodule("head")) is LinearFloatOutput
        for expected, got in zip(model(data[2]), converted(data[2])):
            assert sqnr(expected, got) > 25
