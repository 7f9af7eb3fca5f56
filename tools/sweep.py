"""The architecture sweep: every case of tools/sweep_models.py through fxq and torch.ao, side by side.

Each case is built twice from the same seed (one copy per implementation), prepared with the x86 default
mapping, calibrated on the same 4 batches and run on a fifth. Per implementation the sweep records the status of
each stage, SQNR of the output against float, quantize / dequantize calls in the converted graph, int8 / fp32
latency (medians of a few alternating calls, 1 thread), warnings other than deprecation notices, and whether the
user's float model is bit-identical afterwards. Then it checks fxq's goals per case:

    no_failure  fxq converts and runs every model torch.ao converts and runs
    sqnr        fxq's SQNR >= torch.ao's - 0.5 dB (not applicable where fxq rounds more tensors to int8)
    qdq         quantized lowering: no more quantize calls and no more dequantize calls than torch.ao.
                plain lowering (fxq's default): no dequantize re-quantized at once with the same qparams. It runs
                ops without a uint8 kernel (layer norm, add, avg pool, ...) as dequantize -> float op -> quantize
                by design, so its calls outnumber torch.ao's; only a round trip with nothing between is waste.
    unchanged   the user's model is bit-identical after fxq's prepare, calibrate and convert
    min_sqnr    fxq's SQNR >= the case's own floor, where it has one (torch.ao shares the in-place bug there)

Usage:
    python tools/sweep.py                          # all cases, table + goals; exit code 1 if a goal is missed
    python tools/sweep.py --cases vit,gpt2 --json sweep.json
    python tools/sweep.py --markdown               # the README table
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

if __package__ in (None, ""):  # run as a script: make the `tools` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.sweep_cases import SweepCase, build  # noqa: E402
from tools.sweep_measure import Flow, FlowResult, median_latencies, run_flow  # noqa: E402
from tools.sweep_models import CASES  # noqa: E402
from tools.sweep_report import format_table, goal_misses, summary  # noqa: E402

SQNR_MARGIN_DB = 0.5


def fxq_flow() -> Flow:
    import fxq
    return Flow("fxq", fxq.prepare_fx, fxq.convert_fx, lambda: fxq.get_default_qconfig_mapping("x86"))


def torch_ao_flow() -> Optional[Flow]:
    """torch.ao's FX flow, or None where this torch no longer ships it."""
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        return None
    return Flow("torch.ao", prepare_fx, convert_fx, lambda: get_default_qconfig_mapping("x86"))


@dataclass
class CaseResult:
    case: SweepCase
    fxq: FlowResult
    torch_ao: Optional[FlowResult]
    latency_ms: Dict[str, float]  # "fp32", "fxq", "torch.ao" -> median ms per call

    def goals(self) -> Dict[str, Optional[bool]]:
        """Each goal: True met, False missed, None not applicable (torch.ao did not convert to compare with)."""
        ours, theirs = self.fxq, self.torch_ao
        both = ours.ok and theirs is not None and theirs.ok
        return {
            "no_failure": ours.ok or (theirs is not None and not theirs.ok),
            "sqnr": _sqnr_goal(ours, theirs) if both else None,
            "qdq": _qdq_goal(ours, theirs) if both else None,
            "unchanged": ours.unchanged,
            "min_sqnr": None if self.case.min_sqnr is None else ours.ok and ours.sqnr >= self.case.min_sqnr,
        }


def _qdq_goal(ours: FlowResult, theirs: FlowResult) -> bool:
    if ours.plain:
        return ours.requantized == 0
    return ours.quantize <= theirs.quantize and ours.dequantize <= theirs.dequantize


def _sqnr_goal(ours: FlowResult, theirs: FlowResult) -> Optional[bool]:
    """SQNR >= torch.ao's - margin; not applicable to a miss where fxq rounds more tensors to int8 than torch.ao
    (it runs an op in int8 that torch.ao leaves float: one more rounding, no fewer quantize/dequantize calls, as
    GroupNorm before a float GELU in wav2vec_features) -- the rule tools/fuzz_torch_ao.py applies to fuzzed graphs."""
    if ours.sqnr >= theirs.sqnr - SQNR_MARGIN_DB:
        return True
    return None if ours.roundings > theirs.roundings else False


def measure_latency(sweep_case: SweepCase, results: Dict[str, FlowResult], rounds: int) -> Dict[str, float]:
    model, (inputs,) = build(sweep_case, 1)
    callables = {"fp32": lambda: model(*inputs)}
    callables.update({name: (lambda m=result.converted: m(*inputs)) for name, result in results.items()
                      if result is not None and result.ok})
    try:
        return {name: seconds * 1e3 for name, seconds in median_latencies(callables, rounds).items()}
    except Exception:  # a converted model that ran once but not again is already a failure in its status
        return {}


def run_case(sweep_case: SweepCase, flows: Dict[str, Optional[Flow]], rounds: int) -> CaseResult:
    results = {name: run_flow(flow, sweep_case) if flow is not None else None for name, flow in flows.items()}
    latency = measure_latency(sweep_case, results, rounds) if rounds else {}
    for result in results.values():
        if result is not None:
            result.converted = None  # the table needs numbers only; free the modules
    return CaseResult(sweep_case, results["fxq"], results["torch.ao"], latency)


def run_sweep(names: Optional[List[str]] = None, rounds: int = 6, threads: int = 1) -> List[CaseResult]:
    """Run the named cases (all by default) under the x86 engine and ``threads`` threads; restores both."""
    unknown = sorted(set(names or []) - set(CASES))
    if unknown:
        raise KeyError(f"unknown sweep cases {unknown}; the cases are {sorted(CASES)}")
    flows = {"fxq": fxq_flow(), "torch.ao": torch_ao_flow()}
    previous_engine, previous_threads = torch.backends.quantized.engine, torch.get_num_threads()
    torch.backends.quantized.engine = "x86"
    torch.set_num_threads(threads)
    try:
        return [run_case(CASES[name], flows, rounds) for name in (names or list(CASES))]
    finally:
        torch.backends.quantized.engine = previous_engine
        torch.set_num_threads(previous_threads)


def to_json(results: List[CaseResult]) -> list:
    def flow(result: Optional[FlowResult]) -> Optional[dict]:
        if result is None:
            return None
        return {"stages": result.stages, "status": result.status, "sqnr": result.sqnr, "quantize": result.quantize,
                "dequantize": result.dequantize, "warnings": result.warnings, "unchanged": result.unchanged}
    return [{"case": r.case.name, "family": r.case.family, "note": r.case.note, "fxq": flow(r.fxq),
             "torch.ao": flow(r.torch_ao), "latency_ms": r.latency_ms, "goals": r.goals()} for r in results]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="latency calls per model, one per order of fp32, fxq, torch.ao (0: skip latency)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print the README table instead")
    parser.add_argument("--json", help="write every measurement to this file")
    args = parser.parse_args(argv)
    results = run_sweep(args.cases.split(",") if args.cases else None, args.rounds, args.threads)
    print(format_table(results, markdown=args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=2))
    misses = goal_misses(results)
    print("\n".join(misses + [summary(results)]))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
