"""Equalization safety: exact float math, dead channels, unsupported layers, the user's model untouched, errors."""
import warnings

import pytest
import torch
from torch import nn

import fxq
from equalization_cases import CASES_FOR_SAFETY, float_after_equalize
from fxq.equalization import InputEqualizationObserver

QMAP = fxq.QConfigMapping().set_global(fxq.default_qconfig)
EQ = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)


def _prepare(model, x, eq=EQ):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = fxq.prepare_fx(model, QMAP, (x,), _equalization_config=eq)
    return prepared, [str(w.message) for w in caught]


@pytest.mark.parametrize("name", sorted(CASES_FOR_SAFETY))
def test_equalized_float_graph_equals_the_float_model(name):
    model, calibration, test = CASES_FOR_SAFETY[name]
    prepared, _ = _prepare(model, calibration)
    prepared(calibration)
    expected = model(test)
    got = float_after_equalize(prepared)(test)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert any(name.endswith("equalization_scale") for name, _ in float_after_equalize(prepared).named_buffers())


@pytest.mark.parametrize("name", sorted(CASES_FOR_SAFETY))
def test_user_model_is_bit_identical(name):
    model, calibration, test = CASES_FOR_SAFETY[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    output = model(test)
    prepared, _ = _prepare(model, calibration)
    prepared(calibration)
    fxq.convert_fx(prepared)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(test), output)


def test_dead_input_channel_and_zero_weight_column_get_scale_one():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight[:, 2] = 0.0  # a zero weight column
    x = torch.randn(64, 4) * torch.tensor([1.0, 10.0, 1.0, 0.0])  # channel 3 is always 0
    prepared, _ = _prepare(model, x)
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    scale = quantized.get_buffer("_0_equalization_scale") if hasattr(quantized, "_0_equalization_scale") else \
        next(b for n, b in quantized.named_buffers() if n.endswith("_equalization_scale"))
    assert torch.isfinite(scale).all() and scale[2] == 1.0 and scale[3] == 1.0
    assert torch.isfinite(quantized(x)).all()
    assert (quantized(x) - model(x)).abs().max() < 0.1 * model(x).abs().max()


def test_unsupported_layer_is_skipped_with_a_warning_naming_the_node():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.depthwise = nn.Conv2d(4, 4, 3, groups=4)  # supported: per-input-channel scale within its group
            self.norm = nn.LayerNorm([4, 2, 2])  # has a weight, but is not a linear/conv

        def forward(self, x):
            return self.norm(self.depthwise(x))
    model, x = Model().eval(), torch.randn(2, 4, 4, 4)
    prepared, messages = _prepare(model, x)
    assert any("'norm'" in m and "LayerNorm is not supported" in m for m in messages)
    modules = dict(prepared.named_modules())
    equalized = [n.target for n in prepared.graph.nodes if n.op == "call_module"
                 and isinstance(modules[n.target], InputEqualizationObserver)]
    assert equalized == ["depthwise_input_equalization_process"]
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    assert torch.isfinite(quantized(x)).all()
    assert (quantized(x) - model(x)).abs().max() < 0.1 * model(x).abs().max()


def test_a_module_called_twice_is_skipped_with_a_warning():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(4, 4)  # one weight cannot take two sets of column scales

        def forward(self, x):
            return self.shared(self.shared(x))
    _, messages = _prepare(Model().eval(), torch.randn(2, 4))
    assert any("'shared'" in m and "called 2 times" in m for m in messages)


def test_equalization_qconfig_rejects_observer_instances_and_per_channel_inputs():
    from fxq.equalization import InputEqualizationObserver as Input, WeightEqualizationObserver as Weight
    with pytest.raises(TypeError, match="with_args"):
        fxq.EqualizationQConfig(input_activation=Input(), weight=Weight)
    with pytest.raises(TypeError, match="per tensor"):
        Input(qscheme=torch.per_channel_affine)


def test_a_plain_qconfig_in_the_equalization_config_is_an_error():
    model, x = nn.Sequential(nn.Linear(4, 4)).eval(), torch.randn(2, 4)
    with pytest.raises(TypeError, match="EqualizationQConfig"):
        fxq.prepare_fx(model, QMAP, (x,), _equalization_config=QMAP)


def test_cross_layer_equalize_leaves_the_user_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    balanced = fxq.cross_layer_equalize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not torch.equal(balanced[0].weight, model[0].weight)
