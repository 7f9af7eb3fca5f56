"""fxq.nn.quantized modules: bit-identical to torch.ao's, and serialisable every way torch offers."""
import copy
import io

import pytest
import torch
from torch import nn

from fxq.nn import fused, quantized as nnq, reference
from conftest import saved_and_loaded
from nn_helpers import ao_nn, assert_same_quantized, quantized_input, weight_qparams

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per:UserWarning",
                                        "ignore:TypedStorage is deprecated:UserWarning")

# (our quantized class, its torch.ao (package, name), float module, input shape, wrap in ReLU sequence)
WEIGHTED_CASES = [
    (nnq.Linear, ("nnq", "Linear"), lambda: nn.Linear(16, 8), (4, 16)),
    (nnq.LinearReLU, ("nniq", "LinearReLU"), lambda: nn.Linear(16, 8, bias=False), (2, 3, 16)),
    (nnq.Conv1d, ("nnq", "Conv1d"), lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 11)),
    (nnq.Conv2d, ("nnq", "Conv2d"), lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2), (1, 4, 9, 9)),
    (nnq.Conv3d, ("nnq", "Conv3d"), lambda: nn.Conv3d(2, 4, 2, stride=(1, 2, 1), bias=False), (1, 2, 4, 5, 4)),
    (nnq.ConvReLU1d, ("nniq", "ConvReLU1d"), lambda: nn.Conv1d(3, 3, 3, groups=3), (2, 3, 8)),
    (nnq.ConvReLU2d, ("nniq", "ConvReLU2d"), lambda: nn.Conv2d(3, 5, (3, 1), stride=2), (1, 3, 8, 8)),
    (nnq.ConvReLU3d, ("nniq", "ConvReLU3d"), lambda: nn.Conv3d(2, 3, 3, padding=1), (1, 2, 4, 4, 4)),
]
_REFERENCE = {1: reference.Conv1d, 2: reference.Conv2d, 3: reference.Conv3d}


def _references(float_module: nn.Module, per_channel: bool):
    """(our reference module, the qparams) for a float Linear/Conv."""
    qparams = weight_qparams(float_module.weight, per_channel)
    ours_type = reference.Linear if isinstance(float_module, nn.Linear) else _REFERENCE[float_module.weight.dim() - 2]
    return ours_type.from_float(float_module, qparams), qparams


def _build(cls, make_float, per_channel=True):
    float_module = make_float()
    ref, _ = _references(float_module, per_channel)
    return cls.from_reference(ref, 0.0123, 64)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("cls, ao_name, make_float, shape", WEIGHTED_CASES)
def test_weighted_module_matches_torch_ao(cls, ao_name, make_float, shape, per_channel):
    packages = dict(zip(("nnq", "nniq", "nnqr"), ao_nn()))
    float_module = make_float()
    ours_ref, qparams = _references(float_module, per_channel)
    theirs_ref = getattr(packages["nnqr"], type(ours_ref).__name__).from_float(float_module, qparams)
    theirs_type = getattr(packages[ao_name[0]], ao_name[1])
    if ao_name[0] == "nniq":  # torch.ao's fused quantized modules take the `[reference, relu]` pair
        theirs_ref = nn.Sequential(theirs_ref, nn.ReLU())
    x = quantized_input(*shape)
    ours = cls.from_reference(ours_ref, 0.0123, 64)
    theirs = theirs_type.from_reference(theirs_ref, 0.0123, 64)
    assert_same_quantized(ours(x), theirs(x))
    assert ours.weight().qscheme() == (torch.per_channel_affine if per_channel else torch.per_tensor_affine)


@pytest.mark.parametrize("cls, ao_name, make_float, shape", WEIGHTED_CASES)
def test_weighted_module_is_close_to_reference_module(cls, ao_name, make_float, shape):
    float_module = make_float()
    ref, _ = _references(float_module, per_channel=True)
    x = quantized_input(*shape)
    expected = ref(x.dequantize())
    if "ReLU" in cls.__name__:
        expected = torch.relu(expected)
    # the int8 result is the reference output rounded to the output grid (plus rounding of the accumulator)
    output = cls.from_reference(ref, 0.01, 128)(x).dequantize()
    assert (output - expected.clamp(-1.28, 1.27)).abs().max() <= 0.01


def _script_round_trip(module):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("cls, ao_name, make_float, shape", WEIGHTED_CASES)
def test_weighted_module_round_trips(cls, ao_name, make_float, shape):
    module, x = _build(cls, make_float), quantized_input(*shape)
    expected = module(x)
    fresh = _fresh_like(module)
    assert not torch.equal(fresh(x).int_repr(), expected.int_repr())
    fresh.load_state_dict(module.state_dict())
    copies = [fresh, copy.deepcopy(module), saved_and_loaded(module), torch.jit.script(module),
              _script_round_trip(module), torch.jit.trace(module, x)]
    for other in copies:
        assert_same_quantized(other(x), expected)
    assert fresh.engine == copies[1].engine == copies[2].engine == "x86"


def _fresh_like(module):
    """A freshly constructed module of the same shape (zero weight, default qparams)."""
    if isinstance(module, nnq.Linear):
        return type(module)(module.in_features, module.out_features, module.bias() is not None)
    return type(module)(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                        module.padding, module.dilation, module.groups, module.bias() is not None)


def test_state_dict_holds_unpacked_weight_and_qparams():
    module = _build(nnq.Conv2d, lambda: nn.Conv2d(3, 4, 3))
    state = module.state_dict()
    assert sorted(state) == ["bias", "scale", "weight", "zero_point"]
    assert state["weight"].is_quantized and state["weight"].dtype == torch.qint8
    assert float(state["scale"]) == 0.0123 and int(state["zero_point"]) == 64
    with pytest.raises(RuntimeError, match="Missing key.*weight"):
        nnq.Conv2d(3, 4, 3).load_state_dict({"scale": state["scale"], "zero_point": state["zero_point"]})


def test_repr_names_geometry_qparams_qscheme_and_engine():
    linear = _build(nnq.Linear, lambda: nn.Linear(64, 32))
    assert repr(linear) == ("QuantizedLinear(in_features=64, out_features=32, scale=0.0123, zero_point=64, "
                            "qscheme=torch.per_channel_affine, engine=x86)")
    conv = _build(nnq.ConvReLU2d, lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False), per_channel=False)
    assert repr(conv) == ("QuantizedConvReLU2d(4, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2, "
                          "bias=False, scale=0.0123, zero_point=64, qscheme=torch.per_tensor_affine, engine=x86)")


def test_engine_is_recorded_and_repack_keeps_numerics():
    torch.backends.quantized.engine = "qnnpack"
    module = _build(nnq.Linear, lambda: nn.Linear(8, 4), per_channel=False)
    torch.backends.quantized.engine = "x86"
    x = quantized_input(3, 8)
    assert module.engine == "qnnpack" and "engine=qnnpack" in repr(module)
    assert copy.deepcopy(module).engine == "qnnpack"
    x86 = copy.deepcopy(module)
    x86.repack("x86")
    assert x86.engine == "x86" and torch.equal(x86.weight().int_repr(), module.weight().int_repr())
    assert (x86(x).int_repr().int() - module(x).int_repr().int()).abs().max() <= 1


def test_bad_padding_mode_and_padding_are_rejected_with_the_module_name():
    with pytest.raises(ValueError, match="fxq.nn.quantized.Conv2d: padding_mode='reflect' is not supported"):
        nnq.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
    ref = reference.Conv1d.from_float(nn.Conv1d(2, 2, 3, padding_mode="circular"),
                                      weight_qparams(torch.ones(2, 2, 3), False))
    with pytest.raises(ValueError, match="ConvReLU1d: padding_mode='circular'"):
        nnq.ConvReLU1d.from_reference(ref, 0.1, 0)
    with pytest.raises(ValueError, match="asymmetric padding"):
        nnq.Conv2d(3, 3, 2, padding="same")
    assert nnq.Conv2d(3, 3, 3, padding="same").padding == (1, 1)


def test_from_reference_rejects_float_modules_and_quint8_weights():
    with pytest.raises(TypeError, match="expects fxq.nn.reference.Linear, got Linear"):
        nnq.Linear.from_reference(nn.Linear(2, 2), 0.1, 0)
    linear = nn.Linear(2, 2)
    ref = reference.Linear.from_float(linear, {**weight_qparams(linear.weight, False), "dtype": torch.quint8,
                                               "zero_point": torch.tensor(128)})
    with pytest.raises(TypeError, match="torch.qint8 quantized tensor, got dtype torch.quint8"):
        nnq.Linear.from_reference(ref, 0.1, 0)


def test_fused_float_module_lowers_through_its_first_member():
    linear_relu = fused.LinearReLU(nn.Linear(4, 4), nn.ReLU())
    ref = nn.Sequential(reference.Linear.from_float(linear_relu[0], weight_qparams(linear_relu[0].weight, True)),
                        nn.ReLU())
    x = quantized_input(2, 4)
    assert_same_quantized(nnq.LinearReLU.from_reference(ref, 0.02, 0)(x),
                          nnq.LinearReLU.from_reference(ref[0], 0.02, 0)(x))
