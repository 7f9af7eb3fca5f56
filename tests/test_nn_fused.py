"""fxq.nn.fused (fused float modules, BN folding) and fxq.nn.reference (simulated-quantization weights)."""
import copy

import pytest
import torch
from torch import nn

from fxq.nn import fused, reference
from nn_helpers import ao_nn, weight_qparams

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per:UserWarning")


def _trained_bn(bn: nn.Module) -> nn.Module:
    """A BN with non-trivial statistics and affine parameters, in eval mode."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


@pytest.mark.parametrize("conv, bn, shape", [
    (nn.Conv1d(3, 6, 3, bias=False), nn.BatchNorm1d(6), (2, 3, 10)),
    (nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(8), (2, 4, 9, 9)),
    (nn.Conv2d(3, 5, 1), nn.BatchNorm2d(5, affine=False), (1, 3, 4, 4)),
    (nn.Conv3d(2, 4, 2), nn.BatchNorm3d(4), (1, 2, 4, 4, 4)),
])
def test_fold_bn_into_conv_matches_conv_then_bn(conv, bn, shape):
    bn = _trained_bn(bn)
    before = copy.deepcopy((conv.state_dict(), bn.state_dict()))
    folded = fused.fold_bn_into_conv(conv, bn)
    x = torch.randn(shape)
    torch.testing.assert_close(folded(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    assert folded is not conv and folded.bias is not None
    # the inputs are untouched (no bias added to a bias-free conv, no weight change)
    assert all(torch.equal(a, b) for a, b in zip(before[0].values(), conv.state_dict().values()))
    assert len(before[0]) == len(conv.state_dict())


@pytest.mark.parametrize("bias", [True, False])
def test_fold_bn_into_linear_matches_linear_then_bn(bias):
    linear, bn = nn.Linear(5, 7, bias=bias), _trained_bn(nn.BatchNorm1d(7))
    folded = fused.fold_bn_into_linear(linear, bn)
    x = torch.randn(4, 5)
    torch.testing.assert_close(folded(x), bn(linear(x)), atol=1e-5, rtol=1e-5)
    assert (linear.bias is None) == (not bias)


def test_fold_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="8 output channels"):
        fused.fold_bn_into_conv(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(4).eval())


@pytest.mark.parametrize("cls, first, shape", [
    (fused.LinearReLU, nn.Linear(4, 6), (3, 4)),
    (fused.ConvReLU1d, nn.Conv1d(2, 3, 3), (1, 2, 8)),
    (fused.ConvReLU2d, nn.Conv2d(2, 3, 3), (1, 2, 6, 6)),
    (fused.ConvReLU3d, nn.Conv3d(2, 3, 2), (1, 2, 4, 4, 4)),
    (fused.BNReLU2d, _trained_bn(nn.BatchNorm2d(2)), (1, 2, 4, 4)),
    (fused.BNReLU3d, _trained_bn(nn.BatchNorm3d(2)), (1, 2, 3, 3, 3)),
])
def test_fused_module_equals_unfused(cls, first, shape):
    module = cls(first, nn.ReLU())
    x = torch.randn(shape)
    torch.testing.assert_close(module(x), torch.relu(first(x)), atol=1e-5, rtol=1e-5)
    assert isinstance(module, nn.Sequential) and module[0] is first


def test_fused_module_rejects_wrong_members():
    with pytest.raises(TypeError, match="LinearReLU expects \\(Linear, ReLU\\), got \\(Conv2d, ReLU\\)"):
        fused.LinearReLU(nn.Conv2d(1, 1, 1), nn.ReLU())


# --- reference modules ---------------------------------------------------------------------------

REFERENCE_CASES = [
    (reference.Linear, nn.Linear(6, 5), (3, 6)),
    (reference.Conv1d, nn.Conv1d(3, 4, 3, padding=1), (2, 3, 7)),
    (reference.Conv2d, nn.Conv2d(4, 6, 3, stride=2, groups=2), (1, 4, 8, 8)),
    (reference.Conv3d, nn.Conv3d(2, 3, 2, bias=False), (1, 2, 4, 4, 4)),
]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("cls, float_module, shape", REFERENCE_CASES)
def test_reference_matches_torch_ao_reference(cls, float_module, shape, per_channel):
    _, _, nnqr = ao_nn()
    qparams = weight_qparams(float_module.weight, per_channel)
    ours = cls.from_float(float_module, qparams)
    theirs = getattr(nnqr, cls.__name__).from_float(float_module, qparams)
    x = torch.randn(shape)
    assert torch.equal(ours(x), theirs(x))
    ours_q, theirs_q = ours.quantized_weight(), theirs.get_quantized_weight()
    assert torch.equal(ours_q.int_repr(), theirs_q.int_repr()) and ours_q.qscheme() == theirs_q.qscheme()


@pytest.mark.parametrize("cls, float_module, shape", REFERENCE_CASES)
def test_reference_forward_is_float_op_on_fake_quantized_weight(cls, float_module, shape):
    ours = cls.from_float(float_module, weight_qparams(float_module.weight, per_channel=True, symmetric=True))
    x = torch.randn(shape)
    fake = copy.deepcopy(float_module)
    with torch.no_grad():
        fake.weight.copy_(ours.quantized_weight().dequantize())
    assert torch.equal(ours(x), fake(x))
    assert ours.weight is not float_module.weight  # a copy, not shared
    assert 0 < (ours(x) - float_module(x)).abs().max() < 0.05


def test_reference_clamps_to_quant_range_and_round_trips_state_dict():
    linear = nn.Linear(4, 3)
    qparams = {**weight_qparams(linear.weight, per_channel=False), "quant_min": -10, "quant_max": 10}
    ours = reference.Linear.from_float(linear, qparams)
    ints = ours.quantized_weight().int_repr()
    assert ints.min() >= -10 and ints.max() <= 10 and ints.abs().max() == 10
    fresh = reference.Linear(4, 3)
    fresh.load_state_dict(ours.state_dict())
    assert torch.equal(fresh.quantized_weight().int_repr(), ints)
    per_channel = reference.Linear.from_float(linear, weight_qparams(linear.weight, per_channel=True))
    fresh.load_state_dict(per_channel.state_dict())
    assert fresh.weight_qscheme == torch.per_channel_affine and fresh.weight_scale.shape == (3,)
    assert torch.equal(fresh.quantized_weight().int_repr(), per_channel.quantized_weight().int_repr())


def test_reference_repr_and_bad_qparams():
    ref = reference.Conv2d.from_float(nn.Conv2d(2, 2, 1), weight_qparams(torch.ones(2, 2, 1, 1), True, True))
    assert "weight_qscheme=torch.per_channel_symmetric, weight_dtype=torch.qint8" in repr(ref)
    no_axis = weight_qparams(torch.ones(2, 2), per_channel=True)
    del no_axis["axis"]
    with pytest.raises(KeyError, match="axis"):
        reference.Linear.from_float(nn.Linear(2, 2), no_axis)
    with pytest.raises(TypeError, match="expects Linear"):
        reference.Linear.from_float(nn.Conv2d(1, 1, 1), weight_qparams(torch.ones(1), False))
