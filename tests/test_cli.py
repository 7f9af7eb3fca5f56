"""The `fxq` command, run as a user runs it."""
import re
import subprocess
import sys


def _fxq(*args):
    return subprocess.run([sys.executable, "-m", "fxq.cli", *args], capture_output=True, text=True, timeout=300)


def test_demo_quantizes_and_reports_sqnr_and_latency():
    result = _fxq("demo")
    assert result.returncode == 0, result.stderr
    sqnr = float(re.search(r"SQNR int8 vs float: ([\d.]+) dB", result.stdout).group(1))
    assert sqnr > 25
    assert re.search(r"float [\d.]+ ms, int8 [\d.]+ ms", result.stdout)


def test_unknown_command_is_a_usage_error():
    result = _fxq("bogus")
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr
