"""fxq.nn.plain modules survive torch.save, pickle, deepcopy and state_dict round trips; the packed weight is
rebuilt afterwards (it is an mkldnn tensor that cannot be saved, and its layout belongs to the CPU)."""
import copy
import io
import pickle

import pytest
import torch

from conftest import saved_and_loaded
from fxq.nn import plain
from plain_helpers import reference_of, seven_bit


def _modules_and_inputs():
    linear_ref = reference_of(torch.nn.Linear(16, 8))
    conv_ref = reference_of(torch.nn.Conv2d(4, 6, 3, padding=1))
    x, image = seven_bit(3, 16), seven_bit(1, 4, 5, 5)
    return [
        (plain.Linear.from_reference(linear_ref, 0.05, 60, 0.08, 120, "gelu", (), "tanh"), (x,)),
        (plain.Linear.from_reference(linear_ref, 0.05, 60, None), (x,)),
        (plain.LinearBinary.from_reference(linear_ref, 0.05, 60, 0.08, 120, "relu", other_scale=0.1,
                                           other_zero_point=3), (x, x[:, :8].clone())),
        (plain.Conv2d.from_reference(conv_ref, 0.05, 60, 0.08, 120, "hardtanh", (-1.0, 1.0)), (image,)),
        (plain.ConvBinary2d.from_reference(conv_ref, 0.05, 60, None, accum_scale=0.1),
         (image, seven_bit(1, 6, 5, 5))),
        (plain.DynamicLinear.from_reference(linear_ref, per_token=True), (torch.randn(3, 16),)),
    ]


def _pickled(module):
    return pickle.loads(pickle.dumps(module))


@pytest.mark.parametrize("round_trip", [saved_and_loaded, copy.deepcopy, _pickled], ids=["save", "deepcopy", "pickle"])
def test_round_trip_gives_identical_outputs(round_trip):
    for module, inputs in _modules_and_inputs():
        expected = module(*inputs)  # packs the weight first: the copy must not carry the packed tensor
        assert module._packed is not None
        copied = round_trip(module)
        assert copied._packed is None
        assert torch.equal(copied(*inputs), expected), type(module).__name__


def test_state_dict_into_a_fresh_module():
    for module, inputs in _modules_and_inputs():
        expected = module(*inputs)
        fresh = _fresh_like(module)
        fresh(*inputs)  # packed with its own (zero) weight: load must invalidate that
        fresh.load_state_dict(module.state_dict())
        assert torch.equal(fresh(*inputs), expected), type(module).__name__
        assert repr(fresh) == repr(module)


def _fresh_like(module):
    """A module of the same class and shape built with default arguments: the state_dict fills in the rest."""
    if isinstance(module, plain.DynamicLinear):
        return plain.DynamicLinear(module.in_features, module.out_features)
    if isinstance(module, plain.LinearBinary):  # the residual's dtype is part of the structure: it takes one
        return plain.LinearBinary(module.in_features, module.out_features, other_scale=module.other_scale)
    if isinstance(module, plain.Linear):
        return type(module)(module.in_features, module.out_features)
    if isinstance(module, plain.ConvBinary2d):
        return plain.ConvBinary2d(module.in_channels, module.out_channels, module.kernel_size,
                                  padding=module.padding, accum_scale=module.accum_scale)
    return type(module)(module.in_channels, module.out_channels, module.kernel_size, padding=module.padding)


def test_state_dict_restores_qparams_and_geometry():
    # activation qparams, post-op and stride/padding/dilation travel as extra state
    module, (image,) = _modules_and_inputs()[3]
    fresh = plain.Conv2d(module.in_channels, module.out_channels, module.kernel_size)
    fresh.load_state_dict(module.state_dict())
    assert (fresh.padding, fresh.post_op, fresh.input_zero_point) == ((1, 1), "hardtanh", 60)
    assert torch.equal(fresh(image), module(image))


def test_state_dict_holds_the_int8_weight_as_buffers():
    module, _ = _modules_and_inputs()[0]
    state = module.state_dict()
    assert state["weight"].dtype == torch.int8
    assert state["weight_scale"].dtype == torch.float32 and state["weight_zero_point"].dtype == torch.long
    assert state["bias"].dtype == torch.float32
    buffer = io.BytesIO()
    torch.save(state, buffer)  # weights_only loading works: only plain tensors and builtins
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


def test_changing_the_weight_repacks():
    module, (x,) = _modules_and_inputs()[1]
    before = module(x)
    with torch.no_grad():
        module.weight.neg_()
    assert torch.allclose(module(x) - module.bias, -(before - module.bias), atol=1e-4)


def test_setting_a_qparam_or_post_op_after_a_call_takes_effect():
    # the kernel arguments are cached between calls: any attribute write must rebuild them
    module, (x,) = _modules_and_inputs()[1]
    before = module(x)
    module.post_op = "relu"
    assert torch.equal(module(x), before.clamp(min=0))
    module.post_op, module.bias = "none", torch.zeros_like(module.bias)
    assert not torch.equal(module(x), before)


def test_replacing_the_weight_buffer_repacks():
    module, (x,) = _modules_and_inputs()[1]
    before = module(x)
    module.weight = -module.weight  # a new tensor, version 0 like the old one
    assert torch.allclose(module(x) - module.bias, -(before - module.bias), atol=1e-4)
