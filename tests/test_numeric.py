"""fxq.compare, fxq.sensitivity and fxq.calibrate: they point at the layer that really loses precision."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr
from fxq.observers import MinMaxObserver


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.conv2(x) + x
        x = x.mean((2, 3))
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


# 4 levels for fc2's output: a deliberately terrible activation qconfig
TWO_BIT = fxq.QConfig(MinMaxObserver.with_args(quant_min=0, quant_max=3), fxq.default_qconfig.weight)


def _setup(bad_layer=None):
    torch.manual_seed(0)
    model = Net().eval()
    data = [torch.randn(8, 3, 8, 8) for _ in range(4)]
    mapping = fxq.get_default_qconfig_mapping()
    if bad_layer:
        mapping.set_module_name(bad_layer, TWO_BIT)
    prepared = fxq.prepare_fx(model, mapping, (data[0],))
    fxq.calibrate(prepared, data, progress=False)
    return model, fxq.convert_fx(prepared), data


def test_compare_puts_the_layer_with_a_bad_qconfig_first():
    model, quantized, data = _setup("fc2")
    errors = fxq.compare(model, quantized, data)
    assert errors[0].scope == "fc2"
    healthy = {e.node: e.sqnr_db for e in fxq.compare(*_setup())}
    assert errors[0].sqnr_db < healthy["fc2"] - 15


def test_compare_matches_fused_layers_and_agrees_with_a_direct_sqnr():
    model, quantized, data = _setup()
    errors = {e.node: e for e in fxq.compare(model, quantized, data)}
    # conv-bn-relu is fused: compared with the float relu(bn(conv(x))), so its SQNR is high
    assert errors["conv"].op == "ConvReLU2d" and errors["conv"].sqnr_db > 30
    assert "add" in errors  # the lowered add (renamed by lowering) is still matched
    # the last layer's SQNR is the whole model's output SQNR
    expected = sqnr(torch.cat([model(x) for x in data]), torch.cat([quantized(x) for x in data]))
    assert errors["fc3"].sqnr_db == pytest.approx(expected, abs=0.05)
    assert list(errors.values()) == sorted(errors.values(), key=lambda e: e.sqnr_db)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.weight = nn.Parameter(torch.randn(4, 8) * 0.3)
        self.bias = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))   # fused: one ConvReLU2d named conv
        y = F.relu(self.conv2(y) + y)       # lowered: add and relu_1 become one quantized add_relu
        y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        return F.linear(y, self.weight, self.bias)  # lowered: a new module linear_quantized_0


def _op_nodes(gm):
    return [n for n in gm.graph.nodes if n.op.startswith("call") and n.target not in
            (torch.quantize_per_tensor, "dequantize")]


def test_compare_pairs_nodes_that_convert_merged_and_renamed(tmp_path, quantized_lowering):
    torch.manual_seed(0)
    model, data = Functional().eval(), [torch.randn(8, 3, 8, 8) for _ in range(4)]
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    fxq.calibrate(prepared, data, progress=False)
    quantized = fxq.convert_fx(prepared)
    assert len(_op_nodes(quantized)) < len(_op_nodes(fxq.fuse_fx(model)))  # the quantized graph has fewer ops
    assert not {"relu_1", "linear"} & {n.name for n in quantized.graph.nodes}
    errors = {e.node: e for e in fxq.compare(model, quantized, data)}
    # every float op whose output the quantized model computes; add's output lives only inside add_relu
    assert set(errors) == {"conv", "conv2", "relu_1", "adaptive_avg_pool2d", "flatten", "linear"}
    assert errors["conv"].op == "ConvReLU2d" and errors["relu_1"].op == "torch.nn.functional.relu"
    with torch.no_grad():
        expected = sqnr(torch.cat([model(x) for x in data]), torch.cat([quantized(x) for x in data]))
    assert errors["linear"].sqnr_db == pytest.approx(expected, abs=0.05)  # F.linear is the output
    assert min(e.sqnr_db for e in errors.values()) > 25
    # torch.save drops node meta and renumbers names; the provenance kept on the model still pairs them
    torch.save(quantized, tmp_path / "q.pt")
    loaded = torch.load(tmp_path / "q.pt", weights_only=False)
    assert [n.name for n in loaded.graph.nodes] != [n.name for n in quantized.graph.nodes]
    assert fxq.compare(model, loaded, data) == fxq.compare(model, quantized, data)
    # without provenance (a graph edited after convert) only same-named nodes are paired
    del loaded._fxq_provenance
    assert {e.node for e in fxq.compare(model, loaded, data)} == {"conv", "conv2", "adaptive_avg_pool2d", "flatten"}


def test_comparison_prints_a_table_worst_first():
    table = str(fxq.compare(*_setup("fc2")))
    lines = table.splitlines()
    assert re.match(r"layer\s+node\s+op\s+SQNR dB", lines[0])
    assert lines[2].startswith("fc2 ")


def _sensitivity_setup():
    torch.manual_seed(0)
    model = Net().eval()
    data = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    reference = torch.cat([model(x) for x in data])

    def score(quantized):
        return sqnr(reference, torch.cat([quantized(x) for x in data]))

    return model, data, score, fxq.get_default_qconfig_mapping().set_module_name("fc2", TWO_BIT)


def test_sensitivity_ranks_the_bad_layer_most_sensitive():
    model, data, score, mapping = _sensitivity_setup()
    ranking = fxq.sensitivity(model, mapping, data, score, layers=["conv", "fc1", "fc2"])
    assert [r.layer for r in ranking][0] == "fc2"
    assert ranking[0].change > 10 > abs(ranking[-1].change)


def test_sensitivity_of_a_prepared_model_ranks_like_the_float_model(quantized_lowering):
    model, data, score, mapping = _sensitivity_setup()
    prepared = fxq.prepare_fx(model, mapping, (data[0],))
    before = fxq.dump(prepared, "json")
    from_prepared = fxq.sensitivity(prepared, mapping, data, score)  # default layers: the fused conv, conv2, fc*
    assert [r.layer for r in from_prepared][0] == "fc2" and from_prepared[0].change > 10
    assert sorted(r.layer for r in from_prepared) == ["conv", "conv2", "fc1", "fc2", "fc3"]
    from_float = {r.layer: r for r in fxq.sensitivity(model, mapping, data, score, layers=["conv", "fc2"])}
    for r in from_prepared:  # the same trials: prepare folded bn into conv either way
        if r.layer in from_float:
            assert r.metric == pytest.approx(from_float[r.layer].metric, abs=1e-3), r.layer
    assert fxq.dump(prepared, "json") == before  # the prepared model is left as it was


def test_float_graph_of_a_prepared_model_computes_the_float_model():
    from fxq.debug.sensitivity import float_graph
    model, _, data = _setup()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    recovered = float_graph(prepared)
    assert not any("activation_post_process" in n.name for n in recovered.graph.nodes)
    assert sqnr(model(data[1]), recovered(data[1])) > 100


def test_sensitivity_names_an_unknown_layer():
    model, data, score, mapping = _sensitivity_setup()
    with pytest.raises(ValueError, match="no module 'fc9' in the model"):
        fxq.sensitivity(model, mapping, data, score, layers=["fc9"])


def test_calibrate_counts_batches_and_matches_manual_calibration():
    torch.manual_seed(0)
    model = Net().eval()
    data = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    ours = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    manual = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    summary = fxq.calibrate(ours, data, progress=False)
    for x in data:
        manual(x)
    assert summary.batches == 3 and summary.without_data == {}
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fxq.convert_fx(ours)(x), fxq.convert_fx(manual)(x))


def test_calibrate_reports_observers_that_saw_no_data():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 4),))
    with pytest.warns(UserWarning, match="observers saw no data"):
        summary = fxq.calibrate(prepared, [], progress=False)
    assert summary.batches == 0 and len(summary.without_data) >= 2
    assert "activation_post_process_0 (on input_1)" in str(summary)


def test_calibrate_progress_bar_goes_to_stderr(capsys):
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 4),))
    fxq.calibrate(prepared, [torch.randn(2, 4)] * 5, progress=True)
    err = capsys.readouterr().err
    assert "calibrating" in err and "5/5" in err
    fxq.calibrate(prepared, [torch.randn(2, 4)] * 5, progress=False)
    assert capsys.readouterr().err == ""


def test_calibrate_rejects_a_model_that_was_not_prepared():
    with pytest.raises(TypeError, match="expects the model returned by fxq.prepare_fx"):
        fxq.calibrate(nn.Linear(2, 2), [torch.randn(1, 2)])
