"""Input-weight equalization: int8 accuracy gains, parity with torch.ao, graph shapes (see equalization_cases)."""
import pytest
import torch
from conftest import torch_ao

from equalization_cases import (case_models, cle_case, cle_quantized, equalization_gain, fxq_quantized,
                                mild_case_models, mul_count, sqnr, torch_ao_quantized)

# Equalization is compared with PyTorch AO's numbers: quantized-tensor lowering.
pytestmark = pytest.mark.usefixtures("quantized_lowering")

CASES = case_models()
MILD = mild_case_models()


def _muls_before_first_quantize(gm) -> int:
    count = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch.quantize_per_tensor:
            return count
        count += node.op == "call_function" and node.target is torch.mul
    return count


@pytest.mark.parametrize("name", ["linear->linear", "linear->relu->linear", "linear->leaky_relu->linear",
                                  "conv->conv", "conv->relu->maxpool->conv", "F.linear->F.linear"])
def test_connected_layers_gain_at_least_3db(name):
    # the previous layer's output observer is rescaled, so folding the scale into its weights pays off
    gain, equalized = equalization_gain(*CASES[name])
    assert gain >= 3.0
    assert mul_count(equalized) == 1 and _muls_before_first_quantize(equalized) == 1  # none between layers


@pytest.mark.parametrize("name", ["single linear", "single conv", "linear, outlier weight columns",
                                  "conv, outlier weight columns"])
def test_skewed_inputs_and_outlier_columns_gain_at_least_6db(name):
    assert equalization_gain(*CASES[name])[0] >= 6.0


@pytest.mark.parametrize("name", sorted(MILD))
def test_mildly_skewed_inputs_lose_at_most_half_a_db(name):
    # channels spanning 0.5 .. 5 into plain random weights: equalization must not cost accuracy
    assert equalization_gain(*MILD[name])[0] >= -0.5


@pytest.mark.parametrize("name", ["single linear", "single conv"])
def test_parity_with_torch_ao_on_a_single_layer(name):
    tao = torch_ao()
    model, calibration, test = CASES[name]
    ours, theirs = fxq_quantized(model, calibration), torch_ao_quantized(tao, model, calibration)
    assert sqnr(theirs(test), ours(test)) >= 40.0
    assert mul_count(ours) == mul_count(theirs) == 1
    assert _muls_before_first_quantize(ours) == _muls_before_first_quantize(theirs) == 1


def test_connected_linears_have_torch_ao_graph_shape_and_beat_it():
    tao = torch_ao()
    model, calibration, test = CASES["linear->linear"]
    ours, theirs = fxq_quantized(model, calibration), torch_ao_quantized(tao, model, calibration)
    assert mul_count(ours) == mul_count(theirs) == 1
    assert _muls_before_first_quantize(ours) == _muls_before_first_quantize(theirs) == 1
    assert sqnr(model(test), ours(test)) >= sqnr(model(test), theirs(test)) + 3.0


def test_observed_graph_has_an_equalization_observer_behind_each_input_observer():
    import fxq
    model, calibration, _ = CASES["linear->linear"]
    eq = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)
    prepared = fxq.prepare_fx(model, fxq.QConfigMapping().set_global(fxq.default_qconfig), (calibration,),
                              _equalization_config=eq)
    order = [n.target for n in prepared.graph.nodes if n.op == "call_module"]
    assert order == ["activation_post_process_0", "fc1_input_equalization_process", "fc1",
                     "activation_post_process_1", "fc2_input_equalization_process", "fc2",
                     "activation_post_process_2"]


def test_cross_layer_equalization_gains_at_least_3db_and_keeps_float_math():
    import fxq
    model, calibration, test = cle_case()
    expected = model(test)
    none = sqnr(expected, cle_quantized(model, calibration, cross_layer=False)(test))
    assert sqnr(expected, cle_quantized(model, calibration, cross_layer=True)(test)) >= none + 3.0
    balanced = fxq.cross_layer_equalize(model)
    assert torch.allclose(balanced(test), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    ranges = [balanced.conv1.weight.abs().flatten(1).amax(1), balanced.conv2.weight.abs().transpose(0, 1).flatten(1)
              .amax(1)]
    assert torch.allclose(ranges[0], ranges[1], rtol=1e-4)  # each channel's two weight ranges balanced
