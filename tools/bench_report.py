"""Ratios and tables for tools/bench.py: every figure side by side, then each fxq column over torch.ao's.

Ratios are ours / torch.ao's (below 1 is better for times and sizes); SQNR is compared as the difference in dB.

    >>> ratios({"torch.ao": {"prepare_s": 2.0, "sqnr_db": 30.0}, "fxq": {"prepare_s": 1.0, "sqnr_db": 31.0}})
    {'fxq/torch.ao': {'prepare_s': 0.5, 'sqnr_db': 1.0}}
"""
from typing import Dict, List, Optional

from tabulate import tabulate

from tools.bench_measure import METRICS

REFERENCE = "torch.ao"
LABELS = {"trace_s": "trace (s)", "prepare_s": "prepare_fx (s)",
          "calibration_observed_over_float": "calibration forward, observed/float",
          "calibration_overhead": "  calibration overhead, observed/float - 1", "convert_s": "convert_fx (s)",
          "convert_observers_s": "  observers' calculate_qparams (s)",
          "convert_observers_share": "  observers' share of convert", "sqnr_db": "SQNR vs float (dB)",
          "size_ratio": "state_dict bytes, int8/float"}


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


def print_models(results: Dict[str, dict], implementations: List[str]) -> None:
    for name, result in results.items():
        print(model_table(name, result, implementations) + "\n")
        for impl in implementations:
            if "error" in result.get(impl, {}):
                print(f"{name}: {impl} n/a: {result[impl]['error']}\n")
    print(f"ratios: fxq / {REFERENCE} (SQNR: difference in dB); latencies are medians.")


def print_scaling(result: dict, implementations: List[str]) -> None:
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
