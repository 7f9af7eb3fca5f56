"""Fusion patterns: module and functional spellings, fused kernels, torch.ao parity, and bounded activations."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr, torch_ao

# Fused kernels are checked against PyTorch AO's quantized modules and outputs: quantized-tensor lowering.
pytestmark = pytest.mark.usefixtures("quantized_lowering")


def _randomise_bn(model):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


class ConvBnRelu(nn.Module):
    def __init__(self, relu):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), relu

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class LinearRelu(nn.Module):
    def __init__(self, relu):
        super().__init__()
        self.fc, self.relu = nn.Linear(16, 16), relu

    def forward(self, x):
        return self.relu(self.fc(x))


class AddRelu(nn.Module):
    def __init__(self, relu):
        super().__init__()
        self.a, self.b, self.relu = nn.Linear(16, 16), nn.Linear(16, 16), relu

    def forward(self, x):
        return self.relu(self.a(x) + self.b(x))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


RELU_SPELLINGS = {
    "nn.ReLU": lambda: nn.ReLU(),
    "nn.ReLU(inplace)": lambda: nn.ReLU(inplace=True),
    "F.relu": lambda: Lambda(F.relu),
    "torch.relu": lambda: Lambda(torch.relu),
    "F.relu(inplace)": lambda: Lambda(lambda x: F.relu(x, inplace=True)),
}
CASES = {
    "conv-bn-relu": (ConvBnRelu, lambda: torch.randn(4, 3, 10, 10), "QuantizedConvReLU2d"),
    "linear-relu": (LinearRelu, lambda: torch.randn(16, 16), "QuantizedLinearReLU"),
    "add-relu": (AddRelu, lambda: torch.randn(16, 16), "torch.ops.quantized.add_relu"),
}


def _both(model, example, calibration):
    tao = torch_ao()
    ours = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (example,))
    theirs = tao.quantize_fx.prepare_fx(copy.deepcopy(model), tao.quantization.get_default_qconfig_mapping(), (example,))
    for batch in calibration:
        ours(batch)
        theirs(batch)
    return fxq.convert_fx(ours), tao.quantize_fx.convert_fx(theirs)


@pytest.mark.parametrize("spelling", list(RELU_SPELLINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_fused_kernel_and_torch_ao_parity(case, spelling):
    torch.manual_seed(0)
    build, make_input, kernel = CASES[case]
    model = _randomise_bn(build(RELU_SPELLINGS[spelling]()))
    calibration = [make_input() for _ in range(4)]
    ours, theirs = _both(model, calibration[0], calibration)
    assert kernel in repr(ours) + ours.code
    x = make_input()
    with torch.no_grad():
        if spelling == "torch.relu" and case != "add-relu":  # torch.ao does not fuse this spelling: fxq does better
            assert sqnr(model(x), ours(x)) > sqnr(model(x), theirs(x))
        else:
            assert sqnr(theirs(x), ours(x)) >= 40


@pytest.mark.parametrize("fuser", ["ConvReLU2d", "LinearReLU", "BNReLU2d"])
def test_fused_float_modules_equal_the_unfused_ones(fuser):
    torch.manual_seed(0)
    model, x = {
        "ConvReLU2d": (nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU()), torch.randn(2, 3, 8, 8)),
        "LinearReLU": (nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU()), torch.randn(4, 5)),
        "BNReLU2d": (nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()), torch.randn(2, 3, 4, 4)),
    }[fuser]
    model = _randomise_bn(model)
    fused = fxq.fuse_fx(model)
    assert len(list(fused.graph.nodes)) < len(list(torch.fx.symbolic_trace(model).graph.nodes))
    assert (fused(x) - model(x)).abs().max() <= 1e-5


def test_linear_bn1d_relu_fuses_into_one_linear_relu_as_torch_ao_does():
    # folded to Linear with a separate ReLU, the linear output was quantized over its negative half too (-1.4 dB)
    torch.manual_seed(0)
    model = _randomise_bn(nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)))
    fused = fxq.fuse_fx(model)
    assert [type(m).__name__ for m in fused.children()] == ["LinearReLU", "Linear"]
    calibration = [torch.randn(16, 16) for _ in range(4)]
    ours, theirs = _both(model, calibration[0], calibration)
    assert "QuantizedLinearReLU" in repr(ours) and "relu" not in ours.code
    x = torch.randn(16, 16)
    with torch.no_grad():
        assert sqnr(theirs(x), ours(x)) >= 40


BOUNDED = {
    "nn.ReLU6": lambda: nn.ReLU6(),
    "F.relu6": lambda: Lambda(F.relu6),
    "nn.Hardtanh": lambda: nn.Hardtanh(-2.0, 2.0),
    "clamp": lambda: Lambda(lambda x: torch.clamp(x, 0.0, 6.0)),
    "Tensor.clamp": lambda: Lambda(lambda x: x.clamp(min=-1.0, max=3.0)),
}


@pytest.mark.parametrize("activation", list(BOUNDED))
def test_bounded_activation_folds_into_the_conv_output_range(activation):
    torch.manual_seed(0)
    model = _randomise_bn(ConvBnRelu(BOUNDED[activation]()))
    with torch.no_grad():
        model.conv.weight.mul_(4.0)  # outputs well past the clamp, as in MobileNet's ReLU6
    calibration = [torch.randn(4, 3, 10, 10) for _ in range(4)]
    ours, theirs = _both(model, calibration[0], calibration)
    # the conv's int8 output already has the clamp's (narrower) range; the clamp then runs on int8 values
    assert ours.conv.scale < theirs.conv.scale
    assert ours.code.count(".dequantize()") == 1  # only at the output: the clamp runs in the quantized domain
    x = torch.randn(8, 3, 10, 10)
    with torch.no_grad():
        reference = model(x)
        ours_db, theirs_db = sqnr(reference, ours(x)), sqnr(reference, theirs(x))
    assert ours_db >= theirs_db + 3  # torch.ao quantizes the conv output with its own, wider range



def test_clamp_whose_range_misses_zero_stays_exact():
    model = _randomise_bn(ConvBnRelu(Lambda(lambda x: torch.clamp(x, 0.5, 2.0))))
    calibration = [torch.randn(4, 3, 10, 10) for _ in range(4)]
    ours, _ = _both(model, calibration[0], calibration)
    x = torch.randn(4, 3, 10, 10)
    assert ours(x).min() >= 0.5 - 0.02  # the clamp still applies (on the int8 grid)
    assert sqnr(model(x).detach(), ours(x)) > 30


def test_a_pattern_on_a_value_with_several_users_is_skipped_with_a_debug_log(caplog):
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # bn folded into conv would change what the add reads

    model = TwoReaders().eval()
    with caplog.at_level(logging.DEBUG, logger="fxq.passes.fuse"):
        fused = fxq.fuse_fx(model)
    assert type(fused.get_submodule("conv")) is nn.Conv2d and type(fused.get_submodule("bn")) is nn.BatchNorm2d
    assert any("skipped at conv" in r.getMessage() and "2 users" in r.getMessage() for r in caplog.records)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(fused(x), model(x))


@pytest.mark.parametrize("layers", [
    lambda: nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8)),
    lambda: nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8, affine=False)),
    lambda: nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6)),
], ids=["conv2d-no-bias", "conv1d-bn-without-affine", "linear-bn"])
def test_batch_norm_folding_is_bit_identical_to_torch_ao(layers):
    ao = torch_ao()
    torch.manual_seed(0)
    model = _randomise_bn(layers())
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine:
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
    ours, theirs = fxq.fuse_fx(model).get_submodule("0"), ao.quantize_fx.fuse_fx(model).get_submodule("0")
    assert torch.equal(ours.weight, theirs.weight)  # rounding differences here flip int8 weights downstream
    assert torch.equal(ours.bias, theirs.bias)
