"""QAT vs PTQ below 8 bits on the demo CNN (scikit-learn digits): int4 (and 2-bit) per-channel weights, uint8
activations; fixed-range fake quantization vs LSQ (learned step sizes); accuracies of the converted int8 models.

Starts from the shipped float weights (fxq/cli/data/digits_cnn.pt), fine-tunes on the training split of
scikit-learn's digits (``pip install scikit-learn``; the data ships with it) and tests on the demo's 360 held-out
images. One thread, a few CPU minutes in all::

    python tools/bench_qat.py        # --epochs 3 --lr 3e-4 --freeze-bn-epoch 0 --weight-bits 4,2

The "int4 fc g32" rows are the int4 rows with the Linear layers' (fc1, fc2) weights grouped instead of per channel
(a scale per 32 inputs, fxq.config.spec.INT4_GROUPED_WEIGHT; convert makes them weight-only Linears; grouped
convolutions are not supported); ``--grouped 0`` skips them.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fxq  # noqa: E402
from fxq.cli.demo import accuracy, load_demo, to_input  # noqa: E402
from fxq.observers import (FusedMovingAvgObsFakeQuantize, HistogramObserver, LearnableFakeQuantize,  # noqa: E402
                           MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
                           PerChannelMinMaxObserver)
from fxq.config import spec  # noqa: E402
from tools.train_demo import load_digits_split  # noqa: E402

ACTIVATION = dict(dtype=torch.quint8, quant_min=0, quant_max=255)


def weight_range(bits: int) -> dict:
    return dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-(2 ** (bits - 1)),
                quant_max=2 ** (bits - 1) - 1)


def ptq_mapping(bits: int) -> fxq.QConfigMapping:
    weight = PerChannelMinMaxObserver.with_args(**weight_range(bits))
    return fxq.QConfigMapping().set_global(fxq.QConfig(HistogramObserver.with_args(**ACTIVATION), weight))


def qat_mapping(bits: int, learned: bool) -> fxq.QConfigMapping:
    if learned:  # LSQ: step sizes learned, initialized from the first batch's range
        activation = LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, use_grad_scaling=True,
                                                     **ACTIVATION)
        weight = LearnableFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                                 use_grad_scaling=True, **weight_range(bits))
    else:  # fixed range: moving-average min/max, as PyTorch AO's default QAT qconfig
        activation = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **ACTIVATION)
        weight = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                                         **weight_range(bits))
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation, weight))


def grouped_fc_mapping(qat: bool) -> fxq.QConfigMapping:
    """The int4 mapping (PTQ or fixed-range QAT) with int4 weights grouped by 32 inputs on the Linear layers."""
    mapping = qat_mapping(4, learned=False) if qat else ptq_mapping(4)
    weight = spec.INT4_GROUPED_WEIGHT.with_(rounding="ste" if qat else "nearest")
    return mapping.set_object_type(nn.Linear, fxq.QConfig(mapping.global_qconfig.activation, weight))


def run_ptq(model: nn.Module, bits: int, calibration: torch.Tensor,
            mapping: fxq.QConfigMapping | None = None) -> nn.Module:
    prepared = fxq.prepare_fx(model, mapping or ptq_mapping(bits), (calibration[:16],))
    with torch.no_grad():
        for batch in calibration.split(16):
            prepared(batch)
    return fxq.convert_fx(prepared)


def run_qat(model: nn.Module, mapping: fxq.QConfigMapping, train: tuple, options: argparse.Namespace) -> tuple:
    """Fine-tune the float model; batch norm frozen from ``--freeze-bn-epoch``, quantizers for the last half epoch."""
    inputs, labels = train
    epochs = options.epochs
    prepared = fxq.prepare_qat_fx(model.train(), mapping, (inputs[:64],))
    optimizer = torch.optim.Adam(prepared.parameters(), lr=options.lr)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        if epoch == options.freeze_bn_epoch:
            prepared.freeze_bn_stats()
        batches = torch.randperm(len(labels), generator=generator).split(64)
        for step, batch in enumerate(batches):
            if epoch == epochs - 1 and step == len(batches) // 2:
                prepared.disable_observer()
            loss = nn.functional.cross_entropy(prepared(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    prepared.eval()
    return prepared, fxq.convert_fx(prepared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--weight-bits", default="4,2")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--freeze-bn-epoch", type=int, default=0, help="epoch from which batch norm is frozen")
    parser.add_argument("--grouped", type=int, default=1, help="1: add int4 grouped vs per-channel fc weight rows")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    model, data = load_demo()
    test, test_labels = to_input(data["test_images"]), data["test_labels"].long()
    train_images, train_labels, _, _ = load_digits_split()
    train = (to_input(train_images), train_labels.long())
    calibration = to_input(data["calib_images"])
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f in ("avx2", "avx512_vnni", "amx_int8")})
    float_accuracy = accuracy(model, test, test_labels)
    print(f"DigitsNet, {len(test_labels)} test images, {len(train_labels)} training images, {args.epochs} QAT "
          f"epochs, uint8 activations, per-channel weights; CPU flags: {', '.join(flags)}; 1 thread")
    print(f"{'weights':<12} {'method':<22} {'accuracy %':>10} {'vs float':>9} {'seconds':>8}")
    print(f"{'fp32':<12} {'float':<22} {float_accuracy:>10.2f} {0:>+9.2f} {0:>8.1f}")
    for bits in (int(b) for b in args.weight_bits.split(",")):
        rows = [("PTQ (histogram)", lambda: (None, run_ptq(model, bits, calibration)))]
        rows.append(("QAT fixed range", lambda: run_qat(model, qat_mapping(bits, learned=False), train, args)))
        rows.append(("QAT LSQ", lambda: run_qat(model, qat_mapping(bits, learned=True), train, args)))
        print_rows(f"int{bits}", rows, (test, test_labels), float_accuracy)
    if args.grouped:
        rows = [("PTQ (histogram)", lambda: (None, run_ptq(model, 4, calibration, grouped_fc_mapping(qat=False)))),
                ("QAT fixed range", lambda: run_qat(model, grouped_fc_mapping(qat=True), train, args))]
        print_rows("int4 fc g32", rows, (test, test_labels), float_accuracy)


def print_rows(label: str, rows: list, test: tuple, float_accuracy: float) -> None:
    """Run each (name, run) row; print the converted model's accuracy (and the fake-quant model's, for QAT)."""
    for name, run in rows:
        start = time.perf_counter()
        fake_quant, quantized = run()
        seconds = time.perf_counter() - start
        int8_accuracy = accuracy(quantized, *test)
        print(f"{label:<12} {name + ', int8':<22} {int8_accuracy:>10.2f} {int8_accuracy - float_accuracy:>+9.2f} "
              f"{seconds:>8.1f}")
        if fake_quant is not None:
            fake_quant_accuracy = accuracy(fake_quant, *test)
            print(f"{'':<12} {'  fake-quant model':<22} {fake_quant_accuracy:>10.2f} "
                  f"{fake_quant_accuracy - float_accuracy:>+9.2f}")


if __name__ == "__main__":
    main()
