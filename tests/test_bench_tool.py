"""tools/bench.py on a tiny model: every metric is measured (present and positive), side by side and as JSON."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import torch_ao

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools import bench  # noqa: E402
from tools.bench_measure import METRICS, Settings, latency_key  # noqa: E402
from tools.zoo import narrow_chain  # noqa: E402

# torch.ao and quantized tensors warn about their deprecation on every call; the tool silences them the same way.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
ENGINES = [engine for engine in ("x86", "onednn") if engine in torch.backends.quantized.supported_engines]
SETTINGS = Settings(engines=ENGINES, batches=[1, 3], thread_counts=[1], runs=2, warmup=1, min_seconds=0)


def expected_keys() -> set:
    latency = {latency_key(kind, engine, batch, 1) for kind in ("int8_s", "int8_over_fp32")
               for engine in ENGINES for batch in (1, 3)}
    return set(METRICS) | latency


@pytest.fixture
def tiny_model(monkeypatch):
    """A 3-block narrow chain registered as a bench model named 'tiny'."""
    monkeypatch.setitem(bench.MODELS, "tiny", lambda: narrow_chain(3))
    return "tiny"


@pytest.mark.parametrize("impls", [["fxq"], ["torch.ao", "fxq"]], ids=["fxq", "fxq-vs-torch.ao"])
def test_every_metric_is_measured_and_positive(tiny_model, impls):
    if "torch.ao" in impls:
        torch_ao()  # skips where this torch has no torch.ao
    implementations = {name: bench.load_implementation(name) for name in impls}
    result = bench.bench_model(tiny_model, implementations, SETTINGS)
    assert set(result["fp32"]) == {latency_key("fp32_s", None, batch, 1) for batch in (1, 3)}
    assert all(value > 0 for value in result["fp32"].values())
    for name in impls:
        assert "error" not in result[name], result[name].get("error")
        assert set(result[name]) == expected_keys(), name
        assert all(value > 0 for value in result[name].values()), (name, result[name])
        assert 0 < result[name]["convert_observers_share"] <= 1  # a part of convert, measured inside it
    if "torch.ao" in impls:  # same observers, same qparams: SQNR no worse than torch.ao's
        compared = result["ratios"]["fxq/torch.ao"]
        assert set(compared) == expected_keys()
        # Was abs(...) < 0.5: the plain default rounds less often than torch.ao (fused activations, fp32 outputs),
        # so it may be better by more than a hair, never worse.
        assert compared["sqnr_db"] > -0.5
        assert all(value > 0 and math.isfinite(value) for key, value in compared.items() if key != "sqnr_db")


def test_command_line_prints_the_table_and_writes_json(tiny_model, tmp_path, capsys):
    path = tmp_path / "bench.json"
    bench.main(["--models", tiny_model, "--impls", "fxq", "--runs", "2", "--warmup", "1", "--min-seconds", "0", "--batches", "1,2",
                "--json", str(path)])
    table = capsys.readouterr().out
    assert "int8 latency x86 b=2 t=1 (ms)" in table and "observers' share of convert" in table
    saved = json.loads(path.read_text())
    assert saved["settings"]["engines"] == ["x86"] and saved["results"]["tiny"]["fxq"]["prepare_s"] > 0


def test_scaling_fits_an_exponent(capsys):
    result = bench.main(["--scaling", "--sizes", "2,4,8", "--impls", "fxq"])
    assert len(result["fxq"]["prepare_s"]) == 3 and all(t > 0 for t in result["fxq"]["prepare_s"])
    assert math.isfinite(result["fxq"]["exponent"])  # 2..8 blocks time the fixed costs: the slope means little
    assert "exponent k" in capsys.readouterr().out


def test_bad_engine_is_refused_with_the_known_ones():
    with pytest.raises(SystemExit):
        bench.parse_args(["--engines", "tpu"])
