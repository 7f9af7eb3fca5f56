"""Models written the way users write them (issue 14): reused modules, in-place ops, scalar arithmetic,
preserved attributes and calls that quantize nothing. Each case failed (or silently lost something) before."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.nn.plain import ops as plain_ops
from conftest import sqnr, torch_ao


def _calibrated(model, batches, qconfig_mapping=None, **prepare_kwargs):
    mapping = qconfig_mapping or fxq.get_default_qconfig_mapping("x86")
    prepared = fxq.prepare_fx(model, mapping, (batches[0],), **prepare_kwargs)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    return prepared


def _torch_ao_output(model, batches, x):
    ao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = ao.quantize_fx.prepare_fx(copy.deepcopy(model), ao.quantization.get_default_qconfig_mapping("x86"),
                                             (batches[0],))
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        quantized = ao.quantize_fx.convert_fx(prepared)
        with torch.no_grad():
            return quantized(x)


# ---- 1. a weightless module called from two places ----

class ReusedModules(nn.Module):
    """torchvision-style: one pool, one activation and one dropout, each called twice."""

    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
        self.relu, self.pool, self.act, self.dropout = nn.ReLU(), nn.MaxPool2d(2), nn.Hardswish(), nn.Dropout(0.1)

    def forward(self, x):
        x = self.pool(self.relu(self.stem(x)))
        x = self.dropout(self.pool(self.block(x)))
        return self.dropout(self.act(self.act(x) + x))


@pytest.mark.parametrize("lowering", ["plain", "quantized"])
def test_weightless_modules_called_twice_convert_and_match_torch_ao(lowering):
    torch.manual_seed(0)
    model = ReusedModules().eval()
    batches = [torch.randn(2, 3, 32, 32) for _ in range(4)]
    # KeyError 'pool_call1' in pass lower before
    quantized = fxq.convert_fx(_calibrated(model, batches), convert_custom_config={"lowering": lowering})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    if lowering == "quantized":  # PyTorch AO's graph; the plain one runs the hardswish module in float by design
        assert quantized.code.count(".dequantize()") == 1, quantized.code  # both pools and both hardswishes int8
    assert sqnr(expected, got) >= sqnr(expected, _torch_ao_output(model, batches, x)) - 0.5


# ---- 2. preserved attributes ----

class WithAttributes(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.version, self.labels = "v1", ["cat", "dog"]

    def forward(self, x):
        return self.fc(x)


def test_preserved_attributes_survive_prepare_and_convert_and_deepcopy():
    prepared = _calibrated(WithAttributes().eval(), [torch.randn(2, 4)],
                           prepare_custom_config={"preserved_attributes": ["version"]})
    assert prepared.version == "v1" and not hasattr(prepared, "labels")
    prepared.labels = ["cow"]  # set on the observed model: convert's preserved_attributes reads it from there
    quantized = fxq.convert_fx(prepared, convert_custom_config={"preserved_attributes": ["labels"]})
    assert quantized.labels == ["cow"]
    assert quantized.version == "v1"  # what prepare kept stays (PyTorch AO drops it at convert)
    assert copy.deepcopy(quantized).labels == ["cow"]


# ---- 3 and 6. scalar arithmetic between int8 ops ----

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        scores = torch.matmul(self.q(x), self.k(x).transpose(-1, -2)) * 0.25
        return 2 * (self.q(scores.softmax(-1)) + 1)


@pytest.mark.parametrize("lowering", ["plain", "quantized"])
def test_scalar_mul_and_add_stay_int8_like_torch_ao(lowering):
    torch.manual_seed(0)
    model = Attention().eval()
    batches = [torch.randn(2, 16, 16) for _ in range(4)]
    quantized = fxq.convert_fx(_calibrated(model, batches), convert_custom_config={"lowering": lowering})
    code = quantized.code
    if lowering == "quantized":  # PyTorch AO's kernels; the plain lowering runs scalar arithmetic in float
        assert "torch.ops.quantized.mul(matmul_1, 0.25)" in code, code  # output scale = scale * 0.25
        assert code.count("torch.ops.quantized.add(") == 1 and code.count("torch.ops.quantized.mul(") == 2
        assert code.count(".dequantize()") == 1 and code.count("quantize_per_tensor(") == 1, code
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        expected = model(x)
    assert sqnr(expected, quantized(x)) >= sqnr(expected, _torch_ao_output(model, batches, x)) - 0.5


@pytest.mark.parametrize("lowering", ["plain", "quantized"])
def test_scalar_ops_alone_leave_no_quantize_dequantize_pair_with_nothing_between(lowering):
    class Scalars(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return torch.relu(self.conv(x) + 1) * 2

    torch.manual_seed(0)
    model = Scalars().eval()
    batches = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    quantized = fxq.convert_fx(_calibrated(model, batches), convert_custom_config={"lowering": lowering})
    for node in quantized.graph.nodes:
        if node.op == "call_function" and node.target in (torch.quantize_per_tensor, plain_ops.quantize_per_tensor):
            assert all(user.target not in ("dequantize", plain_ops.dequantize_per_tensor) for user in node.users), \
                quantized.code
    if lowering == "quantized":  # PyTorch AO's kernel
        assert "torch.ops.quantized.add_relu(conv, 1)" in quantized.code, quantized.code
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    assert sqnr(expected, quantized(x)) >= sqnr(expected, _torch_ao_output(model, batches, x)) - 0.5


# ---- 4. calls that quantize nothing say why ----

def _warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, " | ".join(str(w.message) for w in caught if "fxq" in str(w.message))


def test_a_mapping_that_selects_no_op_warns_and_names_the_keys_to_check():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    mapping = fxq.QConfigMapping().set_object_type(nn.LSTM, fxq.get_default_qconfig())
    _, said = _warnings_of(lambda: fxq.prepare_fx(model, mapping, (torch.randn(2, 4),)))
    assert "no op in the graph has a qconfig" in said and "set_object_type" in said
    _, said = _warnings_of(lambda: fxq.prepare_fx(model, fxq.QConfigMapping(), (torch.randn(2, 4),)))
    assert said == ""  # asking for nothing is not a mistake


def test_ops_fxq_cannot_quantize_warn_at_prepare():
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    _, said = _warnings_of(lambda: fxq.prepare_fx(Sine().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(2),)))
    assert "fxq quantizes none of them" in said and "register_op" in said


def test_convert_without_calibration_says_to_calibrate_first():
    prepared = fxq.prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), fxq.get_default_qconfig_mapping(),
                              (torch.randn(2, 4),))
    _, said = _warnings_of(lambda: fxq.convert_fx(prepared))
    assert "none of the 2 observers has seen a batch" in said and "before convert_fx" in said


# ---- 5. in-place ops on values read later ----

class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y.mul_(0.5)
        return y + x


class InPlaceChain(InPlace):
    def forward(self, x):
        y = self.conv(x)
        y.add_(1.0)
        torch.relu_(y)
        return y - x.clamp(-1, 1).mul_(0.0)  # the clamp's result is a new tensor: zeroing it keeps x as it was


@pytest.mark.parametrize("model_class", [InPlace, InPlaceChain])
def test_in_place_ops_on_values_read_later_are_kept(model_class):
    torch.manual_seed(0)
    model = model_class().eval()
    batches = [torch.randn(2, 8, 12, 12) for _ in range(4)]
    prepared = _calibrated(model, batches)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        expected = model(x.clone())
        for convert in (fxq.convert_to_reference_fx, fxq.convert_fx):
            assert sqnr(expected, convert(prepared)(x.clone())) > 30  # 6 dB when the mul_ was dropped


def test_in_place_op_on_an_aliased_value_is_kept_by_dead_code_elimination():
    class ViewThenMutate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            flat = y.view(-1)
            flat.mul_(0.5)  # changes y through the view
            return y

    model = ViewThenMutate().eval()
    prepared = _calibrated(model, [torch.randn(2, 4)], qconfig_mapping=fxq.QConfigMapping())
    quantized = fxq.convert_fx(prepared)
    assert "mul_" in quantized.code
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.allclose(quantized(x), model(x))


# ---- 6. ops PyTorch AO runs in int8: transposed convs, instance / group norm, PReLU ----

def _prelu(channels, low, high):
    prelu = nn.PReLU(channels)
    with torch.no_grad():
        prelu.weight.uniform_(low, high)
    return prelu


INT8_MODULES = {  # name: (model, input shape, the fxq.nn.quantized class it must lower to)
    "ConvTranspose1d": (lambda: nn.Sequential(nn.Conv1d(3, 8, 3), nn.ConvTranspose1d(8, 4, 3, stride=2,
                                                                                       output_padding=1)),
                        (2, 3, 16), "ConvTranspose1d"),
    "ConvTranspose2d": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2, stride=2)),
                        (2, 3, 10, 10), "ConvTranspose2d"),
    "ConvTranspose3d": (lambda: nn.Sequential(nn.Conv3d(3, 8, 3), nn.ConvTranspose3d(8, 4, 2, stride=2)),
                        (2, 3, 6, 6, 6), "ConvTranspose3d"),
    "InstanceNorm1d": (lambda: nn.Sequential(nn.Conv1d(3, 8, 3), nn.InstanceNorm1d(8)), (2, 3, 20), "InstanceNorm1d"),
    "InstanceNorm2d": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True)),
                       (2, 3, 10, 10), "InstanceNorm2d"),
    "InstanceNorm3d": (lambda: nn.Sequential(nn.Conv3d(3, 8, 3), nn.InstanceNorm3d(8)), (2, 3, 6, 6, 6),
                       "InstanceNorm3d"),
    "GroupNorm": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)), (2, 3, 10, 10), "GroupNorm"),
    "PReLU": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8)), (2, 3, 10, 10), "PReLU"),
    "PReLU negative slopes": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), _prelu(8, -0.5, 0.5)), (2, 3, 10, 10),
                              "PReLU"),
}


def _then_conv(model: nn.Sequential) -> nn.Sequential:
    """A 1x1 conv after the op, as in real models: its output is then quantized in PyTorch AO too."""
    channels = model[1].weight.shape[1] if isinstance(model[1], nn.modules.conv._ConvTransposeNd) else 8
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[model[0].weight.dim()](channels, 4, 1)
    return nn.Sequential(*model, conv)


@pytest.mark.parametrize("lowering", ["plain", "quantized"])
@pytest.mark.parametrize("name", list(INT8_MODULES))
def test_module_runs_int8_and_is_at_least_as_accurate_as_torch_ao(name, lowering):
    torch.manual_seed(0)
    build, shape, quantized_class = INT8_MODULES[name]
    model = _then_conv(build()).eval()
    batches = [torch.randn(*shape) for _ in range(4)]
    config = {"lowering": lowering}
    quantized = fxq.convert_fx(_calibrated(model, batches), convert_custom_config=config)
    if lowering == "quantized":  # PyTorch AO's modules; the plain lowering runs these ops in float by design
        assert type(quantized.get_submodule("1")) is getattr(fxq.nn.quantized, quantized_class)
        assert quantized.code.count(".dequantize()") == 1, quantized.code  # no float detour around the op
    x = torch.randn(*shape)
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    assert sqnr(expected, got) > 25
    assert sqnr(expected, got) >= sqnr(expected, _torch_ao_output(model, batches, x)) - 0.5
    # another model of the same shape
    again = fxq.convert_fx(_calibrated(_then_conv(build()).eval(), batches), convert_custom_config=config)
    again.load_state_dict(quantized.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), got) and torch.equal(copy.deepcopy(quantized)(x), got)


def test_a_per_channel_transposed_conv_stays_a_reference_module():
    mapping = fxq.get_default_qconfig_mapping("x86").set_object_type(nn.ConvTranspose2d, fxq.get_default_qconfig())
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2, stride=2)).eval()
    batches = [torch.randn(2, 3, 10, 10) for _ in range(2)]
    quantized = fxq.convert_fx(_calibrated(model, batches, qconfig_mapping=mapping))
    assert type(quantized.get_submodule("1")) is fxq.nn.reference.ConvTranspose2d  # no int8 per-channel kernel
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert sqnr(model(x), quantized(x)) > 25


# ---- 7. x.view(n, -1) after an int8 conv (channels-last output) ----

class ViewAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc, self.side = nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(2), nn.Linear(32, 4), \
            nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        head = self.fc(self.pool(y).view(y.size(0), -1))  # int8 view of an int8 pool
        side = self.side(x).view(x.size(0), 8, -1).view_as(y.flatten(2)).sum(-1)  # view then a float op
        return head, side


def test_view_after_an_int8_conv_runs():
    torch.manual_seed(0)
    model = ViewAfterConv().eval()
    quantized = fxq.convert_fx(_calibrated(model, [torch.randn(2, 3, 10, 10) for _ in range(4)]))
    assert ".view(" not in quantized.code and ".reshape(" in quantized.code
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        for expected, got in zip(model(x), quantized(x)):  # raised "view size is not compatible" before
            assert sqnr(expected, got) > 20  # a wrong element order would give ~0 dB


def test_only_in_place_ops_with_an_equal_out_of_place_op_are_rewritten():
    from fxq.passes.context import out_of_place

    class Methods(nn.Module):
        def forward(self, x, y):
            x.mul_(2)
            x.bernoulli_(0.5)  # x.bernoulli() would use x as the probabilities
            x.copy_(y)  # no Tensor.copy
            x.requires_grad_()
            return torch.relu_(x)

    nodes = {n.name: n for n in torch.fx.symbolic_trace(Methods()).graph.nodes}
    assert out_of_place(nodes["mul_"]) == "mul" and out_of_place(nodes["relu_"]) in (torch.relu, F.relu)
    assert [out_of_place(nodes[name]) for name in ("bernoulli_", "copy_", "requires_grad_")] == [None, None, None]
