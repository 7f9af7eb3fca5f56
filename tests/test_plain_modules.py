"""fxq.nn.plain Linear / Conv: the same integers as fxq.nn.quantized from the same reference module and qparams,
post-ops and residual adds against float math, and no quantized tensor anywhere."""
import pytest
import torch
import torch.nn.functional as F

from conftest import sqnr
from fxq.nn import plain
from fxq.nn import quantized as nnq
from no_quantized_tensors import no_quantized_tensors
from plain_helpers import as_quantized, dequantized, reference_of, requantized, seven_bit

X_SCALE, X_ZP, Y_SCALE, Y_ZP = 0.05, 60, 0.08, 120


@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_matches_quantized_linear(per_channel):
    ref = reference_of(torch.nn.Linear(64, 24), per_channel)
    x = seven_bit(3, 7, 64)  # a [batch, seq, in] input: the kernel takes any rank
    ours = plain.Linear.from_reference(ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP)(x)
    theirs = nnq.Linear.from_reference(ref, Y_SCALE, Y_ZP)(as_quantized(x.reshape(-1, 64), X_SCALE, X_ZP))
    assert ours.dtype == torch.uint8 and ours.shape == (3, 7, 24)
    assert torch.equal(ours.reshape(-1, 24), theirs.int_repr())


@pytest.mark.parametrize("per_channel", [True, False])
def test_linear_weight_is_the_reference_weight(per_channel):
    ref = reference_of(torch.nn.Linear(16, 8), per_channel)
    module = plain.Linear.from_reference(ref, X_SCALE, X_ZP, None)
    assert torch.equal(module.weight, ref.quantized_weight().int_repr())
    assert module.weight.dtype == torch.int8 and module.weight_scale.shape == (8,)


LINEAR_POST_OPS = [
    # (post_op, args, algorithm, float function)
    ("relu", (), "", F.relu),
    ("leaky_relu", (0.1,), "", lambda t: F.leaky_relu(t, 0.1)),
    ("tanh", (), "", torch.tanh),
    ("gelu", (), "none", F.gelu),
    ("gelu", (), "tanh", lambda t: F.gelu(t, approximate="tanh")),
    ("hardtanh", (-0.5, 0.5), "", lambda t: F.hardtanh(t, -0.5, 0.5)),
    ("hardswish", (), "", F.hardswish),
    ("swish", (), "", F.silu),
]


@pytest.mark.parametrize("post_op, args, algorithm, function", LINEAR_POST_OPS)
def test_linear_post_op_matches_float_math(post_op, args, algorithm, function):
    ref = reference_of(torch.nn.Linear(32, 16))
    x = seven_bit(5, 32)
    expected = function(ref(dequantized(x, X_SCALE, X_ZP)))
    float_out = plain.Linear.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op, args, algorithm)(x)
    assert float_out.dtype == torch.float32
    torch.testing.assert_close(float_out, expected, atol=1e-4, rtol=1e-4)
    uint8_out = plain.Linear.from_reference(ref, X_SCALE, X_ZP, 0.02, 128, post_op, args, algorithm)(x)
    assert (uint8_out.float() - requantized(expected, 0.02, 128)).abs().max() <= 1  # a tie may round either way


@pytest.mark.parametrize("relu", [False, True])
def test_linear_binary_sum_matches_float_math(relu):
    ref = reference_of(torch.nn.Linear(32, 16))
    x, other = seven_bit(4, 32), torch.randint(0, 256, (4, 16), dtype=torch.uint8)
    expected = ref(dequantized(x, X_SCALE, X_ZP)) + dequantized(other, 0.03, 100)
    expected = expected.relu() if relu else expected
    post_op = "relu" if relu else "none"
    # uint8 residual, uint8 output ("sum" on a copy: the residual the caller passed is left alone)
    module = plain.LinearBinary.from_reference(ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, post_op, other_scale=0.03,
                                               other_zero_point=100)
    kept = other.clone()
    assert (module(x, other).float() - requantized(expected, Y_SCALE, Y_ZP)).abs().max() <= 1
    assert torch.equal(other, kept)
    # uint8 residual, float output; float residual, float and uint8 outputs ("add")
    module = plain.LinearBinary.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op, other_scale=0.03,
                                               other_zero_point=100)
    torch.testing.assert_close(module(x, other), expected, atol=1e-4, rtol=1e-4)
    float_other = dequantized(other, 0.03, 100)
    module = plain.LinearBinary.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op)
    torch.testing.assert_close(module(x, float_other), expected, atol=1e-4, rtol=1e-4)
    module = plain.LinearBinary.from_reference(ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, post_op)
    assert (module(x, float_other).float() - requantized(expected, Y_SCALE, Y_ZP)).abs().max() <= 1


CONVS = [
    # (float conv, plain class, quantized class, input shape)
    (lambda: torch.nn.Conv1d(8, 12, 3, padding=1), plain.Conv1d, nnq.Conv1d, (2, 8, 11)),
    (lambda: torch.nn.Conv2d(8, 12, 3, padding=1), plain.Conv2d, nnq.Conv2d, (2, 8, 9, 9)),
    (lambda: torch.nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=4), plain.Conv2d, nnq.Conv2d,
     (1, 8, 10, 10)),
    (lambda: torch.nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False), plain.Conv2d, nnq.Conv2d, (1, 8, 7, 7)),
    (lambda: torch.nn.Conv3d(4, 6, 3, padding=1), plain.Conv3d, nnq.Conv3d, (1, 4, 4, 5, 6)),
]


@pytest.mark.parametrize("make, plain_class, quantized_class, shape", CONVS)
def test_conv_matches_quantized_conv(make, plain_class, quantized_class, shape):
    ref = reference_of(make())
    x = seven_bit(*shape)
    ours = plain_class.from_reference(ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP)(x)
    theirs = quantized_class.from_reference(ref, Y_SCALE, Y_ZP)(as_quantized(x, X_SCALE, X_ZP)).int_repr()
    assert ours.shape == theirs.shape and ours.dtype == torch.uint8
    if not torch.equal(ours, theirs):  # another kernel may round a tie the other way
        assert (ours.int() - theirs.int()).abs().max() <= 1
        assert sqnr(dequantized(theirs, Y_SCALE, Y_ZP), dequantized(ours, Y_SCALE, Y_ZP)) >= 40


CONV_POST_OPS = [
    ("relu", (), F.relu),
    ("hardtanh", (-0.5, 0.5), lambda t: F.hardtanh(t, -0.5, 0.5)),
    ("hardswish", (), F.hardswish),
    ("swish", (), F.silu),
]


@pytest.mark.parametrize("post_op, args, function", CONV_POST_OPS)
def test_conv_post_op_matches_float_math(post_op, args, function):
    ref = reference_of(torch.nn.Conv2d(8, 8, 3, padding=1))
    x = seven_bit(1, 8, 6, 6)
    expected = function(ref(dequantized(x, X_SCALE, X_ZP)))
    float_out = plain.Conv2d.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op, args)(x)
    torch.testing.assert_close(float_out, expected, atol=1e-4, rtol=1e-4)
    uint8_out = plain.Conv2d.from_reference(ref, X_SCALE, X_ZP, 0.02, 128, post_op, args)(x)
    assert (uint8_out.float() - requantized(expected, 0.02, 128)).abs().max() <= 1


@pytest.mark.parametrize("binary_class, float_conv, shape", [
    (plain.ConvBinary2d, torch.nn.Conv2d(8, 8, 3, padding=1), (2, 8, 6, 6)),
    (plain.ConvBinary1d, torch.nn.Conv1d(8, 8, 3, padding=1, stride=2), (2, 8, 12)),
])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_binary_sum_matches_float_math(binary_class, float_conv, shape, relu):
    ref = reference_of(float_conv)
    x = seven_bit(*shape)
    out_shape = ref(dequantized(x, X_SCALE, X_ZP)).shape
    accum = torch.randint(0, 256, out_shape, dtype=torch.uint8)  # a contiguous residual: copied channels_last
    expected = ref(dequantized(x, X_SCALE, X_ZP)) + dequantized(accum, 0.03, 100)
    expected = expected.relu() if relu else expected
    post_op = "relu" if relu else "none"
    module = binary_class.from_reference(ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, post_op, accum_scale=0.03,
                                         accum_zero_point=100)
    kept = accum.clone()
    y = module(x, accum)
    assert torch.equal(accum, kept)  # the kernel sums in place: the module gives it a copy
    assert y.shape == out_shape and (y.float() - requantized(expected, Y_SCALE, Y_ZP)).abs().max() <= 1
    module = binary_class.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op, accum_scale=0.03, accum_zero_point=100)
    torch.testing.assert_close(module(x, accum), expected, atol=1e-4, rtol=1e-4)
    module = binary_class.from_reference(ref, X_SCALE, X_ZP, None, 0, post_op)  # a float residual
    torch.testing.assert_close(module(x, dequantized(accum, 0.03, 100)), expected, atol=1e-4, rtol=1e-4)


def test_building_and_running_create_no_quantized_tensor():
    linear_ref, conv_ref = reference_of(torch.nn.Linear(16, 8)), reference_of(torch.nn.Conv2d(4, 4, 3, padding=1))
    x, image = seven_bit(2, 16), seven_bit(1, 4, 5, 5)
    with no_quantized_tensors() as mode:
        plain.Linear.from_reference(linear_ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, "relu")(x)
        plain.LinearBinary.from_reference(linear_ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, other_scale=0.1)(x, x[:, :8])
        plain.Conv2d.from_reference(conv_ref, X_SCALE, X_ZP, None)(image)
        plain.ConvBinary2d.from_reference(conv_ref, X_SCALE, X_ZP, Y_SCALE, Y_ZP, accum_scale=0.1)(image, image)
        plain.DynamicLinear.from_reference(linear_ref, per_token=True)(torch.randn(3, 16))
    assert any("onednn.qlinear_pointwise" in op for op in mode.ops_seen)  # the mode really saw the kernels
