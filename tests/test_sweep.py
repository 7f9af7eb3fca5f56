"""tools/sweep.py: every sweep architecture through fxq and torch.ao, and fxq's goals checked per model (issue 14).

Per case: fxq prepares, calibrates, converts and runs it; SQNR vs float >= torch.ao's - 0.5 dB; no more quantize
and no more dequantize calls than torch.ao; the user's float model bit-identical afterwards; and the case's own
SQNR floor where it has one.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from conftest import torch_ao

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools.sweep import run_sweep, to_json  # noqa: E402
from tools.sweep_models import CASES  # noqa: E402
from tools.sweep_measure import plain_requantize_counts, quantize_dequantize_counts, same_snapshot, snapshot  # noqa: E402, E501
from tools.sweep_report import format_table, goal_misses  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")]

# Symbolic tracing cannot follow these forwards (torch.ao fails too); fxq exports them with torch.export instead.
UNTRACEABLE = {
    "gpt2_sliced_mask": "bias[:, :, :length, :length] slices a buffer with a traced length",
    "forward_flag_kwarg": "`if return_hidden` branches on a forward argument",
}
FAMILIES = {"ResNet", "SqueezeNet", "DenseNet", "Inception", "MobileNetV2", "MobileNetV3", "EfficientNet", "ShuffleNet",
            "ConvNeXt", "UNet", "FPN", "ViT", "GPT-2", "BERT", "LSTM", "GRU", "Conv1d audio", "Conv3d", "GroupNorm",
            "InstanceNorm"}


@pytest.fixture(scope="module")
def results():
    torch_ao()  # skips cleanly where torch no longer ships torch.ao
    return {result.case.name: result for result in run_sweep(rounds=1)}


def test_sweep_covers_forty_architectures_and_the_issue_families():
    assert len(CASES) >= 40
    assert FAMILIES <= {case.family for case in CASES.values()}
    assert set(UNTRACEABLE) <= set(CASES)


@pytest.mark.parametrize("name", [name for name in CASES if name not in UNTRACEABLE])
def test_fxq_meets_the_sweep_goals(results, name):
    result = results[name]
    assert result.fxq.ok, f"{name}: fxq failed at {result.fxq.status}"
    assert not goal_misses([result]), goal_misses([result])


@pytest.mark.parametrize("name", sorted(UNTRACEABLE))
def test_untraceable_forward_goes_through_torch_export(results, name):
    result = results[name]
    assert result.fxq.ok and result.fxq.sqnr > 20, (result.fxq.status, result.fxq.sqnr)
    assert result.fxq.unchanged
    assert not result.torch_ao.ok, "torch.ao traces it: fxq should too"


def test_table_and_json_report_every_case(results):
    table = format_table(list(results.values()), markdown=True)
    assert all(f"| {name} " in table for name in CASES)
    rows = json.loads(json.dumps(to_json(list(results.values()))))
    assert {row["case"] for row in rows} == set(CASES)
    assert all(row["fxq"]["stages"] for row in rows)


def test_snapshot_notices_a_one_ulp_change_to_the_users_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    inputs = (torch.randn(3, 4),)
    before = snapshot(model, inputs)
    assert same_snapshot(before, snapshot(model, inputs))
    with torch.no_grad():
        model[1].running_mean[0] = torch.nextafter(model[1].running_mean[0], torch.tensor(1.0))
    assert not same_snapshot(before, snapshot(model, inputs))


class QuantizeTwice(nn.Module):
    def forward(self, x):
        q = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
        return torch.quantize_per_tensor(q.dequantize() * 2, 0.1, 0, torch.quint8).dequantize()


def test_quantize_and_dequantize_calls_are_counted_in_nested_graphs_too():
    outer = nn.Sequential(fx.symbolic_trace(QuantizeTwice()), fx.symbolic_trace(QuantizeTwice()))
    assert quantize_dequantize_counts(fx.symbolic_trace(QuantizeTwice())) == (2, 2)
    assert quantize_dequantize_counts(outer) == (4, 4)



def test_plain_round_trips_with_the_same_qparams_are_counted():
    # q -> dq -> q with the same qparams is waste (counted); dq -> q with other qparams is a requantize (not).
    from fxq.nn.plain import ops
    root = nn.Module()
    for name, value in (("scale", 0.1), ("zero_point", 3), ("other", 0.2)):
        root.register_buffer(name, torch.tensor(value))
    graph = fx.Graph()
    x = graph.placeholder("x")
    scale, zero_point, other = (graph.get_attr(name) for name in ("scale", "zero_point", "other"))
    quantize = lambda value, s: graph.call_function(ops.quantize_per_tensor, (value, s, zero_point, 0, 255, torch.uint8))  # noqa: E731,E501
    dequantize = lambda value: graph.call_function(ops.dequantize_per_tensor, (value, scale, zero_point))  # noqa: E731
    same = quantize(dequantize(quantize(x, scale)), scale)
    graph.output(quantize(dequantize(same), other))
    assert plain_requantize_counts(fx.GraphModule(root, graph)) == (True, 1)
