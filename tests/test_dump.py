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


def test_graphml_round_trip_keeps_attributes(tmp_path):
    prepared, _ = _small_prepared()
    graph = fxq.to_networkx(prepared)
    fxq.dump(prepared, "graphml", path=tmp_path / "g.graphml")
    loaded = nx.read_graphml(tmp_path / "g.graphml")
    assert sorted(loaded.edges) == sorted(graph.edges)
    for name, attributes in graph.nodes(data=True):
        assert loaded.nodes[name] == pytest.approx(attributes), name
    assert graph.nodes["activation_post_process_1"]["q_dtype"] == "quint8"
    assert list(graph.successors("conv")) == ["activation_post_process_1"]


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
    fused = (tmp_path / "prepare" / "02-fuse.txt").read_text()
    observed = (tmp_path / "prepare" / "04-insert_observers.txt").read_text()
    assert re.search(r"^\d+\s+bn\s", (tmp_path / "prepare" / "01-record_values.txt").read_text(), re.M)
    assert not re.search(r"^\d+\s+bn\s", fused, re.M)  # batch norm folded into conv by the fuse pass
    assert re.search(r"^\d+\s+activation_post_process_0\s+call_module", observed, re.M)
    assert "def forward(self, x)" in observed
