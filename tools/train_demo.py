"""Train the ``fxq demo`` net on scikit-learn's digits and write fxq/cli/data/digits_cnn.pt.

The only script that needs scikit-learn (for the data set): ``pip install scikit-learn``, then
``python tools/train_demo.py``. Deterministic: a fixed split and seed give the same file contents.
The file holds the float state_dict, 128 training images for calibration and the 360 held-out test images
(uint8 pixels 0..16, a few KB).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fxq.cli.demo import DATA_FILE, DigitsNet, accuracy, to_input  # noqa: E402

TEST_SIZE, CALIBRATION_SIZE, EPOCHS = 360, 128, 40


def load_digits_split() -> tuple:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.uint8)
    labels = torch.tensor(digits.target, dtype=torch.uint8)
    index = torch.arange(len(labels)).numpy()
    train, test = train_test_split(index, test_size=TEST_SIZE, random_state=0, stratify=digits.target)
    return images[train], labels[train], images[test], labels[test]


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    inputs, targets = to_input(images), labels.long()
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(targets)).split(64):
            shifted = torch.roll(inputs[batch], shifts=tuple(torch.randint(-1, 2, (2,)).tolist()), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(shifted), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()


def main() -> None:
    torch.manual_seed(0)
    train_images, train_labels, test_images, test_labels = load_digits_split()
    model = DigitsNet()
    train(model, train_images, train_labels)
    print(f"float test accuracy: {accuracy(model, to_input(test_images), test_labels.long()):.2f}%")
    calibration = train_images[torch.randperm(len(train_labels))[:CALIBRATION_SIZE]]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "test_images": test_images.clone(), "test_labels": test_labels.clone(),
                "calib_images": calibration.clone()}, DATA_FILE)
    print(f"wrote {DATA_FILE} ({DATA_FILE.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
