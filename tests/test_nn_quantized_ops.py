"""fxq.nn.quantized norm/activation modules and functional ops: bit-identical to torch.ao, serialisable."""
import copy
import io

import pytest
import torch
from torch import nn

from fxq.nn import quantized as nnq
from fxq.nn.quantized import functional as qf
from nn_helpers import ao_nn, assert_same_quantized, quantized_input

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per:UserWarning",
                                        "ignore:Implicit dimension choice:UserWarning")


def f32(value: float) -> float:
    """`value` rounded to float32: torch.ao keeps some output scales in float32 buffers, as observers produce them."""
    return float(torch.tensor(value, dtype=torch.float32))


def _trained(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn.eval()


def _layer_norm() -> nn.LayerNorm:
    ln = nn.LayerNorm([4, 6])
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    return ln


FLOATS = {"bn2": lambda: _trained(nn.BatchNorm2d(3)), "bn3": lambda: _trained(nn.BatchNorm3d(3)), "ln": _layer_norm}

# torch.ao's batch norms need tensor output qparams (its convert passes buffers).
# name: (float module key or None, build ours(float), build torch.ao's(nnq, nniq, float), input shape)
CASES = {
    "BatchNorm2d": ("bn2", lambda f: nnq.BatchNorm2d.from_float(f, f32(0.05), 60),
                    lambda q, i, f: q.BatchNorm2d.from_reference(f, torch.tensor(0.05), torch.tensor(60)),
                    (2, 3, 4, 4)),
    "BatchNorm3d": ("bn3", lambda f: nnq.BatchNorm3d.from_float(f, f32(0.05), 60),
                    lambda q, i, f: q.BatchNorm3d.from_reference(f, torch.tensor(0.05), torch.tensor(60)),
                    (1, 3, 2, 4, 4)),
    "BNReLU2d": ("bn2", lambda f: nnq.BNReLU2d.from_float(f, f32(0.03), 0),
                 lambda q, i, f: i.BNReLU2d.from_reference([f], torch.tensor(0.03), torch.tensor(0)), (2, 3, 4, 4)),
    "BNReLU3d": ("bn3", lambda f: nnq.BNReLU3d.from_float(f, f32(0.03), 0),
                 lambda q, i, f: i.BNReLU3d.from_reference([f], torch.tensor(0.03), torch.tensor(0)), (1, 3, 2, 4, 4)),
    "LayerNorm": ("ln", lambda f: nnq.LayerNorm.from_float(f, f32(0.04), 120),
                  lambda q, i, f: q.LayerNorm.from_reference(f, f32(0.04), 120), (2, 5, 4, 6)),
    "Hardswish": (None, lambda f: nnq.Hardswish.from_float(nn.Hardswish(), f32(0.02), 30),
                  lambda q, i, f: q.Hardswish(f32(0.02), 30), (3, 10)),
    "ELU": (None, lambda f: nnq.ELU.from_float(nn.ELU(0.7), 0.025, 100),
            lambda q, i, f: q.ELU(0.025, 100, 0.7), (3, 10)),
    "LeakyReLU": (None, lambda f: nnq.LeakyReLU.from_float(nn.LeakyReLU(0.2), f32(0.02), 90),
                  lambda q, i, f: q.LeakyReLU(f32(0.02), 90, 0.2), (3, 10)),
    "Softmax": (None, lambda f: nnq.Softmax.from_float(nn.Softmax(dim=1), 1 / 256, 0),
                lambda q, i, f: q.Softmax(1, 1 / 256, 0), (2, 7, 3)),
    "Softmax-implicit-dim": (None, lambda f: nnq.Softmax(None, 1 / 256, 0),
                             lambda q, i, f: q.Softmax(None, 1 / 256, 0), (2, 7, 3)),
}


def _ours(name):
    key, build, _, shape = CASES[name]
    return build(FLOATS[key]() if key else None), quantized_input(*shape, scale=0.04, zero_point=128)


@pytest.mark.parametrize("name", list(CASES))
def test_module_matches_torch_ao(name):
    nnq_ao, nniq_ao, _ = ao_nn()
    key, build, build_ao, shape = CASES[name]
    float_module = FLOATS[key]() if key else None
    x = quantized_input(*shape, scale=0.04, zero_point=128)
    assert_same_quantized(build(float_module)(x), build_ao(nnq_ao, nniq_ao, float_module)(x))


def _fresh(module: nn.Module) -> nn.Module:
    """A freshly constructed module of the same shape: only non-state arguments (dim, slope) are given."""
    if isinstance(module, nnq.LayerNorm):
        return nnq.LayerNorm(module.normalized_shape)
    extra = {name: getattr(module, name) for name in ("alpha", "negative_slope", "dim") if hasattr(module, name)}
    if hasattr(module, "num_features"):
        return type(module)(module.num_features)
    return type(module)(**extra)


@pytest.mark.parametrize("name", list(CASES))
def test_module_round_trips(name):
    module, x = _ours(name)
    expected = module(x)
    fresh = _fresh(module)
    fresh.load_state_dict(module.state_dict())
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    for other in [fresh, copy.deepcopy(module), torch.load(buffer, weights_only=False), torch.jit.script(module),
                  torch.jit.trace(module, x)]:
        assert_same_quantized(other(x), expected)


def test_affine_free_layer_norm_and_batch_norm():
    nnq_ao, _, _ = ao_nn()
    ln = nn.LayerNorm(6, elementwise_affine=False)
    x = quantized_input(3, 6)
    theirs = nnq_ao.LayerNorm.from_reference(ln, f32(0.03), 128)
    assert_same_quantized(nnq.LayerNorm.from_float(ln, f32(0.03), 128)(x), theirs(x))
    bn = nn.BatchNorm2d(3, affine=False).eval()
    with torch.no_grad():
        bn.running_var.fill_(2.0)
    x = quantized_input(1, 3, 2, 2)
    expected = torch.quantize_per_tensor(bn(x.dequantize()), f32(0.03), 128, torch.quint8)
    assert torch.equal(nnq.BatchNorm2d.from_float(bn, f32(0.03), 128)(x).int_repr(), expected.int_repr())


def test_reprs():
    assert repr(nnq.Hardswish(0.02, 20)) == "QuantizedHardswish(scale=0.02, zero_point=20)"
    assert repr(nnq.Softmax(-1, 0.5, 0)) == "QuantizedSoftmax(dim=-1, scale=0.5, zero_point=0)"
    assert repr(nnq.BatchNorm2d(8)) == "QuantizedBatchNorm2d(8, eps=1e-05, scale=1.0, zero_point=0)"
    assert repr(nnq.LayerNorm([4, 6], scale=0.1)) == "QuantizedLayerNorm((4, 6), eps=1e-05, scale=0.1, zero_point=0)"
    with pytest.raises(TypeError, match="LeakyReLU.from_float expects nn.LeakyReLU, got ReLU"):
        nnq.LeakyReLU.from_float(nn.ReLU(), 0.1, 0)


# --- functional -------------------------------------------------------------------------------------

def _binary_inputs():
    return quantized_input(2, 3, 4, scale=0.05, zero_point=120), quantized_input(2, 3, 4, scale=0.03, zero_point=130)


@pytest.mark.parametrize("name", ["add", "add_relu", "mul", "mul_relu"])
def test_binary_functions_match_torch_ao_qfunctional(name):
    nnq_ao, _, _ = ao_nn()
    a, b = _binary_inputs()
    qfunctional = nnq_ao.QFunctional()
    qfunctional.scale, qfunctional.zero_point = 0.07, 110
    # torch.ao's QFunctional has no mul_relu; a quantized relu after its mul keeps the qparams and clamps the ints
    theirs = {"add": qfunctional.add, "add_relu": qfunctional.add_relu, "mul": qfunctional.mul,
              "mul_relu": lambda x, y: qfunctional.mul(x, y).relu()}[name](a, b)
    assert_same_quantized(getattr(qf, name)(a, b, 0.07, 110), theirs)


def test_cat_and_matmul_match_torch_ao_qfunctional():
    nnq_ao, _, _ = ao_nn()
    qfunctional = nnq_ao.QFunctional()
    qfunctional.scale, qfunctional.zero_point = 0.06, 125
    a, b = _binary_inputs()
    assert_same_quantized(qf.cat([a, b], 1, 0.06, 125), qfunctional.cat([a, b], dim=1))
    m = quantized_input(2, 4, 5, scale=0.05, zero_point=120)
    assert_same_quantized(qf.matmul(a, m, 0.06, 125), qfunctional.matmul(a, m))


def test_unary_functions_match_torch_ao_modules():
    nnq_ao, _, _ = ao_nn()
    x = quantized_input(4, 6, scale=0.04, zero_point=128)
    ln = _layer_norm().requires_grad_(False)
    y = quantized_input(2, 4, 6, scale=0.04, zero_point=128)
    pairs = [
        (qf.hardswish(x, f32(0.02), 30), nnq_ao.Hardswish(f32(0.02), 30)(x)),
        (qf.elu(x, 0.025, 100, 0.7), nnq_ao.ELU(0.025, 100, 0.7)(x)),
        (qf.leaky_relu(x, 0.2, f32(0.02), 90), nnq_ao.LeakyReLU(f32(0.02), 90, 0.2)(x)),
        (qf.softmax(x, 1, 1 / 256, 0), nnq_ao.Softmax(1, 1 / 256, 0)(x)),
        (qf.layer_norm(y, [4, 6], ln.weight, ln.bias, 1e-5, f32(0.04), 120),
         nnq_ao.LayerNorm.from_reference(ln, f32(0.04), 120)(y)),
    ]
    for ours, theirs in pairs:
        assert_same_quantized(ours, theirs)


@pytest.mark.parametrize("name", qf.__all__)
def test_functions_are_scriptable_and_give_the_same_result(name):
    a, b = _binary_inputs()
    args = {"cat": ([a, b], 0, 0.1, 128), "matmul": (a, quantized_input(2, 4, 3), 0.1, 128),
            "softmax": (a, 2, 1 / 256, 0), "layer_norm": (a, [4], None, None, 1e-5, 0.05, 128),
            "hardswish": (a, 0.05, 128), "elu": (a, 0.05, 128, 1.0), "leaky_relu": (a, 0.1, 0.05, 128)}
    call_args = args.get(name, (a, b, 0.1, 128))
    function = getattr(qf, name)
    assert_same_quantized(torch.jit.script(function)(*call_args), function(*call_args))
