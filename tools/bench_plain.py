"""Latency of the plain int8 lowering (fxq.nn.plain) against fxq.nn.quantized and fp32, one process, interleaved.

Cases: fxq::quantize_per_tensor vs torch.quantize_per_tensor on a 128x3072 activation; a 3x3 conv, 64 channels,
56x56 (plain with contiguous and channels_last input, fxq.nn.quantized.Conv2d, fp32 channels_last); a BERT-base
feed-forward Linear 768->3072 on 128 tokens (plain uint8 out, plain float out, gelu erf/tanh fused,
fxq.nn.quantized.Linear, fp32). Each figure is the best of --rounds medians of --iterations calls, the
implementations taking turns within each round (a shared machine's noise hits them alike).

Usage:
    python tools/bench_plain.py --threads 1,2
"""
import argparse
import statistics
import time
import warnings
from typing import Callable, Dict, List

import torch

from fxq.nn import plain, quantized as nnq, reference
from fxq.nn.plain import ops


def interleaved(cases: Dict[str, Callable[[], object]], iterations: int, rounds: int) -> Dict[str, float]:
    """Best-of-rounds median latency in microseconds per case."""
    for run in cases.values():
        for _ in range(3):
            run()
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], statistics.median(times) * 1e6)
    return best


def _symmetric(weight: torch.Tensor) -> dict:
    scale = weight.detach().abs().flatten(1).amax(1) / 127
    return {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0, "scale": scale,
            "zero_point": torch.zeros(len(scale), dtype=torch.long)}


def quantize_cases() -> Dict[str, Callable[[], object]]:
    x = torch.randn(128, 3072)
    scale, zero_point = torch.tensor(0.02), torch.tensor(128)
    q = ops.quantize_per_tensor(x, scale, zero_point)
    tq = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)
    return {"fxq::quantize_per_tensor": lambda: ops.quantize_per_tensor(x, scale, zero_point),
            "torch.quantize_per_tensor": lambda: torch.quantize_per_tensor(x, 0.02, 128, torch.quint8),
            "fxq::dequantize_per_tensor": lambda: ops.dequantize_per_tensor(q, scale, zero_point),
            "Tensor.dequantize": lambda: tq.dequantize()}


def conv_cases() -> Dict[str, Callable[[], object]]:
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    ref = reference.Conv2d.from_float(conv, _symmetric(conv.weight))
    x = torch.randint(0, 128, (1, 64, 56, 56), dtype=torch.uint8)
    x_last = x.contiguous(memory_format=torch.channels_last)
    ours = plain.Conv2d.from_reference(ref, 0.05, 64, 0.1, 128, "relu")
    theirs = nnq.ConvReLU2d.from_reference(ref, 0.1, 128)
    qx = torch._make_per_tensor_quantized_tensor(x, 0.05, 64)
    qx_last = qx.contiguous(memory_format=torch.channels_last)
    float_x = torch.randn(1, 64, 56, 56).contiguous(memory_format=torch.channels_last)
    float_conv = conv.to(memory_format=torch.channels_last)
    return {"plain Conv2d, channels_last in": lambda: ours(x_last),
            "plain Conv2d, contiguous in": lambda: ours(x),
            "quantized ConvReLU2d, channels_last in": lambda: theirs(qx_last),
            "quantized ConvReLU2d, contiguous in": lambda: theirs(qx),
            "fp32 Conv2d+relu, channels_last": lambda: torch.relu(float_conv(float_x))}


def linear_cases() -> Dict[str, Callable[[], object]]:
    linear = torch.nn.Linear(768, 3072)
    ref = reference.Linear.from_float(linear, _symmetric(linear.weight))
    x = torch.randint(0, 128, (128, 768), dtype=torch.uint8)
    float_x = torch.randn(128, 768)
    qx = torch._make_per_tensor_quantized_tensor(x, 0.05, 64)
    build = plain.Linear.from_reference
    uint8_out, float_out = build(ref, 0.05, 64, 0.1, 128), build(ref, 0.05, 64, None)
    gelu_erf = build(ref, 0.05, 64, 0.1, 128, "gelu", (), "none")
    gelu_tanh = build(ref, 0.05, 64, 0.1, 128, "gelu", (), "tanh")
    theirs = nnq.Linear.from_reference(ref, 0.1, 128)
    dynamic = plain.DynamicLinear.from_reference(ref)
    dynamic_token = plain.DynamicLinear.from_reference(ref, per_token=True)
    return {"plain Linear, uint8 out": lambda: uint8_out(x), "plain Linear, float out": lambda: float_out(x),
            "plain Linear+gelu(erf)": lambda: gelu_erf(x), "plain Linear+gelu(tanh)": lambda: gelu_tanh(x),
            "quantized Linear": lambda: theirs(qx), "plain DynamicLinear": lambda: dynamic(float_x),
            "plain DynamicLinear per token": lambda: dynamic_token(float_x), "fp32 Linear": lambda: linear(float_x)}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with torch.no_grad():
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for title, cases in (("quantize 128x3072", quantize_cases()), ("conv 3x3 64ch 56x56", conv_cases()),
                                 ("linear 128x768 -> 3072", linear_cases())):
                print(f"\n{title}, {threads} thread(s): best-of-{args.rounds} median, microseconds")
                for name, micros in interleaved(cases, args.iterations, args.rounds).items():
                    print(f"  {name:42s} {micros:10.1f}")


if __name__ == "__main__":
    main()
