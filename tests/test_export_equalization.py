"""Input-weight equalization and SmoothQuant on torch.export graphs (passes/layer_modules.py makes their aten
linears, convs and layer norms modules to rescale): same numbers as the symbolically traced model, qconfigs
selected as before, smoothing on exported transformers.

The transformers cases skip cleanly without transformers (``.[test]`` brings it).
"""
import functools
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr
from equalization_cases import LinearLinear, case_models
from fxq.graph.exported import export_module
from fxq.nn.fused import LinearReLU

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools import hf_tiny  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

EXPORT = {"tracer": "export"}
EQUALIZE = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)


def _quantize(model, calibration, mapping, config=None, custom=None):
    prepared = fxq.prepare_fx(model, mapping, (calibration[0],), custom, _equalization_config=config)
    for batch in calibration:
        prepared(batch)
    return prepared, fxq.convert_fx(prepared)


def _static():
    return fxq.QConfigMapping().set_global(fxq.default_qconfig)


def _scales(quantized, kind):
    return [name for name, _ in quantized.named_buffers() if name.endswith(f"_{kind}_scale")]


# ---- input-weight equalization ----

class ShapeBranch(LinearLinear):
    """Linear -> ReLU -> Linear behind a Python branch on a shape: symbolic tracing cannot follow it (the auto
    tracer falls back to torch.export), export can."""

    def forward(self, x):
        if x.shape[-1] == 16:
            x = x * 1.0
        return super().forward(x)


@pytest.mark.parametrize("name", ["linear->relu->linear", "linear->linear", "conv->conv", "F.linear->F.linear"])
def test_equalization_on_an_exported_graph_matches_the_traced_one(name):
    # same chains folded, same scales: the exported model's int8 SQNR is the traced one's (within 0.5 dB)
    model, calibration, test = case_models()[name]
    expected = model(test)
    _, traced = _quantize(model, [calibration], _static(), EQUALIZE, {"tracer": "fx"})
    _, exported = _quantize(model, [calibration], _static(), EQUALIZE, EXPORT)
    _, plain = _quantize(model, [calibration], _static(), None, EXPORT)
    assert _scales(exported, "equalization")
    assert abs(sqnr(expected, exported(test)) - sqnr(expected, traced(test))) <= 0.5
    assert sqnr(expected, exported(test)) >= sqnr(expected, plain(test)) + 3  # equalization did something


def test_equalization_on_a_model_only_export_can_trace():
    reference, calibration, test = case_models()["linear->relu->linear"]
    model = ShapeBranch(nn.ReLU()).eval()
    model.load_state_dict(reference.state_dict())
    prepared, quantized = _quantize(model, [calibration], _static(), EQUALIZE)
    assert prepared.meta["fxq_tracer"] == "export"
    assert isinstance(prepared.get_submodule("fc1"), LinearReLU)  # torch.export's holder became the Linear, fused
    _, traced = _quantize(reference, [calibration], _static(), EQUALIZE)
    assert _scales(quantized, "equalization")
    assert abs(sqnr(model(test), quantized(test)) - sqnr(reference(test), traced(test))) <= 0.5


def test_module_name_qconfig_still_applies_with_equalization_on():
    model, calibration, test = case_models()["linear->relu->linear"]
    mapping = _static().set_module_name("fc2", None)
    prepared, quantized = _quantize(model, [calibration], mapping, EQUALIZE, EXPORT)
    assert type(quantized.get_submodule("fc2")) is nn.Linear  # left float, as asked
    assert type(quantized.get_submodule("fc1")) is not nn.Linear
    _, traced = _quantize(model, [calibration], mapping, EQUALIZE, {"tracer": "fx"})
    assert abs(sqnr(model(test), quantized(test)) - sqnr(model(test), traced(test))) <= 0.5


def test_object_type_rules_select_the_call_as_before():
    # F.linear and nn.Linear (the class that emitted the aten.linear) both still select the converted call
    model, calibration, _ = case_models()["linear->linear"]
    for key in (F.linear, nn.Linear):
        mapping = fxq.QConfigMapping().set_object_type(key, fxq.default_qconfig)
        _, quantized = _quantize(model, [calibration], mapping, EQUALIZE, EXPORT)
        assert not any(type(m) is nn.Linear for m in quantized.modules()), key


class SharedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


def test_a_shared_weight_stays_a_call_and_equalization_skips_it_by_name():
    model, x = SharedWeight().eval(), torch.randn(16, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = fxq.prepare_fx(model, _static(), (x,), EXPORT, _equalization_config=EQUALIZE)
    calls = [n for n in prepared.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.linear.default]
    assert len(calls) == 2  # fc's two calls read one weight: neither became a module
    assert isinstance(prepared.get_submodule("out"), nn.Linear)
    assert any("equalization skipped for node 'linear'" in str(w.message) for w in caught)
    prepared(x)
    torch.testing.assert_close(fxq.convert_fx(prepared)(x), model(x), atol=0.1, rtol=0.1)


def test_converted_calls_keep_name_scope_and_no_stale_parameters():
    model, x = LinearLinear(nn.ReLU()).eval(), torch.randn(4, 16)
    exported = export_module(model, (x,))
    prepared = fxq.prepare_fx(exported, _static(), (x,), _equalization_config=EQUALIZE)
    node = next(n for n in prepared.graph.nodes if n.op == "call_module" and n.target == "fc1")
    assert node.name == "linear" and node.meta["fxq_scope"].path == "fc1"
    traced = fxq.prepare_fx(model, _static(), (x,), _equalization_config=EQUALIZE)
    layers = {key for key in prepared.state_dict() if key.startswith(("fc1.", "fc2."))}
    assert layers == {key for key in traced.state_dict() if key.startswith(("fc1.", "fc2."))} == {
        "fc1.0.weight", "fc1.0.bias", "fc2.weight", "fc2.bias"}  # as traced (fc1 fused with its relu), no leftovers
    assert not [n for n in prepared.graph.nodes if n.op == "get_attr" and n.target.startswith("fc")]


# ---- SmoothQuant on exported transformers ----

def _with_outliers(model):
    """A few LayerNorm channels 30x the rest, as trained transformers have them: random-init tiny models are flat,
    and smoothing rightly declines to touch flat activations."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight[[3, 17]] *= 30
    return model


@functools.lru_cache(maxsize=None)
def _transformer(name):
    pytest.importorskip("transformers")
    model, example, calibration, held_out = hf_tiny.build(name)
    return _with_outliers(model), example, calibration, held_out


def _transformer_sqnr(name, config, mapping=None):
    model, example, calibration, held_out = _transformer(name)
    prepared = fxq.prepare_fx(model, mapping or fxq.get_transformer_qconfig_mapping(), example, EXPORT,
                              _equalization_config=config)
    for batch in calibration:
        prepared(*batch)
    quantized = fxq.convert_fx(prepared)
    reference = hf_tiny.first_output(model(*held_out))
    return sqnr(reference, hf_tiny.first_output(quantized(*held_out))), quantized


@functools.lru_cache(maxsize=None)
def _unsmoothed_sqnr(name):
    return _transformer_sqnr(name, None)[0]


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.5, "search"])
@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_smoothquant_on_exported_transformers(name, alpha):
    smoothed_db, quantized = _transformer_sqnr(name, fxq.SmoothQuant(alpha=alpha))
    model = _transformer(name)[0]
    scales = _scales(quantized, "smoothing")
    assert scales  # at least one producer was smoothed
    # ... and some folded into a LayerNorm behind export's views / eval dropout, with no op added in front
    assert sum(node.target is torch.div for node in quantized.graph.nodes) < len(scales)
    assert hf_tiny.int8_linears(quantized) == hf_tiny.linear_layers(model)
    assert smoothed_db >= _unsmoothed_sqnr(name) - 1.0
    print(f"{name} SmoothQuant(alpha={alpha!r}): {smoothed_db:.1f} dB, without {_unsmoothed_sqnr(name):.1f} dB")


def test_smoothquant_folds_into_exported_layer_norms_and_keeps_module_name_qconfigs():
    pytest.importorskip("transformers")
    path = "encoder.layer.0.attention.self.query"
    mapping = fxq.get_transformer_qconfig_mapping().set_module_name(path, None)
    _, quantized = _transformer_sqnr("bert", fxq.SmoothQuant(), mapping)
    assert type(quantized.get_submodule(path)) is nn.Linear  # float, as asked
    assert hf_tiny.int8_linears(quantized) == hf_tiny.linear_layers(_transformer("bert")[0]) - 1
    assert any(name.startswith("layer_norm") for name in _scales(quantized, "smoothing"))  # folded into a norm


class GainBlock(nn.Module):
    """F.linear on parameters of a module that holds another one: the Linear cannot take the block's place."""

    def __init__(self):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(8, 16) / 4), nn.Parameter(torch.randn(8) / 4)
        self.gain = nn.Parameter(torch.full((8,), 2.0))

    def forward(self, x):
        return F.linear(x, self.w, self.b) * self.gain


class WithGainBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = GainBlock()

    def forward(self, x):
        return self.block(x)


def test_a_linear_in_a_block_with_other_parameters_becomes_its_child_and_the_old_ones_go():
    model, x = WithGainBlock().eval(), torch.randn(64, 16) * torch.logspace(-2, 2, 16)
    prepared, quantized = _quantize(model, [x], _static(), EQUALIZE, EXPORT)
    assert isinstance(prepared.get_submodule("block.w_module"), nn.Linear)
    assert {key for key in prepared.state_dict() if key.startswith("block.")} == {
        "block.gain", "block.w_module.weight", "block.w_module.bias"}
    _, traced = _quantize(model, [x], _static(), EQUALIZE, {"tracer": "fx"})
    assert _scales(quantized, "equalization")
    assert abs(sqnr(model(x), quantized(x)) - sqnr(model(x), traced(x))) <= 0.5
