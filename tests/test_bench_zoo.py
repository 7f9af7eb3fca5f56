"""tools/zoo.py's EfficientNet-style models: the architecture issue 17 asks for, and fxq quantizes them."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import sqnr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, where the `tools` package lives
from tools.zoo import MODELS, MBConv, SqueezeExcitation  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.mark.parametrize("name, activation", [("efficientnet_lite", nn.ReLU6), ("efficientnet_b0", nn.SiLU)])
def test_efficientnet_is_mbconv_with_3x3_and_5x5_depthwise_and_se(name, activation):
    model, (image,) = MODELS[name]()
    assert image.shape == (1, 3, 224, 224) and model(image).shape == (1, 1000)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert {m.kernel_size for m in depthwise} == {(3, 3), (5, 5)}
    assert sum(isinstance(m, MBConv) for m in model.modules()) == 16  # EfficientNet-B0's block count
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == 16
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 40
    activations = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU6, nn.SiLU, nn.ReLU))}
    assert activations == {activation}


def test_efficientnet_is_seeded():
    first, _ = MODELS["efficientnet_lite"]()
    second, (image,) = MODELS["efficientnet_lite"]()
    assert torch.equal(first(image), second(image))


def test_fxq_quantizes_efficientnet_lite(monkeypatch):
    import fxq

    monkeypatch.setenv("FXQ_CHECK_PASSES", "0")  # about the model, not the passes: skip the per-pass lint (10x slower)
    model, _ = MODELS["efficientnet_lite"]()
    small = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # the pooled head takes any size
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping("x86"), (small,))
    prepared(small)
    with torch.no_grad():
        assert sqnr(model(small), fxq.convert_fx(prepared)(small)) > 20
