"""fxq.nn.plain refuses what its kernels cannot do with an error that says what to do instead."""
import pytest
import torch

from fxq.nn import plain, reference
from plain_helpers import reference_of, seven_bit


def test_float_input_names_the_quantize_op():
    linear = plain.Linear.from_reference(reference_of(torch.nn.Linear(8, 4)), 0.05, 60, None)
    with pytest.raises(TypeError, match=r"got torch.float32.*fxq's quantize op"):
        linear(torch.randn(2, 8))


def test_quantized_tensor_input_is_refused():
    conv = plain.Conv2d.from_reference(reference_of(torch.nn.Conv2d(3, 4, 3)), 0.05, 60, None)
    q = torch.quantize_per_tensor(torch.randn(1, 3, 5, 5), 0.05, 60, torch.quint8)
    with pytest.raises(TypeError, match=r"got torch.quint8.*int_repr"):
        conv(q)


def test_wrong_shapes():
    linear = plain.Linear.from_reference(reference_of(torch.nn.Linear(8, 4)), 0.05, 60, None)
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        linear(seven_bit(2, 7))
    conv = plain.Conv2d.from_reference(reference_of(torch.nn.Conv2d(3, 4, 3)), 0.05, 60, None)
    with pytest.raises(ValueError, match="expected input"):
        conv(seven_bit(3, 5, 5))
    block = plain.ConvBinary2d.from_reference(reference_of(torch.nn.Conv2d(3, 4, 3)), 0.05, 60, 0.1, 0,
                                              accum_scale=0.1)
    with pytest.raises(ValueError, match=r"residual must have the conv output's shape \(1, 4, 3, 3\)"):
        block(seven_bit(1, 3, 5, 5), seven_bit(1, 4, 5, 5))
    with pytest.raises(TypeError, match="residual must be torch.uint8"):
        block(seven_bit(1, 3, 5, 5), torch.zeros(1, 4, 3, 3))


def test_asymmetric_weights_are_refused():
    float_linear = torch.nn.Linear(8, 4)
    qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": torch.tensor(0.01),
               "zero_point": torch.tensor(3)}
    ref = reference.Linear.from_float(float_linear, qparams)
    assert not plain.Linear.accepts(ref)
    with pytest.raises(ValueError, match="zero points are not all 0"):
        plain.Linear.from_reference(ref, 0.05, 60, None)


def test_conv_configurations_the_kernel_cannot_do():
    circular = reference_of(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"))
    assert not plain.Conv2d.accepts(circular)
    with pytest.raises(ValueError, match="padding_mode='circular'"):
        plain.Conv2d.from_reference(circular, 0.05, 60, None)
    even_same = reference_of(torch.nn.Conv2d(3, 4, 2, padding="same"))
    assert not plain.Conv2d.accepts(even_same)
    assert plain.Conv2d.accepts(reference_of(torch.nn.Conv2d(3, 4, 3, padding="same")))
    assert not plain.Conv2d.accepts(reference_of(torch.nn.Linear(3, 4)))


def test_post_ops_are_checked():
    ref = reference_of(torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match="not one the kernel fuses"):
        plain.Linear.from_reference(ref, 0.05, 60, None, post_op="sigmoid")
    with pytest.raises(ValueError, match="takes 2 argument"):
        plain.Linear.from_reference(ref, 0.05, 60, None, post_op="hardtanh")
    with pytest.raises(ValueError, match="not one the kernel fuses"):
        plain.Conv2d.from_reference(reference_of(torch.nn.Conv2d(3, 4, 3)), 0.05, 60, None, post_op="gelu")
    with pytest.raises(ValueError, match="float32 residual"):  # the kernel gets this pairing wrong
        plain.ConvBinary2d.from_reference(reference_of(torch.nn.Conv2d(3, 4, 3)), 0.05, 60, 0.1, 0)


def test_from_reference_wants_a_reference_module():
    with pytest.raises(TypeError, match="fxq.nn.reference.Linear"):
        plain.Linear.from_reference(torch.nn.Linear(8, 4), 0.05, 60, None)


def test_dynamic_linear_wants_float_input():
    dynamic = plain.DynamicLinear.from_float(torch.nn.Linear(8, 4))
    with pytest.raises(TypeError, match="float tensor"):
        dynamic(seven_bit(2, 8))
