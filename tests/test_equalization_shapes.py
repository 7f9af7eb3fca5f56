"""Equalization through grouped/depthwise convs and shape ops: exact float math, folding, and what stays a mul."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from equalization_cases import (equalization_gain, float_after_equalize, mul_count, shape_case_models, skewed,
                                spread)
from fxq.equalization import WeightEqualizationObserver
from fxq.equalization.scales import scale_weight

SHAPES = shape_case_models()
QMAP = fxq.QConfigMapping().set_global(fxq.default_qconfig)
EQ = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)


def _calibrated(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = fxq.prepare_fx(model, QMAP, (x,), _equalization_config=EQ)
    prepared(x)
    return prepared


def _input_record(prepared, layer: str):
    return prepared.get_submodule(f"{layer}_input_equalization_process")


def _assert_float_exact(prepared, model, x):
    expected = model(x)
    assert (float_after_equalize(prepared)(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_equalized_float_graph_equals_the_float_model(name):
    # grouped convs scale each input channel within its group; flatten chains repeat a channel's scale H*W times
    model, calibration, test = SHAPES[name]
    prepared = _calibrated(model, calibration)
    _assert_float_exact(prepared, model, test)
    scales = [b for n, b in float_after_equalize(prepared).named_buffers() if n.endswith("_equalization_scale")]
    assert scales and all(not torch.allclose(s, torch.ones_like(s)) for s in scales)  # something was equalized


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_grouped_convs_and_flatten_chains_gain_at_least_6db_with_one_mul(name):
    # the chains fold the second layer's scale into the first one's rows: the only mul is on the model input
    gain, quantized = equalization_gain(*SHAPES[name])
    assert gain >= 6.0
    assert mul_count(quantized) == 1


def test_flatten_after_a_conv_maps_each_channel_to_its_h_w_features():
    model, calibration, _ = SHAPES["conv->relu->flatten->linear"]
    prepared = _calibrated(model, calibration)
    assert torch.equal(_input_record(prepared, "fc").channel_map, torch.arange(6).repeat_interleave(64))
    scale = float_after_equalize(prepared).get_buffer("fc_equalization_scale")
    assert torch.equal(scale, scale[::64].repeat_interleave(64))  # one scale per conv channel


class LinearFlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(12, 3)

    def forward(self, x):  # x: (N, 3, 4); features of fc2 are (position, channel) pairs, channel fastest
        return self.fc2(torch.relu(self.fc1(x)).flatten(1))


def test_flatten_after_a_linear_on_a_sequence_tiles_the_channels():
    model, x = LinearFlattenLinear().eval(), skewed((64, 3, 4), 1e-1, 1e1, dim=2)
    prepared = _calibrated(model, x)
    assert torch.equal(_input_record(prepared, "fc2").channel_map, torch.arange(4).repeat(3))
    _assert_float_exact(prepared, model, x)
    assert mul_count(fxq.convert_fx(prepared)) == 1


class ConvThenLinearOverWidth(nn.Module):
    """A linear over the conv output's last dim: each of its features mixes every conv channel."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.conv(x))


class LinearPoolLinear(nn.Module):
    """A max pool over a linear's output pools features: it does not commute with a per-feature scale."""

    def __init__(self):
        super().__init__()
        self.fc1, self.pool, self.fc2 = nn.Linear(4, 8), nn.MaxPool1d(2), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.pool(self.fc1(x)))


class TwoShapeOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4 * 25, 16)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(2).flatten(1))


@pytest.mark.parametrize("model, x", [
    (ConvThenLinearOverWidth(), torch.randn(8, 3, 5, 5)),
    (LinearPoolLinear(), torch.randn(8, 3, 4)),
    (TwoShapeOps(), torch.randn(8, 3, 5, 5)),
], ids=["linear over a conv's width", "pool over a linear's features", "two shape ops"])
def test_chains_that_mix_channels_keep_a_mul_and_exact_float_math(model, x):
    model = model.eval()
    prepared = _calibrated(model, x)
    second = [n for n, _ in prepared.named_modules() if n.endswith("_input_equalization_process")][-1]
    assert prepared.get_submodule(second).channel_map.numel() == 0  # no fold: its input gets a mul
    _assert_float_exact(prepared, model, x)
    assert mul_count(fxq.convert_fx(prepared)) == 2


def test_a_mul_behind_a_shared_observer_gets_its_own_observer():
    # the flattens share the conv output's observer module; only the call behind the mul may see scaled qparams
    torch.manual_seed(0)
    model, x = TwoShapeOps().eval(), torch.randn(64, 3, 5, 5)
    assert equalization_gain(model, x, x)[0] >= -2.0  # rescaling the shared module cost 23 dB


def test_grouped_weight_observer_reads_each_group_separately():
    weight = torch.randn(6, 2, 3, 3)  # groups=3: input channels 0,1 | 2,3 | 4,5 meet rows 0,1 | 2,3 | 4,5
    observer = WeightEqualizationObserver()
    observer.groups = 3
    observer(weight)
    expected = torch.stack([weight[2 * (c // 2):2 * (c // 2) + 2, c % 2].amax() for c in range(6)])
    assert torch.equal(observer.max_val, expected)


class FunctionalGroupedConv(nn.Module):
    def __init__(self):
        super().__init__()
        weight = scale_weight(torch.randn(8, 2, 3, 3), spread(8), None, groups=4)  # compensates skewed inputs
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(torch.randn(8))

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, 1, 0, 1, 4)


def test_functional_grouped_conv_is_equalized_exactly():
    model, x = FunctionalGroupedConv().eval(), skewed((8, 8, 6, 6))
    prepared = _calibrated(model, x)
    _assert_float_exact(prepared, model, x)
    assert equalization_gain(model, x, x)[0] >= 6.0


def test_cross_layer_equalization_balances_a_conv_and_a_depthwise_conv():
    torch.manual_seed(4)
    block = nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        block[0].weight.mul_(spread(8, 1e-2, 1e1).reshape(-1, 1, 1, 1))
    x = torch.randn(4, 4, 8, 8)
    expected = block(x)
    assert (fxq.cross_layer_equalize(block)(x) - expected).abs().max() <= 1e-5 * expected.abs().max()
    pair = fxq.cross_layer_equalize(block[:3], iterations=1)
    rows = pair[0].weight.abs().flatten(1).amax(1)
    depthwise_columns = pair[2].weight.abs().flatten(1).amax(1)  # depthwise: row c is all input channel c meets
    assert torch.allclose(rows, depthwise_columns, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_user_model_is_bit_identical(name):
    model, calibration, test = SHAPES[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    output = model(test)
    fxq.convert_fx(_calibrated(model, calibration))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(test), output)
