"""Dynamic Linear with per-token activations, the default dynamic mapping's: each row of the input gets its own
scale on the same int8 kernel (fxq.nn.plain.DynamicLinear by default, fxq/nn/quantized/dynamic.py in the
quantized-tensor lowering). torch.ao's dynamic Linear has one scale per call."""
import copy
import io

import pytest
import torch
from torch import nn

import fxq
from conftest import sqnr
from fxq.nn import plain
from fxq.nn.quantized import dynamic


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()


def _tokens():
    """Rows whose magnitudes span three orders, as tokens of a transformer's residual stream do."""
    torch.manual_seed(1)
    return torch.randn(40, 32) * torch.logspace(-2, 1, 40).unsqueeze(1)


def _convert(mapping, lowering="auto"):
    return fxq.convert_fx(fxq.prepare_fx(_model(), mapping, (torch.randn(2, 32),)),
                          convert_custom_config={"lowering": lowering})


def _worst_row_sqnr(expected, got):
    return min(sqnr(expected[i], got[i]) for i in range(len(expected)))


def test_the_default_dynamic_mapping_quantizes_each_token_on_its_own():
    converted = _convert(fxq.get_default_dynamic_qconfig_mapping())
    layers = [m for m in converted.modules() if isinstance(m, (dynamic.Linear, plain.DynamicLinear))]
    assert len(layers) == 2 and all(layer.per_token for layer in layers)
    per_tensor = _convert(fxq.get_default_dynamic_qconfig_mapping().set_object_type(
        nn.Linear, fxq.config.per_channel_dynamic_qconfig))
    x = _tokens()
    with torch.no_grad():
        expected = _model()(x)
        ours, theirs = _worst_row_sqnr(expected, converted(x)), _worst_row_sqnr(expected, per_tensor(x))
    # one scale per call leaves the small tokens a few int8 levels; a scale per token gives each all of them
    assert ours >= 25 and ours >= theirs + 20, (ours, theirs)


def test_an_all_zero_row_gives_the_bias():
    converted = _convert(fxq.get_default_dynamic_qconfig_mapping())
    with torch.no_grad():
        out = converted.get_submodule("0")(torch.zeros(3, 32))
    assert torch.equal(out, torch.relu(_model()[0].bias).expand(3, 64))  # Linear + ReLU fused into one module


@pytest.mark.parametrize("lowering", ["auto", "quantized"])
def test_save_load_deepcopy_state_dict_and_script_give_identical_outputs(lowering):
    converted = _convert(fxq.get_default_dynamic_qconfig_mapping(), lowering)
    x = _tokens()
    with torch.no_grad():
        expected = converted(x)
        buffer = io.BytesIO()
        torch.save(converted, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        other = _convert(fxq.get_default_dynamic_qconfig_mapping(), lowering)
        with torch.no_grad():
            for parameter in _model().parameters():
                parameter.mul_(2)
        other.load_state_dict(converted.state_dict())
        scripted = [torch.jit.script(converted)] if lowering == "quantized" else []  # plain: torch.export instead
        for model in [loaded, copy.deepcopy(converted), other] + scripted:
            assert torch.equal(model(x), expected)
