"""The `fxq` command, run as a user runs it: every command, and bad arguments with their exit codes."""
import re
import subprocess
import sys
import textwrap

import pytest
import torch

MODELS = textwrap.dedent("""
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()

    def not_a_model():
        return 42
""")


def _fxq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fxq.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with a model factory, calibration data and a quantized model made by `fxq quantize`."""
    directory = tmp_path_factory.mktemp("cli")
    (directory / "mymodels.py").write_text(MODELS)
    generator = torch.Generator().manual_seed(1)
    torch.save(torch.randn(64, 3, 8, 8, generator=generator), directory / "calib.pt")
    result = _fxq("quantize", "mymodels:build", "--input-shape", "2,3,8,8", "--calib", "calib.pt",
                  "--out", "model_int8.pt", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "calibrated on 2 batches" in result.stdout and "wrote model_int8.pt" in result.stdout
    return directory


def test_demo_reports_accuracy_latency_size_and_worst_layers():
    result = _fxq("demo", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    float_acc, int8_acc = map(float, re.search(r"float ([\d.]+)%, int8 ([\d.]+)%", out).groups())
    assert float_acc > 95 and abs(float_acc - int8_acc) <= 1.0
    assert float(re.search(r"SQNR int8 vs float: ([\d.]+) dB", out).group(1)) > 25
    assert re.search(r"float [\d.]+ ms, int8 [\d.]+ ms \([\d.]+x\)", out)
    float_kb, int8_kb = map(float, re.search(r"float ([\d.]+) KB, int8 ([\d.]+) KB", out).groups())
    assert int8_kb < 0.5 * float_kb
    worst = out.split("five worst layers by SQNR:")[1].splitlines()[3:8]
    sqnrs = [float(line.split()[-1]) for line in worst]
    assert len(sqnrs) == 5 and sqnrs == sorted(sqnrs)
    assert float(re.search(r"total time: ([\d.]+) s", out).group(1)) < 60


def test_quantize_writes_a_model_that_matches_float(workdir):
    sys.path.insert(0, str(workdir))
    from mymodels import build
    quantized = torch.load(workdir / "model_int8.pt", weights_only=False)
    x = torch.randn(4, 3, 8, 8)
    reference = build()(x)
    noise = (quantized(x) - reference).pow(2).mean()
    assert 10 * torch.log10(reference.pow(2).mean() / noise) > 25


def test_quantize_without_calibration_data_is_a_usage_error(workdir):
    result = _fxq("quantize", "mymodels:build", "--input-shape", "2,3,8,8", "--out", "x.pt", cwd=workdir)
    assert result.returncode == 2 and "--random-calib" in result.stderr


def test_quantize_random_calibration_warns(workdir):
    result = _fxq("quantize", "mymodels:build", "--input-shape", "2,3,8,8", "--random-calib", "--out", "r.pt",
                  cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "warning: calibrating on random data" in result.stderr


BAD_ARGUMENTS = [
    (["quantize", "mymodels", "--input-shape", "1,3,8,8", "--random-calib", "--out", "o.pt"], 2,
     "is not MODULE:FACTORY"),
    (["quantize", "nosuchmodule:build", "--input-shape", "1,3,8,8", "--random-calib", "--out", "o.pt"], 1,
     "cannot import module 'nosuchmodule'"),
    (["quantize", "mymodels:missing", "--input-shape", "1,3,8,8", "--random-calib", "--out", "o.pt"], 1,
     "has no function 'missing'"),
    (["quantize", "mymodels:not_a_model", "--input-shape", "1,3,8,8", "--random-calib", "--out", "o.pt"], 1,
     "returned int, not an nn.Module"),
    (["quantize", "mymodels:build", "--input-shape", "1,x,8", "--random-calib", "--out", "o.pt"], 2,
     "bad shape '1,x,8'"),
    (["quantize", "mymodels:build", "--input-shape", "1,3,8,8", "--calib", "nope.pt", "--out", "o.pt"], 1,
     "--calib file 'nope.pt' does not exist"),
    (["quantize", "mymodels:build", "--input-shape", "1,3,8,8", "--calib", "mymodels.py", "--out", "o.pt"], 1,
     "cannot read --calib file 'mymodels.py'"),
    (["quantize", "mymodels:build", "--input-shape", "1,3,5,5", "--calib", "calib.pt", "--out", "o.pt"], 1,
     "example_inputs do not fit the model"),
    (["dump", "unreadable.pt"], 1, "model file 'unreadable.pt' does not exist"),
    (["dump", "mymodels:build"], 2, "needs --input-shape"),
    (["compare", "mymodels:build", "model_int8.pt"], 2, "needs inputs"),
    (["compare", "mymodels:build", "calib.pt", "--input-shape", "2,3,8,8"], 1, "holds a Tensor, not a GraphModule"),
    (["bogus"], 2, "invalid choice: 'bogus'"),

]
# through a real process: missing FACTORY, a bad shape string, an unreadable file, an unknown command
SUBPROCESS_CASES = [BAD_ARGUMENTS[i] for i in (2, 4, 6, 12)]


def _check_failure(code, stderr, expected_code, message):
    assert code == expected_code, stderr
    assert message in stderr and "Traceback" not in stderr
    if expected_code == 1:  # one clear line
        assert len([line for line in stderr.splitlines() if "error" in line]) == 1


@pytest.mark.parametrize("args, code, message", SUBPROCESS_CASES)
def test_bad_arguments_in_a_process(workdir, args, code, message):
    result = _fxq(*args, cwd=workdir)
    _check_failure(result.returncode, result.stderr, code, message)


@pytest.mark.parametrize("args, code, message", BAD_ARGUMENTS)
def test_bad_arguments_give_one_line_and_an_exit_code(workdir, monkeypatch, capsys, args, code, message):
    from fxq.cli import main
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [str(workdir)] + sys.path)
    try:
        returned = main(args)
    except SystemExit as exit:  # argparse's usage errors
        returned = exit.code
    _check_failure(returned, capsys.readouterr().err, code, message)


def test_debug_shows_the_traceback(workdir):
    result = _fxq("dump", "unreadable.pt", "--debug", cwd=workdir)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_dump_of_a_saved_model_shows_quantized_modules(workdir):
    result = _fxq("dump", "model_int8.pt", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert re.search(r"quantize_per_tensor\s+call_function\s+torch.quantize_per_tensor", result.stdout)
    json_result = _fxq("dump", "model_int8.pt", "--format", "json", cwd=workdir)
    assert '"schema": "fxq.graph"' in json_result.stdout


@pytest.mark.parametrize("stage, expected", [("traced", r"\b_0\s+call_module"),
                                             ("prepared", r"activation_post_process_0\s+call_module"),
                                             ("converted", r"quint8\[2x8x6x6\]")])
def test_dump_each_stage(workdir, stage, expected):
    result = _fxq("dump", "mymodels:build", "--input-shape", "2,3,8,8", "--stage", stage, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert re.search(expected, result.stdout)


def test_dump_graphml_to_a_file(workdir):
    result = _fxq("dump", "mymodels:build", "--input-shape", "2,3,8,8", "--format", "graphml", "--out", "g.graphml",
                  cwd=workdir)
    assert result.returncode == 0 and result.stdout == ""
    assert (workdir / "g.graphml").read_text().startswith("<graphml")


def test_compare_prints_every_layer_worst_first(workdir):
    result = _fxq("compare", "mymodels:build", "model_int8.pt", "--input-shape", "4,3,8,8", cwd=workdir)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    assert {row.split()[1] for row in rows} >= {"_0", "_3"}
    sqnrs = [float(row.split()[-1]) for row in rows]
    assert sqnrs == sorted(sqnrs) and min(sqnrs) > 20


def test_help_shows_examples():
    result = _fxq("--help")
    assert result.returncode == 0 and "fxq quantize mypkg.models:build" in result.stdout
