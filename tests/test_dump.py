"""fxq.dump and fxq.to_networkx: golden table and JSON, the JSON schema, a GraphML round trip, DOT, the per-pass dumps.

Golden files live in tests/golden/; a mismatch fails. Regenerate them only on purpose:
``FXQ_REGENERATE_GOLDEN=1 pytest tests/test_dump.py`` (then read the diff before committing).
"""
import json
import os
import re
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn

import fxq

# Golden dumps and dtype columns of the quantized-tensor graph (test_plain_lowering.py dumps a plain one).
pytestmark = pytest.mark.usefixtures("quantized_lowering")

GOLDEN = Path(__file__).parent / "golden"


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3))) + 1


def _small_prepared():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(2, 1, 6, 6)
    prepared = fxq.prepare_fx(model, fxq.QConfigMapping().set_global(fxq.default_qconfig), (x,))
    prepared(x)
    return prepared, x


def _check_golden(name, text):
    path = GOLDEN / name
    if os.environ.get("FXQ_REGENERATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing; create it with FXQ_REGENERATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from the golden file; if intended, FXQ_REGENERATE_GOLDEN=1"


def test_table_of_a_calibrated_model_matches_golden():
    prepared, _ = _small_prepared()
    _check_golden("small_prepared_table.txt", fxq.dump(prepared))


def test_json_of_a_converted_model_matches_golden():
    prepared, x = _small_prepared()
    _check_golden("small_converted.json", fxq.dump(fxq.convert_fx(prepared), "json", example_inputs=(x,)))


def test_table_of_a_converted_model_matches_golden():
    # the lowered ops show the qconfig prepare gave them; quantize/dequantize rows show qparams instead
    prepared, x = _small_prepared()
    _check_golden("small_converted_table.txt", fxq.dump(fxq.convert_fx(prepared), example_inputs=(x,)))


def test_qconfig_column_names_each_ops_assignment_in_every_stage(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 6)
    mapping = fxq.QConfigMapping().set_global(fxq.default_qconfig).set_module_name("fc", None)
    prepared = fxq.prepare_fx(Small().eval(), mapping, (x,), debug_dump_dir=str(tmp_path))
    prepared(x)
    converted = fxq.convert_fx(prepared, debug_dump_dir=str(tmp_path))
    short = "act=MinMax(quant_max=127, quant_min=0), w=MinMax(qint8, pt_symmetric)"
    tables = {"prepared": fxq.dump(prepared), "converted": fxq.dump(converted),
              "prepare pass": next((tmp_path / "prepare").glob("*-insert_observers.txt")).read_text(),
              "convert pass": next((tmp_path / "convert").glob("*-lower.txt")).read_text()}  # numbered by position
    for stage, table in tables.items():
        rows = {line.split()[1]: line for line in table.splitlines() if re.match(r"\d+ ", line)}
        assert short in rows["conv"] and short in rows["mean"], stage
        assert short not in rows["fc"], stage  # set_module_name("fc", None): float, no qconfig
        assert not any(short in row for name, row in rows.items() if "quantize" in name or "post_process" in name)


def test_dumps_are_deterministic_and_free_of_addresses():
    a, b = fxq.dump(_small_prepared()[0], "json"), fxq.dump(_small_prepared()[0], "json")
    assert a == b and not re.search(r"0x[0-9a-f]{6,}", a)


def test_json_follows_the_documented_schema():
    prepared, x = _small_prepared()
    data = json.loads(fxq.dump(prepared, "json"))
    assert (data["schema"], data["version"]) == ("fxq.graph", 1)
    assert list(data["nodes"][0]) == list(fxq.graph_records.RECORD_KEYS)
    observer = next(n for n in data["nodes"] if n["name"] == "activation_post_process_0")
    # the observer saw exactly x: its range is x's, its qparams the observer's own
    assert observer["quant"]["min"] == pytest.approx(float(x.min()), rel=1e-5)
    assert observer["quant"]["max"] == pytest.approx(float(x.max()), rel=1e-5)
    scale, zero_point = prepared.activation_post_process_0.calculate_qparams()
    assert observer["quant"]["scale"] == pytest.approx(float(scale), rel=1e-5)
    assert observer["quant"]["zero_point"] == int(zero_point)
    assert "MinMaxObserver" in next(n for n in data["nodes"] if n["name"] == "fc")["qconfig"]


def test_converted_table_shows_quantized_dtypes_with_example_inputs():
    prepared, x = _small_prepared()
    table = fxq.dump(fxq.convert_fx(prepared), example_inputs=(x,))
    fc_row = next(line for line in table.splitlines() if re.match(r"\d+\s+fc\s", line))
    assert "quint8[2x3]" in fc_row
    assert f"{fxq.convert_fx(prepared).fc.scale:.6g}" in fc_row


@pytest.mark.parametrize("stage", ["prepared", "converted"])
def test_graphml_round_trip_keeps_attributes(tmp_path, stage):
    prepared, x = _small_prepared()
    gm, example = (prepared, None) if stage == "prepared" else (fxq.convert_fx(prepared), (x,))
    graph = fxq.to_networkx(gm, example)
    fxq.dump(gm, "graphml", path=tmp_path / "g.graphml", example_inputs=example)
    loaded = nx.read_graphml(tmp_path / "g.graphml")
    assert (loaded.graph["schema"], loaded.graph["version"]) == ("fxq.graph", 1)
    assert sorted(loaded.edges) == sorted(graph.edges) and len(loaded) == len(graph)
    for name, attributes in graph.nodes(data=True):
        assert loaded.nodes[name] == attributes, name  # every attribute, with its type (int, float, str)
    records = {r["name"]: r for r in fxq.graph_records.node_records(gm, example)}
    assert {name: data["op"] for name, data in loaded.nodes(data=True)} == {n: r["op"] for n, r in records.items()}
    conv = loaded.nodes["conv"]
    assert conv["qconfig"] == records["conv"]["qconfig"] and conv["scope"] == "conv"
    if stage == "prepared":
        observer = loaded.nodes["activation_post_process_1"]
        assert observer["q_dtype"] == "quint8" and observer["q_min"] == 0.0
        assert observer["q_scale"] == records["activation_post_process_1"]["quant"]["scale"]
        assert list(loaded.successors("conv")) == ["activation_post_process_1"]
    else:
        assert conv["dtype"] == "quint8" and conv["shape"] == "2x4x4x4"
        assert conv["q_scale"] == pytest.approx(float(gm.conv.scale), rel=1e-5) and conv["q_zero_point"] == 0


def test_dot_names_every_node_and_edge():
    prepared, _ = _small_prepared()
    dot = fxq.dump(prepared, "dot")
    graph = fxq.to_networkx(prepared)
    assert dot.startswith("digraph fxq {") and dot.count(" -> ") == graph.number_of_edges()
    assert all(f'"{name}" [label=' in dot for name in graph.nodes)


def test_unknown_format_says_which_exist():
    with pytest.raises(ValueError, match="unknown format 'svg'.*table, json, dot, graphml"):
        fxq.dump(_small_prepared()[0], "svg")


def test_per_pass_dumps_hold_the_table_and_the_code(tmp_path):
    torch.manual_seed(0)
    fxq.prepare_fx(Small().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(2, 1, 6, 6),),
                   debug_dump_dir=str(tmp_path))
    fused = (tmp_path / "prepare" / "03-fuse.txt").read_text()
    observed = (tmp_path / "prepare" / "08-insert_observers.txt").read_text()
    assert re.search(r"^\d+\s+bn\s", (tmp_path / "prepare" / "02-record_values.txt").read_text(), re.M)
    assert not re.search(r"^\d+\s+bn\s", fused, re.M)  # batch norm folded into conv by the fuse pass
    assert re.search(r"^\d+\s+activation_post_process_0\s+call_module", observed, re.M)
    assert "def forward(self, x)" in observed


def _pass_names(passes):
    return [run.__module__.rsplit(".", 1)[-1] for run in passes]


def test_dump_directory_has_one_file_per_pass_in_order_and_a_timing_table(tmp_path, monkeypatch):
    from fxq.passes import pipeline
    torch.manual_seed(0)
    x = torch.randn(2, 1, 6, 6)
    monkeypatch.setenv("FXQ_DUMP_DIR", str(tmp_path))  # the environment variable does what debug_dump_dir does
    prepared = fxq.prepare_fx(Small().eval(), fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    fxq.convert_fx(prepared)
    for stage, passes in (("prepare", pipeline.PREPARE), ("convert", pipeline.CONVERT)):
        names = _pass_names(passes)
        expected = [f"{i:02d}-{name}.txt" for i, name in enumerate(names, 1)] + ["timing.txt"]
        assert sorted(p.name for p in (tmp_path / stage).iterdir()) == sorted(expected), stage
        timing = (tmp_path / stage / "timing.txt").read_text().splitlines()
        assert timing[0].split() == ["pass", "ms", "what", "it", "did"]
        assert [line.split()[0] for line in timing[1:]] == names  # one row per pass, in pipeline order
        assert all(re.match(r"\S+\s+\d+\.\d\d(\s|$)", line) for line in timing[1:])
    prepare_timing = (tmp_path / "prepare" / "timing.txt").read_text()
    assert re.search(r"^fuse\s+[\d.]+\s+fused Conv2d -> BatchNorm2d -> ReLU\S*: 1$", prepare_timing, re.M)
    assert re.search(r"^insert_observers\s.*output observers: 3", prepare_timing, re.M)
    assert re.search(r"^cleanup\s.*dead nodes removed: \d+", (tmp_path / "convert" / "timing.txt").read_text(), re.M)
    lowered = next((tmp_path / "convert").glob("*-lower.txt")).read_text()
    assert re.search(r"^\d+\s+fc\s+call_module\s", lowered, re.M) and "def forward(self, x)" in lowered


def test_table_shows_a_per_channel_observer_range():
    # F.linear's weight is observed in the graph by a per-channel observer: min/max are lists, one per channel
    class FunctionalLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0], [-4.0, 0.25]]))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight)

    prepared = fxq.prepare_fx(FunctionalLinear(), fxq.get_default_qconfig_mapping(), (torch.randn(1, 2),))
    prepared(torch.randn(1, 2))
    row = next(line for line in fxq.dump(prepared).splitlines() if re.match(r"\d+\s+\S+\s+call_module", line)
               and "qint8" in line)
    assert "[3] -4..3" in row
