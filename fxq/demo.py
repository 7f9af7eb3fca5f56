"""``fxq demo``: quantize a small built-in conv net end to end and report what int8 cost and bought.

For now the net has random weights and random calibration data; it shows the pipeline, SQNR and latency.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable

import torch
from torch import nn


class DemoNet(nn.Module):
    """conv-bn-relu x2, max pool, residual add, global pool, linear: the shapes of a small image classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        x = self.pool(self.stem(x))
        return self.head(self.relu(self.block(x) + x))


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    noise = (reference - other).pow(2).mean()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.pow(2).mean() / noise))


def median_ms(run: Callable[[], object], repeats: int = 30) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def run_demo() -> int:
    import fxq

    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
    torch.manual_seed(0)
    model = DemoNet().eval()
    for module in model.modules():  # non-trivial batch norm statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(8)]
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping("x86"), (batches[0],))
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
        quantized = fxq.convert_fx(prepared)
        test = torch.randn(32, 3, 32, 32)
        float_out, int8_out = model(test), quantized(test)
        one = test[:1]
        float_ms, int8_ms = median_ms(lambda: model(one)), median_ms(lambda: quantized(one))
    print("fxq demo: DemoNet (random weights), 8 random calibration batches, x86 int8")
    print(f"  SQNR int8 vs float: {sqnr(float_out, int8_out):.1f} dB")
    print(f"  latency batch 1:    float {float_ms:.3f} ms, int8 {int8_ms:.3f} ms ({int8_ms / float_ms:.2f}x)")
    return 0
