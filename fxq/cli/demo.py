"""``fxq demo``: quantize a small CNN trained on scikit-learn's 8x8 digits and report what int8 cost and bought.

The weights, 128 calibration images and a held-out test split of 360 images ship in ``fxq/cli/data/digits_cnn.pt``
(made by ``tools/train_demo.py``, the only place scikit-learn is needed). The demo prepares, calibrates with a
progress bar, converts, and prints float vs int8 accuracy, latency, model size and the five worst layers by SQNR.
"""
from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from fxq.debug.timing import median_ms

DATA_FILE = Path(__file__).parent / "data" / "digits_cnn.pt"


class DigitsNet(nn.Module):
    """Three conv-bn-relu blocks (one max pool) and two linear layers: 8x8 grey images -> 10 classes."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        x = self.conv3(self.pool(self.conv2(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixel values 0..16 of shape (N, 8, 8) -> the float (N, 1, 8, 8) input the net was trained on."""
    return (images.float() / 16.0 - 0.5).unsqueeze(1)


def load_demo() -> tuple[DigitsNet, dict]:
    """The trained net (eval mode) and the shipped data: test_images, test_labels, calib_images (uint8)."""
    data = torch.load(DATA_FILE, weights_only=True)
    model = DigitsNet()
    model.load_state_dict(data["state_dict"])
    return model.eval(), data


def trained_model() -> DigitsNet:
    """The trained net, for ``fxq quantize fxq.cli.demo:trained_model``."""
    return load_demo()[0]


def save_calibration(path: str) -> None:
    """Write the shipped calibration images as an input tensor (N, 1, 8, 8), for ``fxq quantize --calib``."""
    torch.save(to_input(load_demo()[1]["calib_images"]), path)


def serialized_kb(model: nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1024


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean() * 100)


def run_demo(progress: bool = True) -> int:
    import fxq
    from fxq.cli.demo_report import sqnr

    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
    start = time.perf_counter()
    model, data = load_demo()
    test, labels = to_input(data["test_images"]), data["test_labels"].long()
    calibration = list(to_input(data["calib_images"]).split(16))
    # the example input has the batch the model will run at: the cost model times each layer at that shape
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping("x86"), (test,))
    fxq.calibrate(prepared, calibration, progress=progress)
    quantized = fxq.convert_fx(prepared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: stable timings on a shared machine, and the same for both models
    with torch.no_grad():
        float_ms, int8_ms = median_ms(lambda: model(test)), median_ms(lambda: quantized(test))
    torch.set_num_threads(threads)
    with torch.no_grad():
        output_sqnr = sqnr(model(test), quantized(test))
    float_acc, int8_acc = accuracy(model, test, labels), accuracy(quantized, test, labels)
    float_kb, int8_kb = serialized_kb(model), serialized_kb(quantized)
    worst = fxq.compare(model, quantized, test.split(120))
    print(f"fxq demo: DigitsNet on scikit-learn digits, {len(labels)} held-out images, "
          f"{len(calibration)} calibration batches, x86 int8")
    print(f"  accuracy:           float {float_acc:.2f}%, int8 {int8_acc:.2f}% ({int8_acc - float_acc:+.2f} points)")
    print(f"  latency batch {len(labels)}, 1 thread: float {float_ms:.3f} ms, int8 {int8_ms:.3f} ms "
          f"({int8_ms / float_ms:.2f}x)")
    print(f"  model size:         float {float_kb:.1f} KB, int8 {int8_kb:.1f} KB ({int8_kb / float_kb:.2f}x)")
    print(f"  SQNR int8 vs float: {output_sqnr:.1f} dB (logits)")
    print("  five worst layers by SQNR:")
    print("\n".join("    " + line for line in worst.table(limit=5).splitlines()))
    print(f"  total time: {time.perf_counter() - start:.1f} s")
    return 0
