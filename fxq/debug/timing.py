"""Wall-clock timing for fxq's measurements (the cost model, the demo, the benchmarks in tools/).

    >>> median_ms(lambda: sum(range(100)), runs=5) >= 0
    True
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def median_ms(run: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """The median of ``runs`` timed calls of ``run`` after ``warmup`` untimed ones, in milliseconds (no autograd)."""
    with torch.no_grad():
        for _ in range(warmup):
            run()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3
