"""fxq.compare, fxq.sensitivity and fxq.calibrate: they point at the layer that really loses precision."""
import re

import pytest
import torch
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


def test_comparison_prints_a_table_worst_first():
    table = str(fxq.compare(*_setup("fc2")))
    lines = table.splitlines()
    assert re.match(r"layer\s+node\s+op\s+SQNR dB", lines[0])
    assert lines[2].startswith("fc2 ")


def test_sensitivity_ranks_the_bad_layer_most_sensitive():
    torch.manual_seed(0)
    model = Net().eval()
    data = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    reference = torch.cat([model(x) for x in data])

    def score(quantized):
        return sqnr(reference, torch.cat([quantized(x) for x in data]))

    mapping = fxq.get_default_qconfig_mapping().set_module_name("fc2", TWO_BIT)
    ranking = fxq.sensitivity(model, mapping, data, score, layers=["conv", "fc1", "fc2"])
    assert [r.layer for r in ranking][0] == "fc2"
    assert ranking[0].change > 10 > abs(ranking[-1].change)


def test_sensitivity_refuses_a_prepared_model():
    model, _, data = _setup()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    with pytest.raises(TypeError, match="takes the float model"):
        fxq.sensitivity(prepared, fxq.get_default_qconfig_mapping(), data, lambda m: 0.0)


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
