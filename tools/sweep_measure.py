"""What the sweep measures for one case and one implementation (fxq or torch.ao).

``run_flow`` takes a fresh float model through prepare -> calibrate -> convert -> run, stopping at the first stage
that raises, and records each stage's status, the warnings raised, SQNR of the output against float, the
quantize / dequantize calls in the converted graph (nested GraphModules included) and whether the user's float
model is bit-identical afterwards (state_dict, module types and a forward output).
"""
import itertools
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import fx, nn

from tools.fuzz_torch_ao import rounding_count
from tools.sweep_cases import SweepCase, build

STAGES = ("prepare", "calibrate", "convert", "run")
CALIBRATION_BATCHES = 4
EVALUATION_BATCHES = 2  # SQNR over 2 x 8 samples: on one small batch it moves by a dB with the luck of rounding


@dataclass
class Flow:
    """One implementation: ``prepare(model, mapping, example_inputs)``, ``convert(prepared)``, its x86 mapping."""
    name: str
    prepare: Callable
    convert: Callable
    mapping: Callable[[], object]


@dataclass
class FlowResult:
    stages: Dict[str, str] = field(default_factory=dict)  # stage -> "ok" or "ExceptionType: message"
    sqnr: Optional[float] = None
    quantize: Optional[int] = None
    dequantize: Optional[int] = None
    warnings: List[str] = field(default_factory=list)
    unchanged: bool = True
    roundings: Optional[int] = None  # tensors the converted model rounds to int8 on one evaluation batch
    plain: bool = False  # converted to fxq's plain uint8 ops (fxq.nn.plain) rather than quantized tensors
    requantized: Optional[int] = None  # dequantizes whose only use re-quantizes with the same qparams
    converted: Optional[nn.Module] = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return len(self.stages) == len(STAGES) and all(status == "ok" for status in self.stages.values())

    @property
    def status(self) -> str:
        """"ok", or the failing stage and its error on one line."""
        failed = [(stage, status) for stage, status in self.stages.items() if status != "ok"]
        return "ok" if not failed else f"{failed[0][0]}: {failed[0][1]}"


def tensors_of(output) -> List[torch.Tensor]:
    """The floating-point tensors of a (nested) output in a fixed order: dicts by key, sequences by position."""
    if isinstance(output, torch.Tensor):
        value = output.dequantize() if output.is_quantized else output
        return [value] if value.is_floating_point() else []
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in tensors_of(output[key])]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in tensors_of(item)]
    return []


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    noise = (reference.float() - other.float()).pow(2).mean()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(reference.float().pow(2).mean() / noise))


def output_sqnr(references: List, outputs: List) -> float:
    """The worst SQNR over the outputs' float tensors, each pooled over the evaluation batches (a dict of feature
    maps is as good as its worst map)."""
    references, outputs = [tensors_of(r) for r in references], [tensors_of(o) for o in outputs]
    shapes = [[tuple(t.shape) for t in tensors] for tensors in (references[0], outputs[0])]
    if shapes[0] != shapes[1]:
        raise ValueError(f"the output's float tensors have shapes {shapes[1]}, the float model's {shapes[0]}")
    pooled = [(torch.cat([r[i].flatten() for r in references]), torch.cat([o[i].flatten() for o in outputs]))
              for i in range(len(references[0]))]
    return min(sqnr(reference, output) for reference, output in pooled)


def quantize_dequantize_counts(module: nn.Module) -> tuple:
    """(quantize calls, dequantize calls) in every GraphModule inside ``module``."""
    quantize = dequantize = 0
    for graph_module in (m for m in module.modules() if isinstance(m, fx.GraphModule)):
        for node in graph_module.graph.nodes:
            if node.op == "call_method" and node.target == "dequantize":
                dequantize += 1
            elif node.op == "call_function":
                name = getattr(node.target, "__name__", str(node.target))
                dequantize += "dequantize" in name
                quantize += name.startswith("quantize_per")
    return quantize, dequantize


def _is_plain_op(node: fx.Node, name: str) -> bool:
    from fxq.nn.plain import ops
    return node.op == "call_function" and node.target is getattr(ops, name)


def _qparam_values(graph_module: fx.GraphModule, args: tuple) -> tuple:
    """Scale and zero point arguments as numbers (get_attr buffers read)."""
    def value(arg):
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            return tuple(torch.as_tensor(graph_module.get_buffer(arg.target)).flatten().tolist())
        return arg
    return tuple(value(arg) for arg in args)


def plain_requantize_counts(module: nn.Module) -> tuple:
    """(uses fxq's plain ops, plain dequantizes re-quantized at once with the same scale and zero point) in every
    GraphModule inside ``module``: the plain lowering's redundant round trips (a float op between a dequantize and
    a quantize is by design, a nothing between them is waste)."""
    plain, requantized = False, 0
    for graph_module in (m for m in module.modules() if isinstance(m, fx.GraphModule)):
        for node in graph_module.graph.nodes:
            if not _is_plain_op(node, "quantize_per_tensor"):
                continue
            plain = True
            source = node.args[0]
            if isinstance(source, fx.Node) and _is_plain_op(source, "dequantize_per_tensor"):
                requantized += _qparam_values(graph_module, source.args[1:3]) == \
                    _qparam_values(graph_module, node.args[1:3])
    return plain, requantized


def snapshot(model: nn.Module, inputs: tuple) -> tuple:
    """Everything that must survive quantization bit for bit: module types, state_dict and one forward output."""
    with torch.no_grad():
        output = [t.clone() for t in tensors_of(model(*inputs))]
    types = [(name, type(module)) for name, module in model.named_modules()]
    return types, {key: value.clone() for key, value in model.state_dict().items()}, output


def same_snapshot(before: tuple, after: tuple) -> bool:
    types_before, state_before, output_before = before
    types_after, state_after, output_after = after
    same_state = state_before.keys() == state_after.keys() and all(
        torch.equal(state_before[key], state_after[key]) for key in state_before)
    same_output = len(output_before) == len(output_after) and all(map(torch.equal, output_before, output_after))
    return types_before == types_after and same_state and same_output


def _one_line(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"[:160]


def _is_news(warning: warnings.WarningMessage) -> bool:
    """Deprecation notices (torch.ao's, quantized tensors') repeat on every call and say nothing about the model."""
    return (not issubclass(warning.category, (DeprecationWarning, FutureWarning))
            and "deprecat" not in str(warning.message).lower())


def run_flow(flow: Flow, sweep_case: SweepCase) -> FlowResult:
    """Quantize a fresh build of ``sweep_case`` with ``flow`` and measure it; never raises for a model's failure."""
    model, batches = build(sweep_case, CALIBRATION_BATCHES + EVALUATION_BATCHES)
    calibration, evaluation = batches[:CALIBRATION_BATCHES], batches[CALIBRATION_BATCHES:]
    with torch.no_grad():
        references = [model(*inputs) for inputs in evaluation]
    before = snapshot(model, evaluation[0])
    result, state = FlowResult(), {}
    stages = {
        "prepare": lambda: state.update(prepared=flow.prepare(model, flow.mapping(), calibration[0])),
        "calibrate": lambda: [state["prepared"](*batch) for batch in calibration],
        "convert": lambda: state.update(converted=flow.convert(state["prepared"])),
        "run": lambda: state.update(outputs=[state["converted"](*inputs) for inputs in evaluation]),
    }
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for stage, action in stages.items():
            try:
                action()
                result.stages[stage] = "ok"
            except Exception as error:  # the sweep reports every failure instead of stopping
                result.stages[stage] = _one_line(error)
                break
    result.warnings = [f"{w.category.__name__}: {w.message}" for w in caught if _is_news(w)]
    result.unchanged = same_snapshot(before, snapshot(model, evaluation[0]))
    if result.ok:
        try:
            result.sqnr = output_sqnr(references, state["outputs"])
        except ValueError as error:
            result.stages["run"] = _one_line(error)
            return result
        result.quantize, result.dequantize = quantize_dequantize_counts(state["converted"])
        result.plain, result.requantized = plain_requantize_counts(state["converted"])
        result.roundings = rounding_count(state["converted"], evaluation[0])
        result.converted = state["converted"]
    return result


def median_latencies(callables: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    """Median seconds per call of each callable. The callables take turns, so a load burst hits them alike, and
    each round uses the next permutation of them: whatever runs right after the float model finds its caches cold
    (measured here: 20-30% slower at batch 8), and a fixed order, or a rotation of one, bills that to one of them."""
    names = list(callables)
    orders = list(itertools.permutations(names))
    samples: Dict[str, List[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names:
            callables[name]()  # warm-up: first-call packing and allocation
        for round_index in range(rounds):
            for name in orders[round_index % len(orders)]:
                start = time.perf_counter()
                callables[name]()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
