"""Ratios and tables for tools/bench.py: every figure side by side, then each column over torch.ao's; a latency
summary with each column over each peer; issue 17's goals as PASS/FAIL lines. Every table is headed by the CPU's
ISA flags, since the int8 ratios depend on them.

Ratios are ours / theirs (below 1 is better for times and sizes); SQNR is compared as the difference in dB.

    >>> ratios({"torch.ao": {"prepare_s": 2.0, "sqnr_db": 30.0}, "fxq": {"prepare_s": 1.0, "sqnr_db": 31.0}})
    {'fxq/torch.ao': {'prepare_s': 0.5, 'sqnr_db': 1.0}}
    >>> isa_line({"avx2": True, "avx512f": False})
    'CPU ISA flags: avx2 yes, avx512f no'
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from tabulate import tabulate

from tools.bench_measure import FXQ_EAGER, METRICS, NO_PLAIN_LOWERING

REFERENCE = "torch.ao"
PEERS = ("torch.ao", "pt2e", "pt2e+compile")
LABELS = {"trace_s": "trace (s)", "prepare_s": "prepare_fx (s)",
          "calibration_observed_over_float": "calibration forward, observed/float",
          "calibration_overhead": "  calibration overhead, observed/float - 1", "convert_s": "convert_fx (s)",
          "convert_observers_s": "  observers' calculate_qparams (s)",
          "convert_observers_share": "  observers' share of convert", "sqnr_db": "SQNR vs float (dB)",
          "size_ratio": "state_dict bytes, int8/float", "compile_s": "torch.compile, first call (s)"}


def ratios(results: Dict[str, dict]) -> Dict[str, Dict[str, float]]:
    """{'fxq/torch.ao': {metric: ratio}} for every implementation besides torch.ao; SQNR as a dB difference."""
    theirs = results.get(REFERENCE, {})
    table = {}
    for name, ours in results.items():
        if name == REFERENCE or not isinstance(ours, dict) or "error" in ours or "error" in theirs:
            continue
        table[f"{name}/{REFERENCE}"] = {metric: _compare(metric, value, theirs.get(metric))
                                        for metric, value in ours.items() if theirs.get(metric)}
    return table


def _compare(metric: str, ours: float, theirs: float) -> float:
    return ours - theirs if metric == "sqnr_db" else ours / theirs


def label(metric: str) -> str:
    """'int8_s/x86/b8/t2' -> 'int8 latency x86 b=8 t=2 (ms)'; named metrics from LABELS."""
    if metric in LABELS:
        return LABELS[metric]
    kind, *where = metric.split("/")
    place = " ".join(part if part[0] not in "bt" or not part[1:].isdigit() else f"{part[0]}={part[1:]}"
                     for part in where)
    names = {"int8_s": "int8 latency {} (ms)", "fp32_s": "fp32 latency {} (ms)", "int8_over_fp32": "int8/fp32 {}"}
    return names[kind].format(place)


def cell(value: Optional[float], metric: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.3g}" if metric.split("/")[0] in ("int8_s", "fp32_s") else f"{value:.3g}"


def metric_order(result: dict, implementations: List[str]) -> List[str]:
    """METRICS, the fp32 latencies, then each implementation's latency keys in the order they were measured."""
    order = list(METRICS) + list(result.get("fp32", {}))
    for name in implementations:
        order += [key for key in result.get(name, {}) if key not in order and key != "error"]
    return order


def model_table(name: str, result: dict, implementations: List[str]) -> str:
    """One tabulate table: a row per metric, a column per implementation, then each one's ratio to torch.ao."""
    compared = [impl for impl in implementations if impl != REFERENCE]
    headers = [name] + implementations + [f"{impl}/{REFERENCE}" for impl in compared]
    rows = []
    for metric in metric_order(result, implementations):
        if metric in result.get("fp32", {}):
            values = [cell(result["fp32"][metric], metric)] * len(implementations) + [""] * len(compared)
        else:
            values = [cell(result.get(impl, {}).get(metric), metric) for impl in implementations]
            values += [cell(result["ratios"].get(f"{impl}/{REFERENCE}", {}).get(metric)) for impl in compared]
        rows.append([label(metric)] + values)
    return tabulate(rows, headers=headers, disable_numparse=True)


def isa_line(flags: Dict[str, bool]) -> str:
    return "CPU ISA flags: " + ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in flags.items())


def summary_table(name: str, result: dict, implementations: List[str]) -> str:
    """A row per column at the summary's engine/batch/threads: latency, int8/fp32, latency over each peer's,
    compile seconds and SQNR. A column that could not run says why in its latency cell."""
    int8_key, fp32_key = result["summary"]["int8"], result["summary"]["fp32"]
    peers = [peer for peer in PEERS if peer in implementations]
    headers = [f"{name} {label(int8_key).replace('int8 latency ', '').replace(' (ms)', '')}", "latency (ms)",
               "int8/fp32"]
    headers += [f"/{peer}" for peer in peers] + ["compile (s)", "SQNR (dB)"]
    rows = [["fp32", cell(result["fp32"].get(fp32_key), fp32_key)] + [""] * (len(headers) - 2)]
    for impl in implementations:
        measured = result.get(impl, {})
        if "error" in measured:
            rows.append([impl, f"n/a ({measured['error']})"] + [""] * (len(headers) - 2))
            continue
        rows.append([impl, cell(measured.get(int8_key), int8_key), cell(latency_ratio(result, impl, "fp32"))]
                    + [cell(latency_ratio(result, impl, peer)) if peer != impl else "" for peer in peers]
                    + [cell(measured["compile_s"]) if "compile_s" in measured else "", cell(measured.get("sqnr_db"))])
    return tabulate(rows, headers=headers, disable_numparse=True)


def latency_ratio(result: dict, ours: str, theirs: str) -> Optional[float]:
    """Our int8 latency over theirs (or over fp32's) at the summary's engine/batch/threads; None if either is missing."""
    int8_key, fp32_key = result["summary"]["int8"], result["summary"]["fp32"]
    numerator = result.get(ours, {}).get(int8_key)
    denominator = result["fp32"].get(fp32_key) if theirs == "fp32" else result.get(theirs, {}).get(int8_key)
    return numerator / denominator if numerator and denominator else None


def print_models(results: Dict[str, dict], implementations: List[str], isa: Dict[str, bool]) -> None:
    for name, result in results.items():
        print(isa_line(isa))
        print(model_table(name, result, implementations) + "\n")
        for impl in implementations:
            if "error" in result.get(impl, {}):
                print(f"{name}: {impl} n/a ({result[impl]['error']})")
        print()
    for name, result in results.items():
        print(isa_line(isa))
        print(summary_table(name, result, implementations) + "\n")
    print(f"ratios: column / {REFERENCE} in the full tables (SQNR: difference in dB), column / peer in the summaries; "
          "latencies are medians.")


# ---------------------------------------------------------------------------------------------
# issue 17's goals


@dataclass(frozen=True)
class Goal:
    """ours' int8 latency / peer's (or / fp32's) at most `limit`, on each of `models` (all measured ones if empty).

    ours is a column, or "fxq eager": fxq's default lowering (the first of FXQ_EAGER measured).
    """
    models: Tuple[str, ...]
    ours: str
    peer: str
    limit: float


GOALS = [
    Goal(("bert",), "fxq eager", "torch.ao", 0.85),
    Goal(("bert",), "fxq eager", "pt2e+compile", 1.0),
    Goal(("bert",), "fxq.compile", "pt2e+compile", 0.9),
    Goal(("resnet18", "resnet50", "mobilenet_v2"), "fxq eager", "torch.ao", 0.9),
    Goal((), "fxq eager", "fp32", 1.0),  # int8 never slower than float
]


def fxq_eager_column(result: dict) -> Optional[str]:
    """The column that stands for fxq's default eager lowering: plain once fxq has it, else the quantized one."""
    present = [name for name in FXQ_EAGER if name in result and result[name].get("error") != NO_PLAIN_LOWERING]
    return present[0] if present else None


def goal_lines(results: Dict[str, dict]) -> List[str]:
    """'PASS'/'FAIL'/'n/a' and the measured ratio, per goal and model measured."""
    lines = []
    for goal in GOALS:
        for name in [model for model in results if not goal.models or model in goal.models]:
            result = results[name]
            ours = fxq_eager_column(result) if goal.ours == "fxq eager" else goal.ours
            text = f"{name}: {ours or goal.ours} int8 / {goal.peer}{'' if goal.peer == 'fp32' else ' int8'}"
            ratio = latency_ratio(result, ours, goal.peer) if ours else None
            if ratio is None:
                why = [result.get(column, {}).get("error") or "not measured" for column in (ours, goal.peer)
                       if column and column != "fp32" and result.get(column, {}).get(result["summary"]["int8"]) is None]
                lines.append(f"n/a   {text} <= {goal.limit} ({'; '.join(why) or 'not measured'})")
            else:
                lines.append(f"{'PASS' if ratio <= goal.limit else 'FAIL'}  {text} = {ratio:.3g} <= {goal.limit}")
    return lines


def print_goals(results: Dict[str, dict], isa: Dict[str, bool]) -> None:
    print(isa_line(isa))
    print("issue 17 goals (latency at each summary's engine/batch/threads):")
    print("\n".join(goal_lines(results)))


def print_scaling(result: dict, implementations: List[str], isa: Dict[str, bool]) -> None:
    print(isa_line(isa))
    theirs = result.get(REFERENCE, {}).get("prepare_s", [])
    rows = []
    for index, size in enumerate(result["sizes"]):
        row = [size]
        for impl in implementations:
            times = result.get(impl, {}).get("prepare_s", [])
            ours = times[index] if index < len(times) else None
            reference = theirs[index] if index < len(theirs) else None
            ratio = ours / reference if ours and reference else None
            row += [cell(ours)] + ([cell(ratio)] if impl != REFERENCE else [])
        rows.append(row)
    exponents = ["exponent k"]
    for impl in implementations:
        exponents += [cell(result.get(impl, {}).get("exponent"))] + ([""] if impl != REFERENCE else [])
    headers = ["blocks"]
    for impl in implementations:
        headers += [f"{impl} prepare (s)"] + ([f"{impl}/{REFERENCE}"] if impl != REFERENCE else [])
    print(tabulate(rows + [exponents], headers=headers, disable_numparse=True))
