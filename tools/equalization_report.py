"""Print int8 SQNR (dB, vs float) with fxq equalization, torch.ao equalization and none, on skewed models:
connected layers, single layers, grouped/depthwise convs and flatten chains, mildly skewed inputs, and CLE.

    /work/venv/bin/python tools/equalization_report.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from equalization_cases import (case_models, cle_case, cle_quantized, fxq_quantized, mild_case_models,  # noqa
                                shape_case_models, sqnr, torch_ao_quantized)


def _torch_ao(tao, model, calibration, test) -> str:
    if tao is None:
        return "n/a"
    try:
        return f"{sqnr(model(test), torch_ao_quantized(tao, model, calibration)(test)):.1f}"
    except Exception as error:  # torch.ao fails on some graphs (F.linear -> F.linear); say so in the table
        return f"fails ({type(error).__name__})"


def main() -> None:
    try:
        import torch.ao.quantization as quantization
        import torch.ao.quantization.quantize_fx as quantize_fx
        tao = type("tao", (), {"quantization": quantization, "quantize_fx": quantize_fx})
    except ImportError:
        tao = None
    print(f"{'model':<40} {'none':>8} {'fxq eq':>8} {'torch.ao eq':>20} {'fxq gain':>9}")
    cases = {**case_models(), **shape_case_models(), **mild_case_models()}
    for name, (model, calibration, test) in cases.items():
        expected = model(test)
        none = sqnr(expected, fxq_quantized(model, calibration, equalize=False)(test))
        ours = sqnr(expected, fxq_quantized(model, calibration)(test))
        print(f"{name:<40} {none:>8.1f} {ours:>8.1f} {_torch_ao(tao, model, calibration, test):>20} "
              f"{ours - none:>+9.1f}")
    model, calibration, test = cle_case()
    expected = model(test)
    none = sqnr(expected, cle_quantized(model, calibration, cross_layer=False)(test))
    ours = sqnr(expected, cle_quantized(model, calibration, cross_layer=True)(test))
    print(f"{'CLE conv->relu->conv':<40} {none:>8.1f} {ours:>8.1f} {'-':>20} {ours - none:>+9.1f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
