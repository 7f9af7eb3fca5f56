"""Dynamic and weight-only modes: numbers against torch.ao's dynamic quantization and against float."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr, torch_ao
from fxq.nn.quantized import weight_only
from zoo import ZOO


def _convert(model, mapping, example, reference=False):
    prepared = fxq.prepare_fx(model, mapping, example)
    prepared(*example)
    return (fxq.convert_to_reference_fx if reference else fxq.convert_fx)(prepared)


def _mlp(hidden=1024, layers=4):
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers - 1):
        blocks += [nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*blocks, nn.Linear(hidden, hidden)).eval()


# ---- dynamic ----

@pytest.mark.parametrize("name", ["mlp", "transformer_block"])
def test_dynamic_is_within_half_a_db_of_torch_ao(name):
    tao = torch_ao()
    model, example, _ = ZOO[name]()
    theirs_mapping = tao.quantization.QConfigMapping().set_global(tao.quantization.default_dynamic_qconfig)
    theirs = tao.quantize_fx.convert_fx(tao.quantize_fx.prepare_fx(copy.deepcopy(model), theirs_mapping, example))
    ours = _convert(model, fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig), example)
    with torch.no_grad():
        reference = model(*example)
        assert sqnr(reference, ours(*example)) >= sqnr(reference, theirs(*example)) - 0.5
    assert "Dynamic" in repr(ours)


def test_dynamic_float16_weights_are_float16():
    model = _mlp(64, 2)
    quantized = _convert(model, fxq.QConfigMapping().set_object_type(nn.Linear, fxq.float16_dynamic_qconfig),
                         (torch.randn(4, 64),))
    x = torch.randn(4, 64)
    assert "weight_dtype=torch.float16" in repr(quantized)
    assert sqnr(model(x).detach(), quantized(x)) > 50


# ---- weight-only ----

@pytest.mark.parametrize("activation_dtype, min_sqnr", [(torch.float32, 35.0), (torch.bfloat16, 30.0)])
def test_weight_only_mlp(activation_dtype, min_sqnr):
    model = _mlp().to(activation_dtype)
    x = torch.randn(8, 1024, dtype=activation_dtype)
    quantized = _convert(model, fxq.get_weight_only_qconfig_mapping(activation_dtype, exclude=["6"]), (x,))
    kinds = {name: type(module) for name, module in quantized.named_children()}
    assert kinds["6"] is nn.Linear  # excluded: still the float layer
    assert [n for n, k in kinds.items() if k is weight_only.Linear or k is nn.Sequential] == ["0", "2", "4"]
    assert not any(type(m) is nn.Linear for n, m in quantized.named_modules() if n.split(".")[0] != "6")
    with torch.no_grad():
        assert sqnr(model(x).float(), quantized(x).float()) >= min_sqnr


def test_weight_only_falls_back_where_the_packed_kernel_does_not_fit():
    model = nn.Sequential(nn.Linear(100, 64)).eval()  # 100 input features: not a multiple of 32
    x = torch.randn(5, 100)
    quantized = _convert(model, fxq.get_weight_only_qconfig_mapping(), (x,))
    layer = quantized.get_submodule("0")
    assert not layer.uses_packed_kernel
    expected = F.linear(x, layer.weight_int8.float() * layer.weight_scale[:, None], layer.bias)
    assert torch.allclose(quantized(x), expected, atol=1e-6)


def test_packed_and_fallback_kernels_agree():
    reference = _convert(nn.Sequential(nn.Linear(128, 64)).eval(), fxq.get_weight_only_qconfig_mapping(),
                         (torch.randn(2, 128),)).get_submodule("0")
    exact = copy.deepcopy(reference)
    exact.exact = True
    x = torch.randn(3, 7, 128)
    assert reference.uses_packed_kernel and not exact.uses_packed_kernel
    assert sqnr(exact(x), reference(x)) > 40  # the same product, bf16 rounding apart


def test_weight_only_embedding_keeps_int8_rows():
    model = nn.Sequential(nn.Embedding(50, 32)).eval()
    indices = torch.randint(0, 50, (4, 9))
    quantized = _convert(model, fxq.get_weight_only_qconfig_mapping(), (indices,))
    assert quantized.get_submodule("0").weight_int8.dtype in (torch.uint8, torch.int8)
    assert sqnr(model(indices).detach(), quantized(indices)) > 35


def test_reference_graphs_of_dynamic_and_weight_only_read_dequantize_then_float_op():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 16))

        def forward(self, x):
            return F.linear(x, self.w)

    for mapping in (fxq.QConfigMapping().set_object_type(F.linear, fxq.default_dynamic_qconfig),
                    fxq.get_weight_only_qconfig_mapping()):
        reference = _convert(Functional().eval(), mapping, (torch.randn(2, 16),), reference=True)
        calls = [n.target for n in reference.graph.nodes if n.op in ("call_function", "call_method")]
        assert calls[1:] == ["dequantize", F.linear]
        assert calls[0] in (torch.quantize_per_tensor, torch.quantize_per_channel)


def test_weight_only_times_both_kernels_once_per_shape_class_and_keeps_the_faster(monkeypatch):
    layer = _convert(nn.Sequential(nn.Linear(64, 16)).eval(), fxq.get_weight_only_qconfig_mapping(),
                     (torch.randn(2, 64),)).get_submodule("0")
    timed = []
    monkeypatch.setattr(weight_only, "_KERNEL_CHOICE", {})
    monkeypatch.setattr(weight_only, "_best_of_two", lambda packed, dequantized: timed.append(1) or 1)
    x = torch.randn(40, 64)
    assert torch.equal(layer(x), layer._dequantized(x))  # "dequantized is faster" was measured: it runs
    layer(torch.randn(20, 64))  # same class (16 rows and more): no new timing
    layer(torch.randn(1, 64))   # batch 1: its own class
    assert len(timed) == 2
