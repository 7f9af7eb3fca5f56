"""fxq.nn.weight_quantize.quantize_per_channel gives torch.quantize_per_channel's tensor bit for bit."""
import pytest
import torch

from fxq.nn.weight_quantize import quantize_per_channel


def _symmetric_scales(weight, axis):
    rows = weight.movedim(axis, 0).flatten(1)
    return (rows.abs().amax(1) / 127.5).clamp_min(1e-8), torch.zeros(rows.shape[0], dtype=torch.long)


def _assert_same(ours, theirs):
    assert ours.dtype == theirs.dtype and ours.qscheme() == theirs.qscheme()
    assert torch.equal(ours.int_repr(), theirs.int_repr())
    assert torch.equal(ours.q_per_channel_scales(), theirs.q_per_channel_scales())
    assert torch.equal(ours.q_per_channel_zero_points(), theirs.q_per_channel_zero_points())
    assert ours.q_per_channel_axis() == theirs.q_per_channel_axis()


@pytest.mark.parametrize("shape, axis", [((64, 32), 0), ((16, 8, 3, 3), 0), ((8, 4, 3, 3), 1), ((5, 7, 2, 3, 3), 0)])
def test_random_weights_match_torch(shape, axis):
    torch.manual_seed(sum(shape) + axis)
    spread = torch.logspace(-3, 1, shape[axis]).reshape([-1 if d == axis else 1 for d in range(len(shape))])
    weight = torch.randn(shape) * spread  # channels whose scales differ by 10^4
    scale, zero_point = _symmetric_scales(weight, axis)
    _assert_same(quantize_per_channel(weight, scale, zero_point, axis, torch.qint8),
                 torch.quantize_per_channel(weight, scale, zero_point, axis, torch.qint8))


def test_rounding_ties_and_clamping_match_torch():
    torch.manual_seed(1)
    scale = torch.rand(32) * 10 ** torch.empty(32).uniform_(-4, 1)
    steps = torch.randint(-140, 140, (32, 300)).float()
    weight = torch.cat([(steps + 0.5) * scale[:, None], steps * scale[:, None], steps * 3 * scale[:, None]], dim=1)
    zero_point = torch.zeros(32, dtype=torch.long)
    _assert_same(quantize_per_channel(weight, scale, zero_point, 0, torch.qint8),
                 torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8))


@pytest.mark.parametrize("case", ["nonzero zero point", "quint8"])
def test_other_cases_go_to_torch(case):
    weight, dtype = torch.randn(6, 4), torch.qint8
    scale, zero_point = _symmetric_scales(weight, 0)
    if case == "nonzero zero point":
        zero_point = torch.arange(6)
    else:
        dtype, zero_point = torch.quint8, torch.full((6,), 128)
    _assert_same(quantize_per_channel(weight, scale, zero_point, 0, dtype),
                 torch.quantize_per_channel(weight, scale, zero_point, 0, dtype))
