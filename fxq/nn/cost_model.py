"""Measured cost of a layer in int8 and in float, per op kind, shape, engine and thread count.

The cost model answers one question for prepare: on this machine, is this Linear / Conv faster as an int8
kernel than as the float op? Small layers often are not (an int8 kernel pays for requantizing its output and
its fixed overheads, which a 32x32 linear never earns back). Each (kind, shapes, engine, threads) is timed
once per process — the median of a few runs of both kernels on random data of the layer's shapes — and
cached, in memory and in a file per CPU (:func:`cache_path`; ``FXQ_COST_CACHE=path.json`` or ``off``).

    >>> cost = layer_cost("linear", weight_shape=(32, 32), input_shape=(1, 32))
    >>> cost.int8_ms > 0 and cost.float_ms > 0
    True
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from fxq.debug.timing import median_ms

__all__ = ["Cost", "layer_cost", "fastest_int8", "clear_cache", "ENGINES"]

_RUNS, _WARMUP = 7, 2
# Packings with the same int8 arithmetic (qnnpack rounds differently). onednn breaks exact ties of the output
# requantization the other way now and then: measured on ResNet-50, 1 output in 200,000 differs by one step.
ENGINES = ("x86", "fbgemm", "onednn")
# int8 must lose by this factor before a layer stays float: the timings are noisy
SLOWER_MARGIN = 1.25
PLAIN = "plain"  # the engine name of fxq.nn.plain's oneDNN kernels (the plain lowering)
SWITCH_MARGIN = 1.15  # another engine must beat the default engine by this factor to get a layer
_cache: Dict[str, "Cost"] = {}


@dataclass(frozen=True)
class Cost:
    """Times of one call: the int8 kernel, the float op, and ``boundary_ms``, what a float layer between int8
    neighbours adds — dequantizing its input and quantizing its output."""

    int8_ms: float
    float_ms: float
    boundary_ms: float = 0.0

    @property
    def int8_is_slower(self) -> bool:
        return self.int8_ms > SLOWER_MARGIN * (self.float_ms + self.boundary_ms)

    def describe(self) -> str:
        return f"int8 {self.int8_ms:.3f} vs float {self.float_ms + self.boundary_ms:.3f} ms"


def layer_cost(kind: str, weight_shape: Tuple[int, ...], input_shape: Tuple[int, ...],
               geometry: Tuple = (), engine: str = "") -> Cost:
    """Cost of ``kind`` ("linear" or "conv2d", with conv geometry (stride, padding, dilation, groups))."""
    engine = engine or torch.backends.quantized.engine
    key = json.dumps([kind, list(weight_shape), list(input_shape), list(geometry), engine, torch.get_num_threads(),
                      cpu_identity()])
    if not _cache:
        _load_disk_cache()
    if key not in _cache:
        measure = (_MEASURE_PLAIN if engine == PLAIN else _MEASURE)[kind]
        _cache[key] = measure(tuple(weight_shape), tuple(input_shape), tuple(geometry), engine)
        _save_disk_cache()
    return _cache[key]


def fastest_int8(kind: str, weight_shape: Tuple[int, ...], input_shape: Tuple[int, ...], geometry: Tuple = (),
                 engines: Tuple[str, ...] = ()) -> Tuple[str, "Cost"]:
    """(engine, cost) of the engine whose int8 kernel runs this layer fastest, among ``engines`` (default: every
    engine of ENGINES this torch has). x86, fbgemm and onednn compute the same int8 results for the same weights
    (but for rare rounding ties, see ENGINES), so the choice changes speed, not accuracy."""
    if engines == (PLAIN,):
        return PLAIN, layer_cost(kind, weight_shape, input_shape, geometry, PLAIN)
    candidates = [e for e in (engines or ENGINES) if e in torch.backends.quantized.supported_engines]
    if not candidates:
        raise ValueError(f"none of the engines {list(engines or ENGINES)} is in this torch build "
                         f"({torch.backends.quantized.supported_engines})")
    costs = {engine: layer_cost(kind, weight_shape, input_shape, geometry, engine) for engine in candidates}
    engine = min(costs, key=lambda e: costs[e].int8_ms)
    default = torch.backends.quantized.engine
    if default in costs and costs[default].int8_ms <= SWITCH_MARGIN * costs[engine].int8_ms:
        return default, costs[default]  # not clearly faster: a noisy timing must not move a layer off the default
    return engine, costs[engine]


def clear_cache() -> None:
    _cache.clear()


def _median_ms(function: Callable[[], object]) -> float:
    return median_ms(function, _RUNS, _WARMUP)


def _quantized_input(shape: Tuple[int, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(shape)
    return x, torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)


def _measure_linear(weight_shape, input_shape, geometry, engine) -> Cost:
    weight, bias = torch.randn(weight_shape), torch.randn(weight_shape[0])
    x, xq = _quantized_input(input_shape)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        packed = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(weight, 0.01, 0, torch.qint8), bias)
        int8 = _median_ms(lambda: torch.ops.quantized.linear(xq, packed, 0.05, 64))
    finally:
        torch.backends.quantized.engine = previous
    output = F.linear(x, weight, bias)
    return Cost(int8, _median_ms(lambda: F.linear(x, weight, bias)), _boundary_ms(xq, output))


def _measure_conv2d(weight_shape, input_shape, geometry, engine) -> Cost:
    stride, padding, dilation, groups = geometry
    weight, bias = torch.randn(weight_shape), torch.randn(weight_shape[0])
    # In a model, a conv's input comes from int8 convs, which write channels-last: so does the float input a
    # float conv between them gets (its dequantize). Float convs are slower on it than on contiguous input.
    xq = _quantized_input(input_shape)[1].contiguous(memory_format=torch.channels_last)
    x = xq.dequantize()
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        qweight = torch.quantize_per_tensor(weight, 0.01, 0, torch.qint8)
        packed = torch.ops.quantized.conv2d_prepack(qweight, bias, list(stride), list(padding), list(dilation), groups)
        int8 = _median_ms(lambda: torch.ops.quantized.conv2d(xq, packed, 0.05, 64))
    finally:
        torch.backends.quantized.engine = previous
    output = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    float_ms = _median_ms(lambda: F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    return Cost(int8, float_ms, _boundary_ms(xq, output))


def _boundary_ms(quantized_input: torch.Tensor, float_output: torch.Tensor) -> float:
    return _median_ms(lambda: (quantized_input.dequantize(),
                               torch.quantize_per_tensor(float_output, 0.05, 64, torch.quint8)))


def _plain_reference(kind: str, weight_shape, geometry):
    """A reference Linear / Conv2d of these shapes with symmetric per-channel int8 weights (random values)."""
    from fxq.nn import reference
    out_channels = weight_shape[0]
    qparams = {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0,
               "scale": torch.full((out_channels,), 0.01), "zero_point": torch.zeros(out_channels, dtype=torch.long)}
    if kind == "linear":
        return reference.Linear.from_float(torch.nn.Linear(weight_shape[1], out_channels), qparams)
    stride, padding, dilation, groups = geometry
    conv = torch.nn.Conv2d(weight_shape[1] * groups, out_channels, tuple(weight_shape[2:]), stride, padding,
                           dilation, groups)
    return reference.Conv2d.from_float(conv, qparams)


def _measure_plain(kind: str):
    """Measure fxq.nn.plain's kernel against the float op. A float layer between int8 neighbours costs a quantize
    of its output (the int8 layer before it returns fp32 straight from its kernel)."""
    def measure(weight_shape, input_shape, geometry, engine) -> Cost:
        from fxq.nn import plain
        ref = _plain_reference(kind, weight_shape, geometry)
        kernel = (plain.Linear if kind == "linear" else plain.Conv2d).from_reference(ref, 0.05, 64, 0.05, 64)
        x = torch.randn(input_shape)
        if kind == "conv2d":  # int8 convs write channels-last, so a float conv between them reads it too
            x = x.contiguous(memory_format=torch.channels_last)
        scale, zero_point = torch.tensor(0.05), torch.tensor(64)
        integers = plain.ops.quantize_per_tensor(x, scale, zero_point)
        int8 = _median_ms(lambda: kernel(integers))
        float_ms = _median_ms(lambda: ref._conv_forward(x, ref.weight, ref.bias) if kind == "conv2d"
                              else F.linear(x, ref.weight, ref.bias))
        output = kernel(integers).float()
        return Cost(int8, float_ms, _median_ms(lambda: plain.ops.quantize_per_tensor(output, scale, zero_point)))
    return measure


_MEASURE = {"linear": _measure_linear, "conv2d": _measure_conv2d}
_MEASURE_PLAIN = {"linear": _measure_plain("linear"), "conv2d": _measure_plain("conv2d")}


@functools.lru_cache(maxsize=None)
def cpu_identity() -> str:
    """What makes timings of one machine valid on another: CPU model, its ISA flags, torch version."""
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        lines = [platform.processor() or platform.machine()]
    model = next((line for line in lines if line.startswith("model name")), "")
    flags = next((line for line in lines if line.startswith("flags")), "")
    return hashlib.sha1(f"{model}|{flags}|{torch.__version__}".encode()).hexdigest()[:16]


def cache_path() -> Optional[Path]:
    """The file the timings persist in: ``FXQ_COST_CACHE`` ("off" for none), else one file per CPU identity in
    the user's cache directory, so the second prepare of a model on this machine measures nothing."""
    setting = os.environ.get("FXQ_COST_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    if setting:
        return Path(setting)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "fxq" / f"cost-{cpu_identity()}.json"


def _load_disk_cache() -> None:
    path = cache_path()
    if path is not None and path.exists():
        try:
            _cache.update({key: Cost(**value) for key, value in json.loads(path.read_text()).items()})
        except (ValueError, TypeError, OSError):  # a damaged or foreign file: measure again, overwrite it
            pass


def _save_disk_cache() -> None:
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({key: asdict(cost) for key, cost in _cache.items()}, indent=1))
    except OSError:  # a read-only home: the in-process cache still serves this run
        pass
