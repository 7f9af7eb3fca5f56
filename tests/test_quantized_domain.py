"""Padding, selection and shape ops run on int8 tensors: no dequantize -> float op -> quantize detour."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr

# Both lowerings' spellings: the quantized one's ``x.dequantize()``, the plain one's fxq op on uint8.
DEQUANTIZES = (".dequantize()", "dequantize_per_tensor(")


def dequantizes(code: str) -> int:
    return sum(code.count(spelling) for spelling in DEQUANTIZES)


class Between(nn.Module):
    """conv -> op -> conv: the op's input and output should both stay int8."""

    def __init__(self, op, channels_out=8):
        super().__init__()
        self.conv1, self.op, self.conv2 = nn.Conv2d(3, 8, 3), op, nn.Conv2d(channels_out, 4, 1)

    def forward(self, x):
        return self.conv2(self.op(self.conv1(x)))


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


OPS = {
    "F.pad": (lambda: Fn(lambda x: F.pad(x, (1, 1, 2, 0))), 8),
    "F.pad value": (lambda: Fn(lambda x: F.pad(x, (1, 1), value=0.25)), 8),
    "ZeroPad2d": (lambda: nn.ZeroPad2d(1), 8),
    "ConstantPad2d": (lambda: nn.ConstantPad2d(2, 0.5), 8),
    "slice": (lambda: Fn(lambda x: x[:, :4, 1:, ::2]), 4),
    "narrow": (lambda: Fn(lambda x: x.narrow(1, 2, 4)), 4),
    "index_select": (lambda: Fn(lambda x: x.index_select(1, torch.tensor([0, 2, 4, 6]))), 4),
    "repeat": (lambda: Fn(lambda x: x.repeat(1, 2, 1, 1)), 16),
    "interpolate": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")), 8),
    "pixel_shuffle": (lambda: nn.PixelShuffle(2), 2),
    "flip": (lambda: Fn(lambda x: x.flip(-1)), 8),
}


@pytest.mark.parametrize("name", list(OPS))
def test_op_between_convs_stays_int8(name):
    torch.manual_seed(0)
    build, channels = OPS[name]
    model = Between(build(), channels).eval()
    batches = [torch.randn(2, 3, 10, 10) for _ in range(4)]
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (batches[0],))
    for batch in batches:
        prepared(batch)
    quantized = fxq.convert_fx(prepared)
    # At most one dequantize, at the model's output: the plain lowering folds even that one into conv2 (fp32 out).
    assert dequantizes(quantized.code) <= 1, quantized.code
    assert quantized.code.count("quantize_per_tensor(") - quantized.code.count("dequantize_per_tensor(") == 1
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert sqnr(model(x), quantized(x)) > 25  # two int8 convs, random weights


def test_stack_of_quantized_branches():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return torch.stack([self.a(x), self.b(x)], dim=1)

    model, x = Stack().eval(), torch.randn(16, 8)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    assert "torch.stack" in quantized.code and dequantizes(quantized.code) <= 1
    assert sqnr(model(x).detach(), quantized(x)) > 30


def test_conv3d_relu_before_a_float_op_keeps_its_relu():
    # plain Conv3d has no relu post-op: the lowering folds the ReLU into the uint8 output's saturation at zero, so
    # plain_fuse must not turn that output into fp32 (it did, and dropped the ReLU) when a float op reads it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3), nn.ReLU(), nn.MaxPool3d((1, 2, 2)), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    batches = [torch.randn(2, 3, 4, 8, 8) for _ in range(4)]
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (batches[0],))
    for batch in batches:
        prepared(batch)
    quantized = fxq.convert_fx(prepared)
    x, seen = torch.randn(2, 3, 4, 8, 8), []
    quantized.get_submodule("0").register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        assert sqnr(model(x), quantized(x)) > 25
    assert seen[0].float().min() >= 0  # the conv's output is the ReLU's
