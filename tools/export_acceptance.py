"""The torch.export acceptance table: tiny transformers models through plain fxq.prepare_fx / convert_fx.

For each model (random weights from a tiny config, offline): fxq's SQNR vs float, torchao pt2e's (prepare_pt2e /
convert_pt2e with X86InductorQuantizer's default config, run eagerly), both calibrated on the same batches and
measured on a held-out batch (fxq twice: the default x86 mapping, which quantizes the residual stream and the
norms' outputs as torch.ao does, and ``get_transformer_qconfig_mapping()``, which quantizes the linears only, as
pt2e's X86InductorQuantizer does); how many linear layers run an int8 kernel; fp32 vs int8 latency at batch 1 on one
thread. The CPU's ISA flags are printed beside it: the int8 kernels and their speed depend on them.

    python tools/export_acceptance.py                      # every model
    python tools/export_acceptance.py --models bert gpt2   # some
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fxq  # noqa: E402
from fxq.debug.timing import median_ms  # noqa: E402
from tools.hf_tiny import BUILDERS, build, first_output, int8_linears, linear_layers  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    noise = (reference.float() - other.float()).pow(2).mean()
    return float(10 * torch.log10(reference.float().pow(2).mean() / noise)) if noise > 0 else float("inf")


def cpu_flags() -> str:
    """The ISA flags of /proc/cpuinfo that matter for int8 kernels (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "(no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return f"{model}; " + " ".join(flag for flag in ISA_FLAGS if flag in flags)


def quantize_fxq(model, example, calibration, mapping=None):
    """Plain prepare_fx / convert_fx: the default x86 mapping unless another is given."""
    prepared = fxq.prepare_fx(model, mapping or fxq.get_default_qconfig_mapping("x86"), example)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return fxq.convert_fx(prepared)


def quantize_pt2e(model, example, calibration):
    """torchao's pt2e flow on the same model and calibration data; None when torchao is not installed."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        return None
    exported = torch.export.export(model, example, strict=False).module()
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return convert_pt2e(prepared)


def measure(name: str) -> dict:
    model, example, calibration, held_out = build(name)
    start = time.perf_counter()
    quantized = quantize_fxq(model, example, calibration)
    seconds = time.perf_counter() - start
    pt2e = quantize_pt2e(model, example, calibration)
    linears_only = quantize_fxq(model, example, calibration, fxq.get_transformer_qconfig_mapping())
    with torch.no_grad():
        reference = first_output(model(*held_out))
        row = {"model": name, "fxq": sqnr(reference, first_output(quantized(*held_out))),
               "fxq_tf": sqnr(reference, first_output(linears_only(*held_out))),
               "pt2e": sqnr(reference, first_output(pt2e(*held_out))) if pt2e is not None else float("nan"),
               "int8": int8_linears(quantized), "linears": linear_layers(model), "seconds": seconds}
    one = tuple(value[:1] for value in held_out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row["fp32_ms"] = median_ms(lambda: model(*one))
        row["int8_ms"] = median_ms(lambda: quantized(*one))
    finally:
        torch.set_num_threads(threads)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(BUILDERS), choices=list(BUILDERS))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print("SQNR in dB vs float on a held-out batch; 'fxq' = default x86 mapping (no arguments), 'fxq tf' = "
          "get_transformer_qconfig_mapping(); int8 linears and ms are for 'fxq'")
    print(f"torch {torch.__version__}; CPU: {cpu_flags()}; engine {torch.backends.quantized.engine}")
    print(f"{'model':<11} {'fxq dB':>7} {'fxq tf dB':>10} {'pt2e dB':>8} {'int8 linears':>13} {'fp32 ms':>8} "
          f"{'int8 ms':>8} {'prepare+convert s':>18}")
    for name in args.models:
        r = measure(name)
        print(f"{r['model']:<11} {r['fxq']:>7.1f} {r['fxq_tf']:>10.1f} {r['pt2e']:>8.1f} "
              f"{r['int8']:>6} / {r['linears']:<4} {r['fp32_ms']:>8.2f} {r['int8_ms']:>8.2f} {r['seconds']:>18.1f}",
              flush=True)


if __name__ == "__main__":
    main()
