"""The measurements behind tools/bench.py: one implementation (a column of the tables) on one model.

The columns: fxq with its default lowering ("fxq"), with the plain-tensor lowering ("fxq-plain", once fxq has one)
and with the quantized-tensor lowering ("fxq-quantized"), fxq with its cost model, torch.ao FX, and torchao's pt2e
flow (torch.export -> prepare_pt2e with X86InductorQuantizer -> convert_pt2e) run eagerly; and two compiled
columns, "fxq.compile" (when fxq has it) and "pt2e+compile" (torch.compile with inductor freezing), which compile
another column's converted model and report the first call's seconds as their compile time.

measure() returns a flat dict of positive numbers, one key per metric (METRICS), and the converted model per
engine. interleaved_latencies() then times every converted model and the float one taking turns call by call, so
a burst of load on a shared machine lands on all of them alike; its keys are latency_key's (one per engine /
batch / thread count), so bench_report.py can print any subset side by side.

    >>> from tools.zoo import narrow_chain
    >>> implementation, error = load_implementation("fxq")
    >>> settings = Settings(engines=["x86"], batches=[1], thread_counts=[1], runs=2, warmup=1, min_seconds=0)
    >>> model, example = narrow_chain(3)
    >>> result, converted = measure(implementation, lambda: (model, example), settings)
    >>> timings = interleaved_latencies({"fp32": (model, None), "int8": (converted["x86"], "x86")}, example, settings)
    >>> result["prepare_s"] > 0 and timings["int8"][latency_key("int8_s", "x86", 1, 1)] > 0
    True
    >>> [flag for flag, present in cpu_isa_flags("flags\t\t: fpu avx2 avx512f").items() if present]
    ['avx2', 'avx512f']
"""
import contextlib
import copy
import functools
import importlib
import io
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple, Union

import torch

_MAX_ROUNDS = 500
_CALIBRATION_ROUNDS = 3
# Every key measure() fills (the latencies come from interleaved_latencies).
METRICS = ("trace_s", "prepare_s", "calibration_observed_over_float", "calibration_overhead", "convert_s",
           "convert_observers_s", "convert_observers_share", "sqnr_db", "size_ratio")


@dataclass
class Settings:
    """What to measure: the quantized engines, batch sizes and thread counts of the latency matrix."""
    engines: List[str] = field(default_factory=lambda: ["x86"])
    batches: List[int] = field(default_factory=lambda: [1])
    thread_counts: List[int] = field(default_factory=lambda: [1])
    runs: int = 10
    warmup: int = 3
    calibration_batches: int = 2
    repeats: int = 3  # prepare and convert runs per implementation; medians reported
    min_seconds: float = 2.0  # latency rounds go on until this much time has passed (at most _MAX_ROUNDS)
    batch_limit: Optional[int] = None  # a model may cap the larger batch (BERT at seq 128)
    compile_backend: str = "inductor"  # what "pt2e+compile" hands torch.compile; tests use "eager" for speed

    def batch_sizes(self) -> List[int]:
        limit = self.batch_limit or max(self.batches)
        return sorted({min(batch, limit) for batch in self.batches})


@dataclass
class Implementation:
    """One column of the comparison: how it traces, prepares, converts, and its observer base classes.

    trace(model, example) and prepare(model, mapping, example): the example feeds torch.export; FX ignores it.
    """
    name: str
    trace: Callable[[torch.nn.Module, tuple], torch.nn.Module]
    prepare: Callable
    convert: Callable
    mapping: Callable
    observer_bases: Tuple[type, ...]


@dataclass
class Compiled:
    """A column that compiles the converted model of another column: the first of `bases` that was measured.

    compile(converted, settings) returns something callable like the model; its first call is the compile time.
    """
    name: str
    bases: Tuple[str, ...]
    compile: Callable[[torch.nn.Module, Settings], Callable]


Column = Union[Implementation, Compiled]
NO_PLAIN_LOWERING = "fxq has no plain lowering"
# The fxq columns that run eagerly, the default lowering first: issue 17 makes "plain" the default once it lands.
FXQ_EAGER = ("fxq-plain", "fxq", "fxq-quantized")


def has_plain_lowering() -> bool:
    """Whether the installed fxq knows convert_custom_config={"lowering": "plain"}.

    fxq.nn.plain importing is not enough: the modules landed before convert_fx learned the key, which an fxq
    without it refuses.
    """
    try:
        fxq = importlib.import_module("fxq")
        importlib.import_module("fxq.nn.plain")
        fxq.ConvertCustomConfig.coerce({"lowering": "plain"})
    except (ImportError, ValueError, KeyError, TypeError):
        return False
    return True


def load_implementation(name: str) -> Tuple[Optional[Column], Optional[str]]:
    """(column, None), or (None, why it is unavailable) — the tool then prints n/a for it."""
    loaders = {"torch.ao": _torch_ao, "fxq": lambda: _fxq(name, lowering=None, cost_model=False),
               "fxq+cost_model": lambda: _fxq(name, lowering=None, cost_model=True),
               "fxq-plain": lambda: _fxq(name, lowering="plain", cost_model=False),
               "fxq-quantized": lambda: _fxq(name, lowering="quantized", cost_model=False),
               "pt2e": _pt2e, "pt2e+compile": _pt2e_compiled, "fxq.compile": _fxq_compiled}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loaders[name](), None
    except Exception as failure:  # torch.ao may be gone, torchao not installed, fxq mid-edit: report, do not crash
        reason = str(failure) if isinstance(failure, Unavailable) else f"{type(failure).__name__}: {failure}"
        print(f"[{name}] unavailable: {reason}", file=sys.stderr)
        return None, reason


class Unavailable(Exception):
    """A column this installation cannot offer, with the reason printed in its place."""


def _torch_ao() -> Implementation:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase
    from torch.ao.quantization.fx.tracer import QuantizationTracer
    from torch.ao.quantization.observer import ObserverBase
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    def trace(model, example):  # what prepare_fx does first, with no skipped modules
        return torch.fx.GraphModule(model, QuantizationTracer([], []).trace(model))

    return Implementation("torch.ao", trace, prepare_fx, convert_fx, lambda: get_default_qconfig_mapping("x86"),
                          (ObserverBase, FakeQuantizeBase))


def _fxq(name: str, lowering: Optional[str], cost_model: bool) -> Implementation:
    """fxq, converted with {"lowering": lowering} when fxq knows the key; "quantized" is all an older fxq has."""
    import fxq
    from fxq.graph.leaves import trace_for_prepare
    from fxq.observers import ObserverBase

    plain = has_plain_lowering()
    if lowering == "plain" and not plain:
        raise Unavailable(NO_PLAIN_LOWERING)
    config = {"cost_model": True} if cost_model else None
    prepare = functools.partial(fxq.prepare_fx, prepare_custom_config=config)
    convert = fxq.convert_fx
    if lowering is not None and plain:  # without the plain lowering the key may be refused; the default is quantized
        convert = functools.partial(fxq.convert_fx, convert_custom_config={"lowering": lowering})
    traced = functools.partial(trace_for_prepare, config=fxq.PrepareCustomConfig.coerce(config))
    return Implementation(name, lambda model, example: traced(model), prepare, convert,
                          lambda: fxq.get_default_qconfig_mapping("x86"), (ObserverBase,))


def _pt2e() -> Implementation:
    try:
        from torchao.quantization.pt2e import ObserverBase
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    except ImportError as missing:
        raise Unavailable(f"torchao is not installed ({missing})") from missing

    def trace(model, example):
        # strict: the non-strict export gives a module called twice (ResNet's shared ReLU) one source partition
        # with two outputs, which X86InductorQuantizer refuses
        return torch.export.export(model, example, strict=True).module()

    def quantizer():
        return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())

    def prepare(model, quantizer, example):
        return prepare_pt2e(trace(model, example), quantizer)

    return Implementation("pt2e", trace, prepare, convert_pt2e, quantizer, (ObserverBase,))


def _pt2e_compiled() -> Compiled:
    _pt2e()  # n/a exactly when pt2e is
    return Compiled("pt2e+compile", ("pt2e",), compile_with_freezing)


def compile_with_freezing(model: torch.nn.Module, settings: Settings) -> Callable:
    """torch.compile(model), every call under inductor's freezing, which the int8 pt2e lowering needs.

    Freezing is set per call rather than through torch.compile(options=...) (with options it fails on
    onednn.qconv_prepack under torch 2.13), and per call rather than once so a recompile for a new batch size
    freezes too.
    """
    compiled = torch.compile(model, backend=settings.compile_backend)

    def frozen(*inputs):
        with torch._inductor.config.patch(freezing=True):
            return compiled(*inputs)
    return frozen


def _fxq_compiled() -> Compiled:
    import fxq

    if not hasattr(fxq, "compile"):
        raise Unavailable("fxq has no fxq.compile")
    return Compiled("fxq.compile", FXQ_EAGER, lambda model, settings: fxq.compile(model))


def cpu_isa_flags(cpuinfo: Optional[str] = None) -> Dict[str, bool]:
    """Which of the int8-relevant ISA extensions the CPU has, from /proc/cpuinfo's first flags line.

    Without VNNI the int8 dot product saturates and runs on a slower path, so every ratio depends on these.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set = set()
    for line in cpuinfo.splitlines():
        if line.split(":")[0].strip() == "flags":
            flags = set(line.split(":", 1)[1].split())
            break
    return {flag: flag in flags for flag in ISA_FLAGS}


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def timed(function: Callable, *args):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def batched(example: tuple, batch: int) -> tuple:
    """Inputs shaped like `example` with dim 0 = batch (seeded, the same for every implementation)."""
    if batch == 1:
        return example
    generator = torch.Generator().manual_seed(batch)
    return tuple(torch.randn((batch, *t.shape[1:]), generator=generator) for t in example)


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


def serialized_bytes(model: torch.nn.Module) -> int:
    """Bytes of torch.save(model.state_dict()): what a user ships (torch.ao's converted modules do not pickle whole)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def forward_all(model: torch.nn.Module, batches: List[tuple]) -> float:
    """Seconds for one forward over every batch."""
    with torch.no_grad():
        return timed(lambda: [model(*batch) for batch in batches])[1]


def calibration_overhead(model: torch.nn.Module, prepared: torch.nn.Module, batches: List[tuple],
                         rounds: int = _CALIBRATION_ROUNDS) -> float:
    """Median observed forward over median float forward, the two alternating (the first observed round
    also sets the observers' ranges; later rounds cost what most calibration batches cost)."""
    float_s, observed_s = [], []
    for _ in range(rounds):
        float_s.append(forward_all(model, batches))
        observed_s.append(forward_all(prepared, batches))
    return statistics.median(observed_s) / statistics.median(float_s)


def latency_key(kind: str, engine: Optional[str], batch: int, threads: int) -> str:
    """The result key of one latency figure: 'int8_s/x86/b1/t1', 'int8_over_fp32/x86/b8/t2', 'fp32_s/b1/t1'."""
    return "/".join([kind] + ([engine] if engine else []) + [f"b{batch}", f"t{threads}"])


class ObserverClock:
    """While entered, adds the wall time of every calculate_qparams call on subclasses of `bases` to `seconds`.

    The methods are wrapped on the classes (convert builds some observers itself, e.g. torch.ao's weight
    observers), and only the outermost call counts, so a subclass calling super().calculate_qparams counts once.
    """

    def __init__(self, bases: Tuple[type, ...]):
        self.bases, self.seconds, self._depth, self._originals = bases, 0.0, 0, {}

    def __enter__(self) -> "ObserverClock":
        for cls in _subclasses(self.bases):
            if "calculate_qparams" in vars(cls):
                self._originals[cls] = vars(cls)["calculate_qparams"]
                cls.calculate_qparams = self._wrap(self._originals[cls])
        return self

    def __exit__(self, *failure) -> None:
        for cls, original in self._originals.items():
            cls.calculate_qparams = original

    def _wrap(self, method: Callable) -> Callable:
        @functools.wraps(method)
        def timed_method(observer, *args, **kwargs):
            if self._depth:
                return method(observer, *args, **kwargs)
            self._depth, start = 1, time.perf_counter()
            try:
                return method(observer, *args, **kwargs)
            finally:
                self._depth, self.seconds = 0, self.seconds + time.perf_counter() - start
        return timed_method


def _subclasses(bases: Tuple[type, ...]) -> List[type]:
    found, stack = [], list(bases)
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.append(cls)
            stack.extend(cls.__subclasses__())
    return found


def measure(implementation: Implementation, factory: Callable,
            settings: Settings) -> Tuple[Dict[str, float], Dict[str, torch.nn.Module]]:
    """Trace, prepare, calibrate and convert one fresh model (once per engine), and time every step.

    prepare and convert times are medians of `settings.repeats` runs. Returns the metrics and the converted
    model per engine, for interleaved_latencies.
    """
    model, example = factory()
    result = {"trace_s": timed(implementation.trace, model, example)[1]}
    batches = calibration_batches(example, settings.calibration_batches)
    forward_all(model, batches)  # warm the kernels' caches, so both timed forwards start equal
    prepare_s = []
    for _ in range(settings.repeats):
        prepared, seconds = timed(implementation.prepare, model, implementation.mapping(), example)
        prepare_s.append(seconds)
    result["prepare_s"] = statistics.median(prepare_s)
    result["calibration_observed_over_float"] = calibration_overhead(model, prepared, batches)
    # what observing adds to a float forward: issue 8's "calibration overhead" (a ratio below 1 is out of reach)
    result["calibration_overhead"] = result["calibration_observed_over_float"] - 1
    converted_per_engine = {}
    for index, engine in enumerate(settings.engines):
        last_engine = index == len(settings.engines) - 1
        converted, convert_s, observers_s = _timed_converts(implementation, prepared, engine, settings.repeats,
                                                            consume=last_engine)
        if index == 0:
            result.update(convert_s=convert_s, convert_observers_s=observers_s,
                          convert_observers_share=observers_s / convert_s)
            with torch.no_grad():
                result["sqnr_db"] = sqnr(model(*example), converted(*example))
            result["size_ratio"] = serialized_bytes(converted) / serialized_bytes(model)
        converted_per_engine[engine] = converted
    return result, converted_per_engine


def measure_compiled(column: Compiled, model: torch.nn.Module, converted: torch.nn.Module, example: tuple,
                     settings: Settings) -> Tuple[Dict[str, float], Callable]:
    """Compile a converted model; its first call's seconds (tracing and code generation included) and its SQNR."""
    compiled = column.compile(converted, settings)
    with torch.no_grad():
        output, seconds = timed(compiled, *example)
        reference = model(*example)
    return {"compile_s": seconds, "sqnr_db": sqnr(reference, output)}, compiled


def _timed_converts(implementation: Implementation, prepared: torch.nn.Module, engine: str, repeats: int,
                    consume: bool) -> Tuple[torch.nn.Module, float, float]:
    """(converted model, median convert seconds, median seconds in calculate_qparams) over `repeats` converts.

    torch.ao's convert consumes the observed model: every convert but a consuming last one gets a copy.
    """
    convert_s, observers_s = [], []
    for repeat in range(repeats):
        source = prepared if consume and repeat == repeats - 1 else copy.deepcopy(prepared)
        with quantized_engine(engine), ObserverClock(implementation.observer_bases) as clock:
            converted, seconds = timed(implementation.convert, source)
        convert_s.append(seconds)
        observers_s.append(clock.seconds)
    return converted, statistics.median(convert_s), statistics.median(observers_s)


def interleaved_latencies(models: Dict[Hashable, Tuple[torch.nn.Module, Optional[str]]], example: tuple,
                          settings: Settings) -> Dict[Hashable, Dict[str, float]]:
    """Median latency of every (model, engine) at every batch size and thread count, the models taking turns.

    An engine of None marks the float model (keys 'fp32_s/...'); others get 'int8_s/<engine>/...'.
    """
    result: Dict[Hashable, Dict[str, float]] = {name: {} for name in models}
    previous = torch.get_num_threads()
    try:
        for batch in settings.batch_sizes():
            inputs = batched(example, batch)
            for threads in settings.thread_counts:
                torch.set_num_threads(threads)
                samples = _turns(models, inputs, settings)
                for name, (_, engine) in models.items():
                    key = latency_key("int8_s" if engine else "fp32_s", engine, batch, threads)
                    result[name][key] = statistics.median(samples[name])
    finally:
        torch.set_num_threads(previous)
    return result


def _turns(models: dict, inputs: tuple, settings: Settings) -> Dict[Hashable, List[float]]:
    samples: Dict[Hashable, List[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(settings.warmup):
            for model, engine in models.values():
                with quantized_engine(engine or torch.backends.quantized.engine):
                    model(*inputs)
        rounds, started = 0, time.perf_counter()
        names = list(models)
        while _more_rounds(rounds, time.perf_counter() - started, settings):
            # who goes first rotates: a model measured right after another one runs ~5% slower on this host
            for name in names[rounds % len(names):] + names[:rounds % len(names)]:
                model, engine = models[name]
                with quantized_engine(engine or torch.backends.quantized.engine):
                    samples[name].append(timed(model, *inputs)[1])
            rounds += 1
    return samples


def _more_rounds(rounds: int, elapsed: float, settings: Settings) -> bool:
    """At least `runs` rounds, more for fast models: a median of ten 2 ms calls is mostly noise."""
    return rounds < settings.runs or (elapsed < settings.min_seconds and rounds < _MAX_ROUNDS)


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """torch.backends.quantized.engine = engine inside the block, the previous engine after it."""
    previous, torch.backends.quantized.engine = torch.backends.quantized.engine, engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
