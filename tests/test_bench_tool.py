"""tools/bench.py on a tiny model: every metric is measured (present and positive), side by side and as JSON; the
peer columns (fxq's lowerings, fxq.compile, pt2e eager and compiled) print their ratios or n/a with the reason."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from conftest import torch_ao

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools import bench, bench_measure  # noqa: E402
from tools.bench_measure import METRICS, Settings, latency_key  # noqa: E402
from tools.bench_report import goal_lines, isa_line, summary_table  # noqa: E402
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


# the quantized-tensor lowering is the one that matches torch.ao's graphs; fxq's default may be the plain one
@pytest.mark.parametrize("impls", [["fxq"], ["torch.ao", "fxq-quantized"]], ids=["fxq", "fxq-quantized-vs-torch.ao"])
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
    if "torch.ao" in impls:  # same observers, same qparams: SQNR within a hair of torch.ao's
        compared = result["ratios"]["fxq-quantized/torch.ao"]
        assert set(compared) == expected_keys()
        assert abs(compared["sqnr_db"]) < 0.5
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


# ---------------------------------------------------------------------------------------------
# the columns of issue 17: fxq's two lowerings, fxq.compile, torchao's pt2e eager and compiled; goals; ISA flags

COMPILE_SETTINGS = Settings(engines=["x86"], batches=[1], thread_counts=[1], runs=3, warmup=1, min_seconds=0,
                            repeats=1, compile_backend="eager")  # eager backend: the plumbing, not inductor's 10 s


def row_cells(table: str, first: str) -> list:
    """The cells of the table row whose first cell is `first` (cells are separated by two or more spaces)."""
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{table}")


@pytest.fixture(scope="module")
def peers_result():
    """One bench_model run of the tiny model: fxq's quantized lowering, torch.ao, pt2e and pt2e compiled."""
    torch_ao()
    pytest.importorskip("torchao.quantization.pt2e", reason="torchao is not installed; no pt2e column to check")
    bench.MODELS["tiny"] = lambda: narrow_chain(3)
    try:
        names = ["fxq-quantized", "torch.ao", "pt2e", "pt2e+compile"]
        implementations = {name: bench.load_implementation(name) for name in names}
        return bench.bench_model("tiny", implementations, COMPILE_SETTINGS), names
    finally:
        del bench.MODELS["tiny"]


@pytest.mark.parametrize("column, peer", [("fxq-quantized", "torch.ao"), ("fxq-quantized", "pt2e"),
                                          ("fxq-quantized", "pt2e+compile"), ("pt2e", "torch.ao")])
def test_summary_prints_the_ratio_of_the_measured_medians(peers_result, column, peer):
    result, names = peers_result
    key = latency_key("int8_s", "x86", 1, 1)
    table = summary_table("tiny", result, names)
    headers = row_cells(table, "tiny x86 b=1 t=1")
    printed = row_cells(table, column)[headers.index(f"/{peer}")]
    assert printed == f"{result[column][key] / result[peer][key]:.3g}"
    over_fp32 = result[column][key] / result["fp32"][latency_key("fp32_s", None, 1, 1)]
    assert row_cells(table, column)[headers.index("int8/fp32")] == f"{over_fp32:.3g}"


def test_pt2e_compiled_reports_its_compile_time_and_the_same_numbers(peers_result):
    result, _ = peers_result
    assert "error" not in result["pt2e+compile"], result["pt2e+compile"].get("error")
    assert result["pt2e+compile"]["compile_s"] > 0
    assert result["pt2e+compile"]["sqnr_db"] == pytest.approx(result["pt2e"]["sqnr_db"], abs=0.01)  # eager backend
    assert result["pt2e+compile"][latency_key("int8_s", "x86", 1, 1)] > 0
    assert abs(result["pt2e"]["sqnr_db"] - result["torch.ao"]["sqnr_db"]) < 10  # both quantize the same chain


def test_absent_columns_print_na_with_the_reason(tiny_model, monkeypatch):
    import fxq

    monkeypatch.setattr(bench_measure, "has_plain_lowering", lambda: False)
    monkeypatch.delattr(fxq, "compile", raising=False)
    for module in [name for name in sys.modules if name.split(".")[0] == "torchao"] + ["torchao"]:
        monkeypatch.setitem(sys.modules, module, None)  # importing torchao now raises ImportError
    names = ["fxq-plain", "fxq-quantized", "fxq.compile", "pt2e", "pt2e+compile"]
    implementations = {name: bench.load_implementation(name) for name in names}
    result = bench.bench_model(tiny_model, implementations, COMPILE_SETTINGS)
    table = summary_table(tiny_model, result, names)
    assert row_cells(table, "fxq-plain")[1] == "n/a (fxq has no plain lowering)"
    assert row_cells(table, "fxq.compile")[1] == "n/a (fxq has no fxq.compile)"
    assert row_cells(table, "pt2e")[1].startswith("n/a (torchao is not installed")
    assert row_cells(table, "pt2e+compile")[1].startswith("n/a (torchao is not installed")
    assert float(row_cells(table, "fxq-quantized")[1]) > 0  # the quantized lowering still runs and is timed


@pytest.mark.parametrize("names", [["fxq-quantized", "fxq.compile"], ["fxq.compile"]], ids=["with-base", "alone"])
def test_fxq_compile_column_compiles_the_default_lowering(tiny_model, monkeypatch, names):
    """Alone, the column converts its base model unseen; either way the compiled model is timed and checked."""
    import fxq

    compiled = []

    def fake_compile(model):  # stands in for fxq.compile until fxq has it
        compiled.append(model)
        return torch.compile(model, backend="eager")

    monkeypatch.setattr(fxq, "compile", fake_compile, raising=False)
    implementations = {name: bench.load_implementation(name) for name in names}
    result = bench.bench_model(tiny_model, implementations, COMPILE_SETTINGS)
    assert len(compiled) == 1 and isinstance(compiled[0], torch.fx.GraphModule)
    assert set(result) - {"fp32", "ratios", "summary"} == set(names)  # the unseen base is no column
    assert result["fxq.compile"]["compile_s"] > 0 and result["fxq.compile"][latency_key("int8_s", "x86", 1, 1)] > 0
    if "fxq-quantized" in names:
        assert result["fxq.compile"]["sqnr_db"] == pytest.approx(result["fxq-quantized"]["sqnr_db"], abs=0.01)


def test_plain_lowering_column_runs_when_fxq_has_it(tiny_model):
    if not bench_measure.has_plain_lowering():
        implementation, error = bench.load_implementation("fxq-plain")
        assert implementation is None and error == "fxq has no plain lowering"
        return
    names = ["fxq-plain", "fxq-quantized"]
    result = bench.bench_model(tiny_model, {name: bench.load_implementation(name) for name in names},
                               COMPILE_SETTINGS)
    assert "error" not in result["fxq-plain"], result["fxq-plain"]["error"]
    assert result["fxq-plain"]["sqnr_db"] > 30


def summary_only(latencies: dict) -> dict:
    """A bench result with only batch-1 latencies, in milliseconds per column."""
    int8, fp32 = latency_key("int8_s", "x86", 1, 1), latency_key("fp32_s", None, 1, 1)
    result = {name: {int8: ms / 1000} for name, ms in latencies.items() if name != "fp32"}
    return {**result, "fp32": {fp32: latencies["fp32"] / 1000}, "summary": {"int8": int8, "fp32": fp32}}


def test_goals_pass_and_fail_on_the_measured_ratios():
    results = {"bert": {**summary_only({"fp32": 100, "fxq-quantized": 50, "torch.ao": 55, "pt2e+compile": 40}),
                        "fxq-plain": {"error": "fxq has no plain lowering"}},
               "resnet18": summary_only({"fp32": 10, "fxq-plain": 4, "fxq-quantized": 6, "torch.ao": 5})}
    lines = goal_lines(results)
    # no plain lowering: the quantized one stands for fxq's eager default; 50/55 = 0.909 > 0.85
    assert "FAIL  bert: fxq-quantized int8 / torch.ao int8 = 0.909 <= 0.85" in lines
    assert "FAIL  bert: fxq-quantized int8 / pt2e+compile int8 = 1.25 <= 1.0" in lines
    assert any(line.startswith("n/a   bert: fxq.compile int8 / pt2e+compile int8") for line in lines)
    assert "PASS  resnet18: fxq-plain int8 / torch.ao int8 = 0.8 <= 0.9" in lines  # plain is the default once it exists
    assert "PASS  resnet18: fxq-plain int8 / fp32 = 0.4 <= 1.0" in lines
    assert "PASS  bert: fxq-quantized int8 / fp32 = 0.5 <= 1.0" in lines
    assert len(lines) == 6  # bert x 3, resnet18 x 1, every model x 1


def test_isa_flags_come_from_cpuinfo_and_head_every_table(tiny_model, capsys):
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx2 avx_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert bench_measure.cpu_isa_flags(cpuinfo) == {"avx2": True, "avx512f": False, "avx512_vnni": False,
                                                    "avx_vnni": True, "amx_int8": False}
    bench.main(["--models", tiny_model, "--impls", "fxq-quantized", "--runs", "2", "--warmup", "1",
                "--min-seconds", "0", "--repeats", "1"])
    out = capsys.readouterr().out
    flags = isa_line(bench_measure.cpu_isa_flags())
    assert out.count(flags) == 3, out  # the full table, the summary, the goals
    for table_start in (f"{tiny_model} ", "issue 17 goals"):
        before = out[:out.index(table_start)].rstrip().splitlines()
        assert before[-1] == flags
