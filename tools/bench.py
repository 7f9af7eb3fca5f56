"""Benchmark fxq against torch.ao side by side, in one process, on the models of tools/zoo.py.

Per model and implementation it measures: prepare_fx time, convert_fx time, the calibration
forward of the observed model relative to the float model, int8 latency at batch 1 (median of
--runs after --warmup), SQNR of the int8 output against float; fp32 latency once per model; and
the ratios fxq / torch.ao. If fxq is missing or fails, its column reads "n/a" and the error is
printed, so the tool works while fxq's core is in progress.

Usage:
    python tools/bench.py --models resnet50,bert --threads 1
    python tools/bench.py --models all --runs 20 --json bench.json
    python tools/bench.py --scaling --sizes 100,200,500,1000,2000 --json scaling.json
    python tools/bench.py --models resnet18 --impls torch.ao      # only one side

--scaling times prepare_fx on narrow_chain(n) = n x (Linear(32, 32) + ReLU) and fits the growth
exponent k in time ~ n^k by least squares on log-log (k ~ 1 is linear; torch.ao's prepare is
expected to be worse).
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from tabulate import tabulate

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.zoo import MODELS, narrow_chain  # noqa: E402

IMPLEMENTATIONS = ("torch.ao", "fxq")


@dataclass
class Implementation:
    """One side of the comparison: prepare_fx, convert_fx and a default x86 QConfigMapping factory."""
    name: str
    prepare: Callable
    convert: Callable
    mapping: Callable


def load_implementation(name: str) -> Tuple[Optional[Implementation], Optional[str]]:
    """(implementation, None), or (None, why it is unavailable) — the tool then prints n/a."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "torch.ao":
                from torch.ao.quantization import get_default_qconfig_mapping
                from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
            else:
                from fxq import convert_fx, get_default_qconfig_mapping, prepare_fx
    except Exception as failure:  # fxq's core may be half-written; report, do not crash
        print(f"[{name}] unavailable: {type(failure).__name__}: {failure}", file=sys.stderr)
        return None, f"{type(failure).__name__}: {failure}"
    return Implementation(name, prepare_fx, convert_fx, lambda: get_default_qconfig_mapping("x86")), None


def timed(function: Callable, *args):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def median_latency(model: torch.nn.Module, inputs: tuple, runs: int, warmup: int) -> float:
    """Median wall time of model(*inputs) in seconds, after `warmup` untimed calls."""
    with torch.no_grad():
        for _ in range(warmup):
            model(*inputs)
        return statistics.median(timed(model, *inputs)[1] for _ in range(runs))


def calibration_batches(example: tuple, count: int) -> List[tuple]:
    """The example plus random batches of the same shapes (seeded, identical for every implementation)."""
    generator = torch.Generator().manual_seed(1)
    extra = [tuple(torch.randn(t.shape, generator=generator) for t in example) for _ in range(count - 1)]
    return [example] + extra


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of `other` against `reference`, in dB."""
    other = other.dequantize() if other.is_quantized else other
    noise = (reference - other).pow(2).mean()
    return math.inf if noise == 0 else float(10 * torch.log10(reference.pow(2).mean() / noise))


def forward_all(model: torch.nn.Module, batches: List[tuple]) -> float:
    """Seconds for one forward over every batch."""
    with torch.no_grad():
        return timed(lambda: [model(*batch) for batch in batches])[1]


def warm_up(implementations: dict) -> None:
    """One untimed prepare/convert per implementation, so lazy imports and caches do not bill the first model."""
    for implementation, _ in implementations.values():
        if implementation is not None:
            model, example = narrow_chain(2)
            try:
                implementation.convert(implementation.prepare(model, implementation.mapping(), example))
            except Exception:  # the measured run will report the failure with its traceback
                pass


def measure(implementation: Implementation, factory: Callable, args) -> Dict[str, float]:
    """prepare / calibrate / convert one fresh model and time every step."""
    model, example = factory()
    batches = calibration_batches(example, args.calibration_batches)
    forward_all(model, batches)  # warm the kernels' caches, so both timed forwards start equal
    float_forward = forward_all(model, batches)
    prepared, prepare_s = timed(implementation.prepare, model, implementation.mapping(), example)
    observed_forward = forward_all(prepared, batches)
    converted, convert_s = timed(implementation.convert, prepared)
    with torch.no_grad():
        quality = sqnr(model(*example), converted(*example))
    return {"prepare_s": prepare_s, "convert_s": convert_s,
            "calibration_observed_over_float": observed_forward / float_forward,
            "int8_latency_s": median_latency(converted, example, args.runs, args.warmup),
            "sqnr_db": quality}


def try_measure(implementation: Optional[Implementation], error: Optional[str], factory, args) -> dict:
    """measure(), or {"error": ...} with the error printed, so one failing side never stops the run."""
    if implementation is None:
        return {"error": error}
    try:
        return measure(implementation, factory, args)
    except Exception as failure:  # a broken implementation is a result to report, not a crash
        print(f"[{implementation.name}] failed: {type(failure).__name__}: {failure}", file=sys.stderr)
        traceback.print_exc(limit=4, file=sys.stderr)
        return {"error": f"{type(failure).__name__}: {failure}"}


def ratios(results: Dict[str, dict]) -> Dict[str, Optional[float]]:
    """fxq / torch.ao per metric (SQNR as the difference in dB), None where a side is missing."""
    ours, theirs = results.get("fxq", {}), results.get("torch.ao", {})
    ratio = {}
    for metric in ("prepare_s", "convert_s", "calibration_observed_over_float", "int8_latency_s"):
        ok = metric in ours and metric in theirs and theirs[metric] > 0
        ratio[metric] = ours[metric] / theirs[metric] if ok else None
    ok = "sqnr_db" in ours and "sqnr_db" in theirs
    ratio["sqnr_db_difference"] = ours["sqnr_db"] - theirs["sqnr_db"] if ok else None
    return ratio


def bench_model(name: str, implementations: dict, args) -> dict:
    factory = MODELS[name]
    model, example = factory()
    result = {"fp32_latency_s": median_latency(model, example, args.runs, args.warmup)}
    for impl_name, (implementation, error) in implementations.items():
        print(f"{name}: {impl_name} ...", file=sys.stderr)
        result[impl_name] = try_measure(implementation, error, factory, args)
    result["fxq/torch.ao"] = ratios(result)
    return result


METRIC_LABELS = [("prepare_s", "prepare_fx (s)"), ("convert_s", "convert_fx (s)"),
                 ("calibration_observed_over_float", "calibration fwd observed/float"),
                 ("int8_latency_s", "int8 latency b=1 (ms)"), ("sqnr_db", "SQNR vs float (dB)")]


def cell(value: Optional[float], metric: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.2f}" if metric == "int8_latency_s" else f"{value:.3g}"


def model_rows(name: str, result: dict) -> List[list]:
    rows = [[name, "fp32 latency b=1 (ms)", cell(result["fp32_latency_s"] * 1000), "", ""]]
    for metric, label in METRIC_LABELS:
        ratio_key = "sqnr_db_difference" if metric == "sqnr_db" else metric
        row = [name, label] + [cell(result.get(impl, {}).get(metric), metric) for impl in ("torch.ao", "fxq")]
        rows.append(row + [cell(result["fxq/torch.ao"][ratio_key])])
    return rows


def print_models(results: Dict[str, dict]) -> None:
    rows = [row for name, result in results.items() for row in model_rows(name, result)]
    print(tabulate(rows, headers=["model", "metric", "torch.ao", "fxq", "fxq/torch.ao (SQNR: dB diff)"]))
    for name, result in results.items():
        for impl in ("torch.ao", "fxq"):
            if "error" in result.get(impl, {}):
                print(f"{name}: {impl} n/a: {result[impl]['error']}")


def fit_exponent(sizes: List[int], seconds: List[float]) -> float:
    """Least-squares slope of log(seconds) against log(size): the k in time ~ size^k."""
    xs, ys = [math.log(n) for n in sizes], [math.log(t) for t in seconds]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def scaling(implementations: dict, sizes: List[int]) -> dict:
    """prepare_fx seconds on narrow_chain(n) for every size and implementation, plus the fitted exponent."""
    result = {"sizes": sizes}
    for impl_name, (implementation, error) in implementations.items():
        times: List[Optional[float]] = []
        for size in sizes:
            print(f"narrow_chain({size}): {impl_name} ...", file=sys.stderr)
            outcome = try_prepare(implementation, error, size)
            times.append(outcome)
            if outcome is None:
                break  # it failed once; larger chains will not do better
        times += [None] * (len(sizes) - len(times))
        measured = [(n, t) for n, t in zip(sizes, times) if t is not None]
        exponent = fit_exponent(*zip(*measured)) if len(measured) >= 2 else None
        result[impl_name] = {"prepare_s": times, "exponent": exponent, "error": error}
    return result


def try_prepare(implementation: Optional[Implementation], error: Optional[str], size: int) -> Optional[float]:
    if implementation is None:
        return None
    model, example = narrow_chain(size)
    try:
        return timed(implementation.prepare, model, implementation.mapping(), example)[1]
    except Exception as failure:  # report and go on with the other implementation
        print(f"[{implementation.name}] prepare_fx failed on narrow_chain({size}): {failure}", file=sys.stderr)
        return None


def print_scaling(result: dict) -> None:
    ours, theirs = result.get("fxq", {}), result.get("torch.ao", {})
    rows = []
    for index, size in enumerate(result["sizes"]):
        fxq_s = ours.get("prepare_s", [None] * (index + 1))[index]
        torch_ao_s = theirs.get("prepare_s", [None] * (index + 1))[index]
        ratio = fxq_s / torch_ao_s if fxq_s and torch_ao_s else None
        rows.append([size, cell(torch_ao_s), cell(fxq_s), cell(ratio)])
    rows.append(["exponent k", cell(theirs.get("exponent")), cell(ours.get("exponent")), ""])
    print(tabulate(rows, headers=["blocks", "torch.ao prepare (s)", "fxq prepare (s)", "fxq/torch.ao"]))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,bert",
                        help=f"comma-separated, or 'all'; known: {', '.join(MODELS)}")
    parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS), help="comma-separated subset of torch.ao,fxq")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--runs", type=int, default=10, help="timed latency runs; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed latency runs first")
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--scaling", action="store_true", help="time prepare_fx on narrow chains instead")
    parser.add_argument("--sizes", default="100,200,500,1000,2000", help="chain lengths for --scaling")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.models = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)} or 'all'")
    args.impls = args.impls.split(",")
    if not set(args.impls) <= set(IMPLEMENTATIONS):
        parser.error(f"--impls takes a subset of {list(IMPLEMENTATIONS)}, got {args.impls}")
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "x86"
    warnings.filterwarnings("ignore")  # torch.ao and quantized tensors print deprecation notices per call
    implementations = {name: load_implementation(name) for name in args.impls}
    warm_up(implementations)
    settings = {"threads": args.threads, "runs": args.runs, "warmup": args.warmup, "torch": torch.__version__}
    if args.scaling:
        result = scaling(implementations, [int(size) for size in args.sizes.split(",")])
        print_scaling(result)
    else:
        result = {name: bench_model(name, implementations, args) for name in args.models}
        print_models(result)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, "results": result}, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
