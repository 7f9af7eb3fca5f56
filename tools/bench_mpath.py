"""Time fxq.mpath.search on a ~20,000-node traced graph (goal: each query under 50 ms).

    python tools/bench_mpath.py [--blocks 1250] [--repeat 15]

Builds a stack of small transformer blocks (16 nodes each: 1250 blocks = 20,003 nodes), traces it once, then times whole searches
(index build + matching; the query's compilation is cached after the first call). Prints the median and
minimum wall time and the minimum CPU time (the machine may be shared: the minimum is the least disturbed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

import fxq  # noqa: E402
from mpath_models import Transformer  # noqa: E402

QUERIES = (
    "**/[cls:torch.nn.Linear]",
    "layers/*/attn/[target:torch.matmul]",
    "**/attn/**/[op:call_function]",
    r"layers/[re:1\d*]/{attn, mlp}/~[op:call_module]",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1250)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gm = fxq.graph.tracer.trace(Transformer(width=4, depth=args.blocks))
    print(f"graph: {len(gm.graph.nodes)} nodes, {args.blocks} blocks")
    for query in QUERIES:
        fxq.mpath.search(query, gm)  # compile once
        wall, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            found = fxq.mpath.search(query, gm)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"median {statistics.median(wall) * 1e3:6.1f} ms  min {min(wall) * 1e3:6.1f} ms  "
              f"min cpu {min(cpu) * 1e3:6.1f} ms  {len(found):5d} matches  {query}")


if __name__ == "__main__":
    main()
