"""Grouped (int4, a scale per 32 inputs) and binary ({-1, +1} x mean|w|) weights: their fake-quants, QAT and PTQ
through prepare / convert, and the converted model computing what the fake-quant model computed."""
import pytest
import torch
from torch import nn

import fxq
from conftest import saved_and_loaded, sqnr
from fxq.config import spec
from fxq.observers import BinaryWeightFakeQuantize, GroupedWeightFakeQuantize, PlaceholderObserver

# Converted models are compared with the fake-quant model through the quantized-tensor modules' scales.

# 8-bit activations: a narrower range would add clamps whose bounds convert writes into the code, not the state_dict
W4_GROUPED_QAT = fxq.LayerSpec(spec.UINT8_ACTIVATION.with_(rounding="ste"),
                               spec.INT4_GROUPED_WEIGHT.with_(rounding="ste"))
BINARY_QAT = fxq.LayerSpec(spec.UINT8_ACTIVATION.with_(bit_width=7, rounding="ste"), spec.BINARY_WEIGHT)
WEIGHT_ONLY_GROUPED = fxq.QConfig(PlaceholderObserver.with_args(dtype=torch.float32), spec.INT4_GROUPED_WEIGHT)
pytestmark = pytest.mark.usefixtures("one_thread", "quantized_lowering")  # one thread: tiny models train faster


def mlp():
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32), nn.ReLU(), nn.Linear(32, 10))


def train(prepared, steps=5, shape=(16, 64)):
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(steps):
        loss = prepared(torch.randn(*shape)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def frozen(prepared):
    return prepared.eval().apply(fxq.disable_observer)


# ---- grouped ----

def test_grouped_fake_quant_scales_values_and_straight_through_gradient():
    torch.manual_seed(0)
    weight = torch.randn(4, 64, requires_grad=True)
    quantizer = GroupedWeightFakeQuantize(group_size=32, quant_min=-8, quant_max=7)
    out = quantizer(weight)
    groups = weight.detach().reshape(4, 2, 32)
    expected_scale = groups.abs().amax(2) / 7.5
    torch.testing.assert_close(quantizer.scale, expected_scale)
    ints = (groups / expected_scale[..., None]).round().clamp(-8, 7)
    torch.testing.assert_close(out, (ints * expected_scale[..., None]).reshape(4, 64))
    out.sum().backward()
    clamped = (groups / expected_scale[..., None]).round() > 7  # each group's largest positive value rounds to 8
    assert torch.equal(weight.grad, (~clamped).float().reshape(4, 64))


def test_grouped_beats_per_channel_at_4_bits_when_input_magnitudes_vary():
    torch.manual_seed(0)
    weight = torch.randn(16, 128) * torch.logspace(-2, 0, 128)  # inputs with small and large weights
    grouped = GroupedWeightFakeQuantize(group_size=32)(weight)
    per_channel = spec.INT4_PER_CHANNEL_WEIGHT()
    per_channel(weight)
    scale, zero_point = per_channel.calculate_qparams()
    channel = torch.fake_quantize_per_channel_affine(weight, scale, zero_point.int(), 0, -8, 7)
    assert sqnr(weight, grouped) > sqnr(weight, channel) + 3


def test_grouped_qat_converts_to_weight_only_linears_computing_the_fake_quant_model():
    torch.manual_seed(0)
    prepared = fxq.prepare_qat_fx(mlp().train(), fxq.QConfigMapping().set_global(W4_GROUPED_QAT),
                                  (torch.randn(2, 64),))
    train(prepared)
    assert prepared.get_submodule("2").weight_fake_quant.scale.shape == (32, 3)  # 96 inputs: 3 groups of 32
    x = torch.randn(32, 64)
    with torch.no_grad():
        expected = frozen(prepared)(x)
        with pytest.warns(UserWarning, match=r"grouped-weight layers \(0.0, 2.0, 4\) run as weight-only Linears"):
            quantized = fxq.convert_fx(prepared)
        got = quantized(x)
    linears = [m for m in quantized.modules() if type(m).__name__ == "Linear" and m._get_name() ==
               "WeightOnlyGroupedLinear"]
    assert len(linears) == 3 and all(m.weight_int8.min() >= -8 and m.weight_int8.max() <= 7 for m in linears)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(saved_and_loaded(quantized)(x), got)
    other = fxq.prepare_qat_fx(mlp().train(), fxq.QConfigMapping().set_global(W4_GROUPED_QAT), (torch.randn(2, 64),))
    train(other, steps=1)
    again = fxq.convert_fx(other)
    again.load_state_dict(quantized.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_grouped_weight_only_ptq_multiplies_by_the_fake_quantized_weight():
    torch.manual_seed(0)
    model = mlp().eval()
    prepared = fxq.prepare_fx(model, fxq.QConfigMapping().set_global(WEIGHT_ONLY_GROUPED), (torch.randn(2, 64),))
    quantized = fxq.convert_fx(prepared)
    x = torch.randn(8, 64)
    with torch.no_grad():
        expected = nn.functional.linear(x, GroupedWeightFakeQuantize(32)(model[0].weight), model[0].bias)
        torch.testing.assert_close(quantized.get_submodule("0.0")(x), expected, rtol=0, atol=1e-6)
        assert sqnr(model(x), quantized(x)) > 15  # 4-bit weights, float activations


def test_grouped_in_features_not_a_multiple_of_group_size_fails_naming_layer_sizes_and_fix():
    model = nn.Sequential(nn.Linear(40, 8))
    with pytest.raises(ValueError, match=r"layer '0': in_features=40 is not a multiple of group_size=32; pick"):
        fxq.prepare_qat_fx(model.train(), fxq.QConfigMapping().set_global(W4_GROUPED_QAT), (torch.randn(2, 40),))
    prepared = fxq.prepare_fx(model.eval(), fxq.QConfigMapping().set_global(WEIGHT_ONLY_GROUPED),
                              (torch.randn(2, 40),))
    with pytest.raises(ValueError, match=r"layer '0': in_features=40 .*granularity='channel'"):
        fxq.convert_fx(prepared)


def test_grouped_conv_fails_naming_the_layer():
    model = nn.Sequential(nn.Conv2d(32, 8, 1), nn.Flatten(), nn.Linear(8 * 4 * 4, 8))
    with pytest.raises(NotImplementedError, match=r"layer '0'.*Linear"):
        fxq.prepare_qat_fx(model.train(), fxq.QConfigMapping().set_global(W4_GROUPED_QAT),
                           (torch.randn(2, 32, 4, 4),))
    static = fxq.LayerSpec(spec.UINT8_ACTIVATION.with_(bit_width=7), spec.INT4_GROUPED_WEIGHT)
    prepared = fxq.prepare_fx(model.eval(), fxq.QConfigMapping().set_global(static), (torch.randn(2, 32, 4, 4),))
    prepared(torch.randn(4, 32, 4, 4))
    with pytest.raises(NotImplementedError, match=r"layer '0' \(Conv2d\)"):
        fxq.convert_fx(prepared)


# ---- binary ----

def test_binary_fake_quant_is_sign_times_mean_abs_with_gradient_through():
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 2, 2, requires_grad=True)
    out = BinaryWeightFakeQuantize()(weight)
    scale = weight.detach().abs().mean(dim=(1, 2, 3))
    expected = torch.where(weight.detach() >= 0, 1.0, -1.0) * scale[:, None, None, None]
    assert torch.equal(out, expected)
    upstream = torch.randn_like(weight)
    out.backward(upstream)
    assert torch.equal(weight.grad, upstream)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_binary_qat_trains_and_converts_to_plus_minus_one_int8_weights():
    torch.manual_seed(0)
    teacher = cnn().eval()
    prepared = fxq.prepare_qat_fx(cnn().train(), fxq.QConfigMapping().set_global(BINARY_QAT),
                                  (torch.randn(2, 1, 8, 8),))
    optimizer = torch.optim.Adam(prepared.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        x = torch.randn(32, 1, 8, 8)
        loss = (prepared(x) - teacher(x).detach()).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])  # the STE gradient trains the binary weights
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        expected = frozen(prepared)(x)
        quantized = fxq.convert_fx(prepared)
        got = quantized(x)
    for name in ("0", "3"):
        ints = quantized.get_submodule(name).weight().int_repr()
        assert set(ints.unique().tolist()) == {-1, 1}
    output_step = float(quantized.get_submodule("3").scale)
    assert float((got - expected).abs().max()) <= output_step * 1.001


def test_binary_ptq_quantizes_weights_to_sign_times_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8)).eval()
    layer = fxq.LayerSpec(spec.UINT8_ACTIVATION.with_(bit_width=7), spec.BINARY_WEIGHT.with_(rounding="nearest"))
    prepared = fxq.prepare_fx(model, fxq.QConfigMapping().set_global(layer), (torch.randn(2, 16),))
    prepared(torch.randn(64, 16))
    weight = fxq.convert_fx(prepared).get_submodule("0").weight()
    expected = torch.where(model[0].weight >= 0, 1.0, -1.0) * model[0].weight.abs().mean(1, keepdim=True)
    torch.testing.assert_close(weight.dequantize(), expected.detach())
