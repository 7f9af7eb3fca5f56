"""Linear-chain folding: int8 latency and SQNR vs float of a Linear chain, unfolded vs folded.

    python tools/bench_fold.py [--width 256] [--depth 3] [--batch 32] [--threads 1]

Folding W = W3·W2·W1 turns `depth` kernel calls and `depth` activation roundings into one of each. It changes
the parameter count: a chain with a narrow middle (a bottleneck) gets more weights when folded.
"""
from __future__ import annotations

import argparse

import torch
from tabulate import tabulate
from torch import nn

import fxq
from fxq.debug.timing import median_ms


def _latency_ms(model: nn.Module, x: torch.Tensor) -> float:
    return median_ms(lambda: model(x), runs=50, warmup=5)


def _sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    noise = (reference - other).pow(2).mean()
    return float(10 * torch.log10(reference.pow(2).mean() / noise))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(args.width, args.width) for _ in range(args.depth)]).eval()
    x = torch.randn(args.batch, args.width)
    reference = model(x).detach()
    rows = []
    for name, source in (("unfolded", model), ("folded", fxq.fuse_fx(model, {"fold_linear_chains": True}))):
        prepared = fxq.prepare_fx(source, fxq.get_default_qconfig_mapping(), (x,))
        prepared(x)
        quantized = fxq.convert_fx(prepared)
        parameters = sum(p.numel() for p in source.parameters())
        rows.append([name, parameters, _latency_ms(source, x), _latency_ms(quantized, x),
                     _sqnr(reference, quantized(x))])
    print(tabulate(rows, headers=["chain", "parameters", "fp32 ms", "int8 ms", "int8 SQNR vs float dB"],
                   floatfmt=".2f"))


if __name__ == "__main__":
    main()
