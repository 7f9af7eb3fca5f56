"""Fuzz fxq with random well-typed graphs and print how many keep every property.

    python tools/fuzz.py --graphs 1000 [--seed 0] [--max-steps 8] [--show 5]

Draws ``--graphs`` graphs with hypothesis (tools/fuzz_graphs.py, reproducible from ``--seed``), checks each with
tools/fuzz_check.py (prepare, calibrate, convert vs reference vs torch.ao vs float, round trips, determinism,
the user's model untouched), and prints the counts per outcome, the documented errors by type and the first
``--show`` failing graphs.
Exit status 1 when a graph raised an undocumented exception, gave non-finite outputs or broke a property.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
import hypothesis
from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools.fuzz_check import KINDS, check_graph  # noqa: E402
from tools.fuzz_graphs import graph_specs  # noqa: E402
from tools.fuzz_torch_ao import COMPARISONS  # noqa: E402


def fuzz(graphs: int, seed: int, max_steps: int) -> list:
    """(spec, Outcome) for ``graphs`` drawn graphs; no shrinking, every graph is checked once."""
    results = []

    @settings(max_examples=graphs, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(graph_specs(max_steps=max_steps))
    def check(spec):
        results.append((spec, check_graph(spec)))

    hypothesis.seed(seed)(check)()
    return results


def report(results: list, seconds: float, show: int) -> str:
    counts = collections.Counter(outcome.kind for _, outcome in results)
    documented = collections.Counter(outcome.error_type for _, outcome in results if outcome.kind == "documented_error")
    comparisons = collections.Counter(outcome.torch_ao for _, outcome in results if outcome.torch_ao)
    lines = [f"graphs: {len(results)} in {seconds:.0f} s"]
    lines += [f"  {kind}: {counts.get(kind, 0)}" for kind in KINDS]
    lines += [f"    documented {name}: {count}" for name, count in sorted(documented.items())]
    lines.append("SQNR vs torch.ao (property 4), of the graphs fxq converted: "
                 + ", ".join(f"{case} {comparisons.get(case, 0)}" for case in COMPARISONS))
    failing = [(spec, outcome) for spec, outcome in results if outcome.kind not in ("passed", "documented_error")]
    for spec, outcome in failing[:show]:
        lines += ["", f"{outcome.kind}:", *("  " + failure for failure in outcome.failures), repr(spec)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--show", type=int, default=5, help="how many failing graphs to print")
    args = parser.parse_args()
    torch.backends.quantized.engine = "x86"
    torch.set_num_threads(1)  # tiny tensors: with a busy second core, intra-op threads only wait for each other
    start = time.perf_counter()
    results = fuzz(args.graphs, args.seed, args.max_steps)
    print(report(results, time.perf_counter() - start, args.show))
    return int(any(outcome.kind not in ("passed", "documented_error") for _, outcome in results))


if __name__ == "__main__":
    sys.exit(main())
