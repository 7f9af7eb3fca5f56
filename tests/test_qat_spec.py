"""Quantizer specs (immutable, composable, accepted where QConfigs are, failing early and by name) and shared
quantizers (one instance tied through prepare, training, save/load and convert)."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

import fxq
from conftest import saved_and_loaded
from fxq.config import spec

# Shared quantizers are checked through the quantized-tensor modules' output scales.
pytestmark = pytest.mark.usefixtures("one_thread", "quantized_lowering")  # one thread: tiny models train faster


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).train()


def quantizer_called_by(gm, node_name):
    node = next(n for n in gm.graph.nodes if n.name == node_name)
    return gm.get_submodule(node.target)


def test_specs_are_immutable_and_compose():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.INT4_PER_CHANNEL_WEIGHT.bit_width = 3
    four = spec.INT8_PER_CHANNEL_WEIGHT.with_(bit_width=4)
    assert four == spec.INT4_PER_CHANNEL_WEIGHT and four.quant_range == (-8, 7)
    assert spec.TERNARY_WEIGHT.quant_range == (-1, 1)
    layer = spec.W4A8.with_(weight_bit_width=2, output_range="learned")
    assert layer.weight.bit_width == 2 and layer.activation.range == "learned"
    assert spec.W4A8.weight.bit_width == 4  # the preset is unchanged
    assert isinstance(layer, fxq.QConfig)
    assert type(layer.activation()).__name__ == "LearnableFakeQuantize"
    assert layer.weight().quant_min == -2
    assert repr(spec.TERNARY_WEIGHT) == "QuantizerSpec(int2, signed, narrow, channel, minmax, symmetric, ste)"


@pytest.mark.parametrize("make, field, value", [
    (lambda: fxq.QuantizerSpec(bit_width=12), "bit_width", "12"),
    (lambda: fxq.QuantizerSpec(range="learned"), "range", "learned"),
    (lambda: fxq.QuantizerSpec(granularity="group"), "granularity", "group"),
    (lambda: fxq.QuantizerSpec(range="mse", granularity="channel"), "range", "mse"),
    (lambda: fxq.QuantizerSpec(rounding="stochastic"), "rounding", "stochastic"),
    (lambda: spec.W8A8.with_(input_bit_width=4, output_bit_width=8), "output_bit_width", "8"),
    (lambda: spec.W8A8.with_(bias_bit_width=8), "bias_bit_width", "8"),
    (lambda: spec.W8A8.with_(weight_colour="red"), "colour", ""),
])
def test_conflicting_or_incomplete_specs_fail_when_made_naming_field_and_value(make, field, value):
    with pytest.raises(fxq.SpecError) as error:
        make()
    assert field in str(error.value) and value in str(error.value)


@pytest.mark.parametrize("make, field, value", [
    (lambda: fxq.QuantizerSpec(range="percentile", percentile=150), "percentile", "150"),
    (lambda: fxq.QuantizerSpec(range="percentile", percentile=50), "percentile", "50"),
    (lambda: fxq.QuantizerSpec(range="percentile", granularity="channel"), "percentile", "channel"),
    (lambda: fxq.QuantizerSpec(bit_width=0), "bit_width", "0"),
    (lambda: spec.INT8_PER_CHANNEL_WEIGHT.with_(bit_width=1), "bit_width", "mean_abs"),
    (lambda: spec.BINARY_WEIGHT.with_(signed=False), "signed", "False"),
    (lambda: spec.UINT8_ACTIVATION.with_(range="mean_abs"), "range", "mean_abs"),
    (lambda: spec.INT4_GROUPED_WEIGHT.with_(symmetric=False), "symmetric", "False"),
    (lambda: spec.INT4_GROUPED_WEIGHT.with_(range="mse"), "range", "mse"),
    (lambda: spec.INT4_GROUPED_WEIGHT.with_(group_size=-4), "group_size", "-4"),
])
def test_new_fields_conflict_when_made_naming_field_and_value(make, field, value):
    with pytest.raises(fxq.SpecError) as error:
        make()
    assert field in str(error.value) and value in str(error.value)


def test_short_forms_print_the_new_fields():
    layer = fxq.LayerSpec(spec.UINT8_ACTIVATION.with_(range="percentile", percentile=99.9), spec.INT4_GROUPED_WEIGHT)
    assert layer.short() == "LayerSpec(act=uint8 tensor percentile99.9, w=int4 group32 minmax symmetric)"
    assert spec.BINARY_WEIGHT.short() == "int1 channel mean_abs symmetric ste"
    assert repr(spec.BINARY_WEIGHT) == "QuantizerSpec(int1, signed, channel, mean_abs, symmetric, ste)"
    assert spec.BINARY_WEIGHT.quant_range == (-1, 1)


def test_specs_build_the_new_quantizers():
    assert type(spec.UINT8_ACTIVATION.with_(range="percentile", percentile=99.5)()).__name__ == "PercentileObserver"
    assert spec.UINT8_ACTIVATION.with_(range="percentile", percentile=99.5)().percentile == 99.5
    grouped = spec.INT4_GROUPED_WEIGHT.with_(group_size=16)()
    assert (type(grouped).__name__, grouped.group_size, grouped.quant_min, grouped.quant_max) == (
        "GroupedWeightFakeQuantize", 16, -8, 7)
    binary = spec.BINARY_WEIGHT()
    assert (type(binary).__name__, binary.quant_min, binary.quant_max, binary.qscheme) == (
        "BinaryWeightFakeQuantize", -1, 1, torch.per_channel_symmetric)


def test_layer_spec_in_mapping_and_mpath_trains_and_converts():
    """A LayerSpec goes where a QConfig goes; the dump prints it short."""
    mapping = fxq.QConfigMapping().set_global(spec.W4A8).set_mpath("4", spec.W4A8.with_(weight_bit_width=2))
    prepared = fxq.prepare_qat_fx(mlp(), mapping, (torch.randn(4, 4),))
    assert prepared.get_submodule("4").weight_fake_quant.quant_min == -2
    assert prepared.get_submodule("0").weight_fake_quant.quant_min == -8
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(4):
        loss = prepared(torch.randn(16, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert "w=int2 channel minmax symmetric ste" in fxq.dump(prepared)
    prepared.eval().disable_observer()
    x = torch.randn(32, 4)
    expected = prepared(x)
    step = float(prepared.get_submodule("activation_post_process_3").scale)
    assert (fxq.convert_fx(prepared)(x) - expected).abs().max() <= step * 1.001


def test_spec_initializes_found_quantizers_in_ptq():
    prepared = fxq.prepare_fx(mlp().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 4),))
    fxq.find_quantizers(prepared, "**/[qtag:activation/output]").initialize(spec.UINT8_ACTIVATION.with_(range="mse"))
    assert type(prepared.activation_post_process_1).__name__ == "HistogramObserver"
    prepared(torch.randn(32, 4))
    assert fxq.convert_fx(prepared)(torch.randn(2, 4)).shape == (2, 3)


def test_shared_quantizer_stays_tied_through_training_save_load_and_convert():
    """Two layers' outputs tied to one quantizer instance (declared by query), kept tied everywhere."""
    prepared = fxq.prepare_qat_fx(mlp(), fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(4, 4),))
    fxq.find_quantizers(prepared, "{0, 2}/[qtag:activation/output]").initialize(
        spec.UINT8_ACTIVATION.with_(rounding="ste"), shared=True)
    first, second = prepared.activation_post_process_1, prepared.activation_post_process_2
    assert first is second
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(3):
        loss = prepared(torch.randn(16, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for again in (copy.deepcopy(prepared), saved_and_loaded(prepared)):
        # (torch.load re-traces the code, and a module reachable under two names gets the first one)
        assert quantizer_called_by(again, "activation_post_process_1") is quantizer_called_by(
            again, "activation_post_process_2")
    fresh = fxq.prepare_qat_fx(mlp(), fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(4, 4),))
    fxq.find_quantizers(fresh, "{0, 2}/[qtag:activation/output]").initialize(
        spec.UINT8_ACTIVATION.with_(rounding="ste"), shared=True)
    fresh.load_state_dict(prepared.state_dict())
    assert fresh.activation_post_process_1 is fresh.activation_post_process_2
    assert torch.equal(fresh.activation_post_process_1.scale, first.scale)
    quantized = fxq.convert_fx(prepared.eval())
    scales = {float(getattr(quantized, name).scale) for name in ("0", "2")}
    assert scales == {float(first.scale)}  # both layers quantize their outputs with the one shared scale


def test_ptq_quantizer_shared_by_query_converts():
    """Bug fix: convert looked modules up by their first name only, so a quantizer shared by
    ``initialize(..., shared=True)`` failed at convert with a KeyError on its second name."""
    prepared = fxq.prepare_fx(mlp().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 4),))
    fxq.find_quantizers(prepared, "{0, 2}/[qtag:activation/output]").initialize(fxq.observers.MinMaxObserver,
                                                                                 shared=True)
    prepared(torch.randn(32, 4))
    quantized = fxq.convert_fx(prepared)
    assert float(quantized.get_submodule("0").scale) == float(quantized.get_submodule("2").scale)
