"""Weight-only and dynamic Linear kernels against float F.linear, side by side (medians, ms and ratios).

    python tools/bench_weight_only.py                 # 4096x4096 at batch 1 and 32, 1 and 2 threads
    python tools/bench_weight_only.py --size 1024 --runs 20
"""
import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fxq  # noqa: E402
from fxq.debug.timing import median_ms  # noqa: E402


def quantized_layer(linear: torch.nn.Linear, mapping, example):
    prepared = fxq.prepare_fx(torch.nn.Sequential(linear).eval(), mapping, (example,))
    return fxq.convert_fx(prepared).get_submodule("0")


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    size = args.size
    linear = torch.nn.Linear(size, size).eval()
    linear_bf16 = torch.nn.Linear(size, size).eval().to(torch.bfloat16)
    linear_bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in linear.state_dict().items()})
    x = torch.randn(1, size)
    w8a32 = quantized_layer(linear, fxq.get_weight_only_qconfig_mapping(torch.float32), x)
    w8a16 = quantized_layer(linear_bf16, fxq.get_weight_only_qconfig_mapping(torch.bfloat16), x.bfloat16())
    dynamic = quantized_layer(linear, fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig), x)
    rows = []
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 32):
                x = torch.randn(batch, size)
                xb = x.bfloat16()
                fp32 = median_ms(lambda: F.linear(x, linear.weight, linear.bias), args.runs)
                bf16 = median_ms(lambda: F.linear(xb, linear_bf16.weight, linear_bf16.bias), args.runs)
                a32 = median_ms(lambda: w8a32(x), args.runs)
                a16 = median_ms(lambda: w8a16(xb), args.runs)
                dyn = median_ms(lambda: dynamic(x), args.runs)
                rows.append([threads, batch, fp32, bf16, a32, a32 / fp32, a16, a16 / bf16, dyn, dyn / fp32])
    headers = ["threads", "batch", "fp32 ms", "bf16 ms", "W8A32 ms", "W8A32/fp32", "W8A16 ms", "W8A16/bf16",
               "dynamic ms", "dynamic/fp32"]
    print(f"Linear {size}x{size}, weight bytes: fp32 {4 * size * size / 2**20:.0f} MiB, "
          f"int8 {size * size / 2**20:.0f} MiB")
    print(tabulate(rows, headers, floatfmt=".3g"))
    return rows


if __name__ == "__main__":
    main()
