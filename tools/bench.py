"""Benchmark fxq against torch.ao and torchao's pt2e side by side, in one process, on the models of tools/zoo.py.

Per model and implementation it measures: trace time, prepare_fx time, the calibration forward of the observed
model relative to the float model (medians of 3 alternating rounds) and what observing adds (that ratio - 1),
convert_fx time and the share of it spent in the observers' calculate_qparams (prepare and convert: medians of
--repeats runs), SQNR of the int8 output against float, torch.save(state_dict) bytes int8/float, and the int8 and
fp32 latency (medians, the models taking turns; see interleaved_latencies in tools/bench_measure.py) at every
engine x batch x thread count asked for. Every figure is printed side by side with its ratio to torch.ao
(tools/bench_report.py). If an implementation is missing or fails, its column reads "n/a" and the reason is
printed. The measurements live in tools/bench_measure.py.

The columns (--impls): fxq-plain and fxq-quantized (fxq's two lowerings, convert_custom_config={"lowering": ...};
fxq-plain is n/a until fxq has the plain lowering), fxq.compile (n/a until fxq has it), torch.ao (FX), pt2e
(torch.export -> prepare_pt2e(X86InductorQuantizer) -> convert_pt2e, eager) and pt2e+compile (that model under
torch.compile with inductor freezing; its first call is reported as its compile time); pt2e columns are n/a
without torchao. "fxq" (the default lowering, whichever it is) and "fxq+cost_model" can be asked for too.
After each model's full table comes a latency summary at the first engine, smallest batch and first thread
count: int8 latency, int8/fp32, and every column over each peer (torch.ao, pt2e, pt2e+compile); then issue 17's
goals as PASS/FAIL lines. The CPU's ISA flags (avx2, avx512f, avx512_vnni, avx_vnni, amx_int8) head every table.

A converted model's packed weights carry the engine they were packed for, so each engine gets its own convert_fx
under torch.backends.quantized.engine = engine (from the same calibrated model, prepared with the x86 mapping).

Usage:
    python tools/bench.py --models resnet18,narrow_chain               # x86, batch 1, 1 thread, every column
    python tools/bench.py --models bert,resnet18 --impls fxq-quantized,torch.ao,pt2e,pt2e+compile
    python tools/bench.py --models all --engines x86,fbgemm,onednn --batches 1,8 --thread-counts 1,2 --json out.json
    python tools/bench.py --models narrow_chain --cost-model            # adds fxq + {"cost_model": True}
    python tools/bench.py --scaling --sizes 100,200,500,1000,2000 --json scaling.json
    python tools/bench.py --models resnet18 --impls torch.ao           # only one side

Larger batches are capped per model by tools/zoo.py BATCH_LIMITS (BERT at seq 128: 4). --scaling times prepare_fx
on narrow_chain(n) = n x (Linear(32, 32) + ReLU) and fits the growth exponent k in time ~ n^k by least squares on
log-log (k ~ 1 is linear); each size is the median of --repeats runs, the implementations taking turns.
"""
import argparse
import dataclasses
import gc
import json
import math
import statistics
import sys
import traceback
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.bench_measure import (Compiled, Implementation, Settings, cpu_isa_flags,  # noqa: E402
                                 interleaved_latencies, latency_key, load_implementation, measure,
                                 measure_compiled, quantized_engine, timed)
from tools.bench_report import print_goals, print_models, print_scaling, ratios  # noqa: E402
from tools.zoo import BATCH_LIMITS, MODELS, narrow_chain  # noqa: E402

IMPLEMENTATIONS = ("fxq-plain", "fxq-quantized", "fxq.compile", "torch.ao", "pt2e", "pt2e+compile", "fxq",
                   "fxq+cost_model")
DEFAULT_IMPLEMENTATIONS = "fxq-plain,fxq-quantized,fxq.compile,torch.ao,pt2e,pt2e+compile"


def warm_up(implementations: dict) -> None:
    """One untimed trace/prepare/convert per implementation, so lazy imports (torch.fx's first trace imports
    seconds' worth of modules) and caches do not bill the first model."""
    for implementation, _ in implementations.values():
        if isinstance(implementation, Implementation):
            model, example = narrow_chain(2)
            try:
                implementation.trace(model, example)
                implementation.convert(implementation.prepare(model, implementation.mapping(), example))
            except Exception:  # the measured run will report the failure with its traceback
                pass


def try_measure(implementation: Optional[Implementation], error: Optional[str], factory,
                settings: Settings) -> Tuple[dict, dict]:
    """measure(), or ({"error": ...}, {}) with the error printed, so one failing side never stops the run."""
    if implementation is None:
        return {"error": error}, {}
    try:
        return measure(implementation, factory, settings)
    except Exception as failure:  # a broken implementation is a result to report, not a crash
        print(f"[{implementation.name}] failed: {type(failure).__name__}: {failure}", file=sys.stderr)
        traceback.print_exc(limit=4, file=sys.stderr)
        return {"error": f"{type(failure).__name__}: {failure}"}, {}


def add_int8_over_fp32(result: dict, fp32: Dict[str, float]) -> None:
    """int8 latency / fp32 latency at the same batch and thread count, next to each int8 latency."""
    for key in [key for key in result if key.startswith("int8_s/")]:
        _, engine, batch, threads = key.split("/")
        result[key.replace("int8_s/", "int8_over_fp32/")] = result[key] / fp32[f"fp32_s/{batch}/{threads}"]


def bench_model(name: str, implementations: dict, settings: Settings) -> dict:
    """Every column on one model, plus the float model's latencies and the ratios to torch.ao.

    Compiled columns go last: they compile a converted model another column made (or measure that column
    unseen when it was not asked for).
    """
    factory = MODELS[name]
    settings = dataclasses.replace(settings, batch_limit=BATCH_LIMITS.get(name))
    model, example = factory()
    result: dict = {}
    contenders: dict = {"fp32": (model, None)}
    converted_by_column: Dict[str, dict] = {}
    ordered = sorted(implementations.items(), key=lambda item: isinstance(item[1][0], Compiled))
    for impl_name, (column, error) in ordered:
        print(f"{name}: {impl_name} ...", file=sys.stderr)
        if isinstance(column, Compiled):
            result[impl_name], compiled = try_compile(column, error, converted_by_column, factory, settings)
            if compiled is not None:
                contenders[(impl_name, settings.engines[0])] = (compiled, settings.engines[0])
            continue
        result[impl_name], converted = try_measure(column, error, factory, settings)
        converted_by_column[impl_name] = converted
        contenders.update({(impl_name, engine): (quantized, engine) for engine, quantized in converted.items()})
    print(f"{name}: latencies, {len(contenders)} models taking turns ...", file=sys.stderr)
    timings = interleaved_latencies(contenders, example, settings)
    result["fp32"] = timings.pop("fp32")
    for (impl_name, _), latencies in timings.items():
        result[impl_name].update(latencies)
    for impl_name in implementations:
        if "error" not in result[impl_name]:
            add_int8_over_fp32(result[impl_name], result["fp32"])
    result["ratios"] = ratios({impl: result[impl] for impl in implementations})
    batch, threads = settings.batch_sizes()[0], settings.thread_counts[0]
    result["summary"] = {"int8": latency_key("int8_s", settings.engines[0], batch, threads),
                         "fp32": latency_key("fp32_s", None, batch, threads)}
    if any(isinstance(column, Compiled) for column, _ in implementations.values()):
        torch._dynamo.reset()  # the compiled models are timed; let their code and frozen weights go
    return result


def try_compile(column: Optional[Compiled], error: Optional[str], converted_by_column: Dict[str, dict], factory,
                settings: Settings) -> Tuple[dict, Optional[object]]:
    """measure_compiled() on the converted model of the first of the column's bases that has one, or
    ({"error": ...}, None) with the reason printed."""
    if column is None:
        return {"error": error}, None
    base = next((name for name in column.bases if converted_by_column.get(name)), None)
    base = base or convert_unseen(column.bases, converted_by_column, factory, settings)
    if base is None:
        return {"error": f"none of {', '.join(column.bases)} converted this model"}, None
    model, example = factory()
    engine = settings.engines[0]
    try:
        with quantized_engine(engine):
            measured, compiled = measure_compiled(column, model, converted_by_column[base][engine], example, settings)
    except Exception as failure:  # a compiler failure is a result to report, not a crash
        print(f"[{column.name}] failed: {type(failure).__name__}: {failure}", file=sys.stderr)
        traceback.print_exc(limit=4, file=sys.stderr)
        first_line = (str(failure).splitlines() or [""])[0]
        return {"error": f"{type(failure).__name__}: {first_line}"}, None
    print(f"[{column.name}] compiled {base}'s model: first call {measured['compile_s']:.1f} s", file=sys.stderr)
    return measured, compiled


def convert_unseen(bases: Tuple[str, ...], converted_by_column: Dict[str, dict], factory,
                   settings: Settings) -> Optional[str]:
    """Measure the first of `bases` that converts the model, for a compiled column whose base was not asked for;
    its converted models go into converted_by_column, its figures nowhere."""
    for name in bases:
        implementation, _ = load_implementation(name)
        if isinstance(implementation, Implementation):
            converted_by_column[name] = try_measure(implementation, None, factory, settings)[1]
            if converted_by_column[name]:
                return name
    return None


def fit_exponent(sizes: List[int], seconds: List[float]) -> float:
    """Least-squares slope of log(seconds) against log(size): the k in time ~ size^k."""
    xs, ys = [math.log(n) for n in sizes], [math.log(t) for t in seconds]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def scaling(implementations: dict, sizes: List[int], repeats: int) -> dict:
    """Median prepare_fx seconds on narrow_chain(n) per size and implementation, plus the fitted exponent.

    The implementations take turns within each repeat, so a burst of load on a shared machine hits both.
    """
    times: Dict[str, List[Optional[float]]] = {name: [] for name in implementations}
    failed: set = set()
    for size in sizes:
        samples: Dict[str, List[float]] = {name: [] for name in implementations}
        for _ in range(repeats):
            for impl_name, (implementation, error) in implementations.items():
                if impl_name in failed:
                    continue
                print(f"narrow_chain({size}): {impl_name} ...", file=sys.stderr)
                outcome = try_prepare(implementation, error, size)
                if outcome is None:
                    failed.add(impl_name)  # it failed once; larger chains will not do better
                else:
                    samples[impl_name].append(outcome)
        for impl_name in implementations:
            usable = impl_name not in failed and samples[impl_name]
            times[impl_name].append(statistics.median(samples[impl_name]) if usable else None)
    result: dict = {"sizes": sizes, "repeats": repeats}
    for impl_name, (_, error) in implementations.items():
        measured = [(n, t) for n, t in zip(sizes, times[impl_name]) if t is not None]
        exponent = fit_exponent(*zip(*measured)) if len(measured) >= 2 else None
        result[impl_name] = {"prepare_s": times[impl_name], "exponent": exponent, "error": error}
    return result


def try_prepare(implementation: Optional[Implementation], error: Optional[str], size: int) -> Optional[float]:
    if implementation is None:
        return None
    model, example = narrow_chain(size)
    gc.collect()  # the previous run's garbage is not this run's to collect
    try:
        return timed(implementation.prepare, model, implementation.mapping(), example)[1]
    except Exception as failure:  # report and go on with the other implementation
        print(f"[{implementation.name}] prepare_fx failed on narrow_chain({size}): {failure}", file=sys.stderr)
        return None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all",
                        help=f"comma-separated, or 'all'; known: {', '.join(MODELS)}")
    parser.add_argument("--impls", default=DEFAULT_IMPLEMENTATIONS,
                        help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}")
    parser.add_argument("--cost-model", action="store_true", help="add fxq with {'cost_model': True} as a column")
    parser.add_argument("--engines", default="x86",
                        help="quantized engines to convert for and time, e.g. x86,fbgemm,onednn")
    parser.add_argument("--batches", default="1", help="latency batch sizes, e.g. 1,8 (capped per model, see zoo.py)")
    parser.add_argument("--thread-counts", default="1", help="latency thread counts, e.g. 1,2; the first runs the rest")
    parser.add_argument("--runs", type=int, default=10, help="timed latency runs at least; the median is reported")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="latency rounds continue until this long has passed (fast models get more runs)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed latency runs first")
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of the pt2e+compile column ('eager' checks the plumbing fast)")
    parser.add_argument("--scaling", action="store_true", help="time prepare_fx on narrow chains instead")
    parser.add_argument("--sizes", default="100,200,500,1000,2000", help="chain lengths for --scaling")
    parser.add_argument("--repeats", type=int, default=3,
                        help="prepare and convert runs per model (per size with --scaling); medians are reported")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.models = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)} or 'all'")
    args.impls = args.impls.split(",") + (["fxq+cost_model"] if args.cost_model else [])
    args.impls = list(dict.fromkeys(args.impls))
    if not set(args.impls) <= set(IMPLEMENTATIONS):
        parser.error(f"--impls takes a subset of {list(IMPLEMENTATIONS)}, got {args.impls}")
    args.engines = args.engines.split(",")
    unsupported = set(args.engines) - set(torch.backends.quantized.supported_engines)
    if unsupported:
        supported = torch.backends.quantized.supported_engines
        parser.error(f"--engines: {sorted(unsupported)} not among this torch's quantized engines {supported}")
    args.batches, args.thread_counts = _integers(parser, args.batches), _integers(parser, args.thread_counts)
    return args


def _integers(parser: argparse.ArgumentParser, text: str) -> List[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"expected comma-separated positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace, settings: Settings) -> dict:
    """The models' tables, or the scaling table, printed; their numbers returned."""
    implementations = {name: load_implementation(name) for name in args.impls}
    warm_up(implementations)
    if args.scaling:
        result = scaling(implementations, [int(size) for size in args.sizes.split(",")], args.repeats)
        print_scaling(result, args.impls, cpu_isa_flags())
    else:
        result = {name: bench_model(name, implementations, settings) for name in args.models}
        print_models(result, args.impls, cpu_isa_flags())
        print_goals(result, cpu_isa_flags())
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the benchmark the arguments ask for, print its tables, and return (and optionally save) the results."""
    args = parse_args(argv)
    settings = Settings(args.engines, args.batches, args.thread_counts, args.runs, args.warmup,
                        args.calibration_batches, args.repeats, args.min_seconds,
                        compile_backend=args.compile_backend)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.thread_counts[0])  # prepare, calibration and convert run at the first count
    try:
        with quantized_engine("x86"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao and quantized tensors print deprecation notices per call
            result = run(args, settings)
    finally:
        torch.set_num_threads(previous_threads)
    if args.json:
        header = {"torch": torch.__version__, "implementations": args.impls, "batch_limits": BATCH_LIMITS,
                  "cpu_isa": cpu_isa_flags(), **vars(settings)}
        Path(args.json).write_text(json.dumps({"settings": header, "results": result}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
