"""The `fxq` command: every command run as a user runs it (a process), the rest through ``fxq.cli.main`` in-process.

A process costs ~3 s of torch import, so each command and each kind of bad argument the issue names (missing
FACTORY, bad shape string, unreadable file) runs in a process once; `fxq demo` runs once for all its checks.
Every other case calls ``main(argv)`` and reads exit code, stdout and stderr the same way.
"""
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def demo():
    """One `fxq demo` run: (stdout, wall seconds including the process start)."""
    start = time.perf_counter()
    result = _fxq("demo", "--no-progress")
    assert result.returncode == 0, result.stderr
    return result.stdout, time.perf_counter() - start


def _run_main(args, workdir, monkeypatch, capsys):
    """``fxq ARGS`` in-process from ``workdir``: (exit code, stdout, stderr)."""
    from fxq.cli import main
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [str(workdir)] + sys.path)
    try:
        code = main(args)
    except SystemExit as exit:  # argparse: usage errors and --help
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_keeps_int8_accuracy_within_one_point_of_float(demo):
    out, wall = demo
    float_acc, int8_acc = map(float, re.search(r"float ([\d.]+)%, int8 ([\d.]+)%", out).groups())
    assert float_acc > 95 and abs(float_acc - int8_acc) <= 1.0
    assert float(re.search(r"SQNR int8 vs float: ([\d.]+) dB", out).group(1)) > 25
    assert wall < 60 and float(re.search(r"total time: ([\d.]+) s", out).group(1)) < 60


def test_demo_reports_latency_size_and_the_five_worst_layers(demo):
    out, _ = demo
    assert re.search(r"float [\d.]+ ms, int8 [\d.]+ ms \([\d.]+x\)", out)
    float_kb, int8_kb = map(float, re.search(r"float ([\d.]+) KB, int8 ([\d.]+) KB", out).groups())
    assert int8_kb < 0.5 * float_kb
    worst = out.split("five worst layers by SQNR:")[1].splitlines()[3:8]
    sqnrs = [float(line.split()[-1]) for line in worst]
    assert len(sqnrs) == 5 and sqnrs == sorted(sqnrs)
    assert {line.split()[2] for line in worst} <= {"ConvReLU2d", "LinearReLU", "Linear", "MaxPool2d", "torch.flatten"}


def test_readme_shows_the_table_the_demo_prints(demo):
    # README's "Debugging a quantized model" shows a real `fxq demo` run: the same rows (SQNR may vary by CPU)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = readme.split("five worst layers by SQNR:")[1].split("total time")[0].splitlines()[1:-1]
    printed = demo[0].split("five worst layers by SQNR:")[1].split("total time")[0].splitlines()[1:-1]
    assert [line.split()[:3] for line in shown] == [line.split()[:3] for line in printed]


def test_quantize_writes_a_model_that_matches_float(workdir):
    sys.path.insert(0, str(workdir))
    from mymodels import build
    quantized = torch.load(workdir / "model_int8.pt", weights_only=False)
    x = torch.randn(4, 3, 8, 8)
    reference = build()(x)
    noise = (quantized(x) - reference).pow(2).mean()
    assert 10 * torch.log10(reference.pow(2).mean() / noise) > 25


def test_quantize_without_calibration_data_is_a_usage_error(workdir, monkeypatch, capsys):
    code, _, err = _run_main(["quantize", "mymodels:build", "--input-shape", "2,3,8,8", "--out", "x.pt"], workdir,
                             monkeypatch, capsys)
    assert code == 2 and "--random-calib" in err


def test_quantize_random_calibration_warns(workdir, monkeypatch, capsys):
    code, out, err = _run_main(["quantize", "mymodels:build", "--input-shape", "2,3,8,8", "--random-calib",
                                "--out", "r.pt"], workdir, monkeypatch, capsys)
    assert code == 0, err
    assert "warning: calibrating on random data" in err and "wrote r.pt" in out
    assert isinstance(torch.load(workdir / "r.pt", weights_only=False), torch.fx.GraphModule)


BAD_ARGUMENTS = [
    (["quantize", "mymodels", "--input-shape", "1,3,8,8", "--random-calib", "--out", "o.pt"], 2,
     "'mymodels' is not MODULE:FACTORY"),
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
    (["dump", "mymodels.py:build", "--input-shape", "1,3,8,8"], 1, "cannot import module 'mymodels.py'"),
    (["compare", "mymodels:build", "model_int8.pt"], 2, "needs inputs"),
    (["compare", "mymodels:build", "calib.pt", "--input-shape", "2,3,8,8"], 1, "holds a Tensor, not a GraphModule"),
    (["compare", "mymodels:build", "mymodels.py", "--input-shape", "2,3,8,8"], 1,
     "cannot read quantized model file 'mymodels.py'"),
    (["compare", "mymodels", "model_int8.pt", "--input-shape", "2,3,8,8"], 2, "is not MODULE:FACTORY"),
    (["bogus"], 2, "invalid choice: 'bogus'"),
]
# the three kinds, each through a real process: missing FACTORY, a bad shape string, an unreadable file
SUBPROCESS_CASES = [BAD_ARGUMENTS[i] for i in (0, 4, 6)]


def _check_failure(code, stderr, expected_code, message):
    assert code == expected_code, stderr
    assert message in stderr and "Traceback" not in stderr
    if expected_code == 1:  # one clear line
        assert len([line for line in stderr.splitlines() if "error" in line]) == 1
    if expected_code == 2:  # usage errors point at the usage
        assert "usage: fxq" in stderr or "error:" in stderr


@pytest.mark.parametrize("args, code, message", SUBPROCESS_CASES)
def test_bad_arguments_in_a_process(workdir, args, code, message):
    result = _fxq(*args, cwd=workdir)
    _check_failure(result.returncode, result.stderr, code, message)
    assert result.stdout == ""


@pytest.mark.parametrize("args, code, message", BAD_ARGUMENTS)
def test_bad_arguments_give_one_line_and_an_exit_code(workdir, monkeypatch, capsys, args, code, message):
    returned, _, err = _run_main(args, workdir, monkeypatch, capsys)
    _check_failure(returned, err, code, message)


def test_debug_shows_the_traceback(workdir, monkeypatch, capsys):
    from fxq.cli_commands import CommandError
    with pytest.raises(CommandError, match="model file 'unreadable.pt' does not exist"):
        _run_main(["dump", "unreadable.pt", "--debug"], workdir, monkeypatch, capsys)


def test_dump_of_a_saved_model_in_a_process(workdir):
    result = _fxq("dump", "model_int8.pt", cwd=workdir)
    assert result.returncode == 0, result.stderr
    # the plain default's uint8 quantize (torch.quantize_per_tensor under the quantized lowering)
    assert re.search(r"quantize_per_tensor_?\d*\s+call_function\s+(torch|fxq\.nn\.plain\.ops)\.quantize_per_tensor",
                     result.stdout)
    # the saved model keeps each op's qconfig: the lowered conv shows the x86 default's short form
    conv_row = next(line for line in result.stdout.splitlines() if re.match(r"\d+\s+_0\s", line))
    assert "act=Histogram(rr), w=PerChannelMinMax(qint8, pc_symmetric)" in conv_row


def test_dump_of_a_saved_model_as_json(workdir, monkeypatch, capsys):
    code, out, err = _run_main(["dump", "model_int8.pt", "--format", "json"], workdir, monkeypatch, capsys)
    assert code == 0, err
    assert '"schema": "fxq.graph"' in out


@pytest.mark.parametrize("stage, expected", [("traced", r"\b_0\s+call_module"),
                                             ("prepared", r"activation_post_process_0\s+call_module"),
                                             ("converted", r"\bq?uint8\[2x8x6x6\]")])  # plain: uint8
def test_dump_each_stage(workdir, monkeypatch, capsys, stage, expected):
    code, out, err = _run_main(["dump", "mymodels:build", "--input-shape", "2,3,8,8", "--stage", stage], workdir,
                               monkeypatch, capsys)
    assert code == 0, err
    assert re.search(expected, out)


def test_dump_graphml_to_a_file(workdir, monkeypatch, capsys):
    code, out, _ = _run_main(["dump", "mymodels:build", "--input-shape", "2,3,8,8", "--format", "graphml", "--out",
                              "g.graphml"], workdir, monkeypatch, capsys)
    assert code == 0 and out == ""
    assert (workdir / "g.graphml").read_text().startswith("<graphml")


def test_compare_prints_every_layer_worst_first_in_a_process(workdir):
    result = _fxq("compare", "mymodels:build", "model_int8.pt", "--input-shape", "4,3,8,8", cwd=workdir)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    assert {row.split()[1] for row in rows} >= {"_0", "_3"}
    sqnrs = [float(row.split()[-1]) for row in rows]
    assert sqnrs == sorted(sqnrs) and min(sqnrs) > 20


def test_compare_limit_and_data_file(workdir, monkeypatch, capsys):
    code, out, err = _run_main(["compare", "mymodels:build", "model_int8.pt", "--data", "calib.pt", "--limit", "1"],
                               workdir, monkeypatch, capsys)
    assert code == 0, err
    assert len(out.splitlines()) == 3  # header, rule, the worst layer


def test_help_shows_examples(monkeypatch, capsys, tmp_path):
    code, out, _ = _run_main(["--help"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "fxq quantize mypkg.models:build" in out and "exit codes: 0 ok, 2 usage error" in out
