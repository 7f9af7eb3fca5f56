"""The plain lowering (convert_fx's default on x86): uint8 tensors on oneDNN kernels, no quantized tensor.

Numerics are checked against the quantized-tensor lowering (PyTorch AO's kernels, >= 40 dB agreement) and
against float (SQNR no worse than the quantized-tensor lowering's - 0.1 dB).
"""
import copy
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from fxq.config.lowering import plain_kernels_missing, resolve_lowering
from fxq.nn import plain
from tests.conftest import saved_and_loaded, sqnr
from tests.no_quantized_tensors import no_quantized_tensors

pytestmark = pytest.mark.skipif(bool(plain_kernels_missing()), reason=f"plain lowering needs {plain_kernels_missing()}")

QUANTIZED = {"lowering": "quantized"}


class ResidualBlock(nn.Module):
    """conv-bn-relu, max pool, conv + identity add + relu, average pool, linear: every plain row at least once."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.pool(self.stem(x))
        y = torch.relu(self.bn(self.conv(y)) + y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class MLPBlock(nn.Module):
    """linear -> GELU -> linear + residual, layer norm: a transformer's feed-forward half."""

    def __init__(self, width=32):
        super().__init__()
        self.up, self.down, self.norm = nn.Linear(width, 4 * width), nn.Linear(4 * width, width), nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(x + self.down(F.gelu(self.up(x))))


class MobileBlock(nn.Module):
    """1x1 expand -> relu6, depthwise 3x3 -> hardswish, 1x1 project, concat with the input, nearest upsample."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU6())
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.act = nn.Hardswish()
        self.project = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        y = self.project(self.act(self.depthwise(self.expand(x))))
        y = torch.cat([y, x], dim=1)
        return F.interpolate(y, scale_factor=2)


CASES = {"residual": (ResidualBlock, (2, 3, 16, 16)), "mlp": (MLPBlock, (4, 6, 32)),
         "mobile": (MobileBlock, (2, 8, 8, 8))}


def _prepared(name, mapping=None):
    make, shape = CASES[name]
    model = make().eval()
    for module in model.modules():  # batch norm statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 2.0)
    example = torch.randn(shape)
    prepared = fxq.prepare_fx(model, mapping or fxq.get_default_qconfig_mapping("x86"), (example,))
    for _ in range(8):
        prepared(torch.randn(shape))
    return model, prepared, torch.randn(shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_is_the_default_and_no_less_accurate_than_the_quantized_tensor_lowering(name):
    model, prepared, x = _prepared(name)
    plain_model = fxq.convert_fx(prepared)
    quantized_model = fxq.convert_fx(prepared, convert_custom_config=QUANTIZED)
    assert resolve_lowering() == "plain"
    assert any(plain.reads_uint8(m) for m in plain_model.modules())
    assert not any(plain.reads_uint8(m) for m in quantized_model.modules())
    expected = model(x)
    assert sqnr(expected, plain_model(x)) >= sqnr(expected, quantized_model(x)) - 0.1


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_kernels_agree_with_the_quantized_tensor_kernels_at_the_same_roundings(name):
    _, prepared, x = _prepared(name)
    same_roundings = fxq.convert_fx(prepared, convert_custom_config={"lowering": "plain", "keep_roundings": True})
    quantized_model = fxq.convert_fx(prepared, convert_custom_config=QUANTIZED)
    assert sqnr(quantized_model(x), same_roundings(x)) >= 40.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_quantized_tensor_in_convert_or_forward(name):
    _, prepared, x = _prepared(name)
    with no_quantized_tensors():
        converted = fxq.convert_fx(prepared)
        converted(x)
    assert "plain_ops_quantize_per_tensor" in converted.code and "torch.quantize_per_tensor" not in converted.code


def test_the_deprecation_warning_never_fires_in_a_fresh_process():
    """torch warns once per process, so only a fresh one shows whether prepare, convert or forward made one."""
    script = textwrap.dedent("""
        import warnings, torch, fxq
        from tests.test_plain_lowering import _prepared
        warnings.filterwarnings("error", message=".*quantized tensor creation.*")
        for name in ("residual", "mlp", "mobile"):
            _, prepared, x = _prepared(name)
            fxq.convert_fx(prepared)(x)
        print("clean")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "clean" in result.stdout, result.stderr[-2000:]


def test_residual_add_and_activations_fuse_into_the_kernels():
    _, prepared, _ = _prepared("residual")
    converted = fxq.convert_fx(prepared)
    conv = converted.get_submodule("conv")
    assert isinstance(conv, plain.ConvBinary2d) and conv.post_op == "relu"  # + identity, then relu, in one kernel
    assert converted.get_submodule("stem.0").post_op == "relu"
    assert "add" not in converted.code.replace("adaptive", "")
    _, prepared, _ = _prepared("mlp")
    assert fxq.convert_fx(prepared).get_submodule("up").post_op == "gelu"


class _Block(nn.Module):
    """ResNet's basic block. ``reader="later"`` also returns the identity branch, read after the residual sum;
    ``reader="input"`` sums the second conv's own input into it (conv2(y) + y), which it must not overwrite while
    reading it."""

    def __init__(self, reader: str):
        super().__init__()
        self.stem, self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), \
            nn.Conv2d(8, 8, 3, padding=1)
        self.reader = reader

    def forward(self, x):
        identity = torch.relu(self.stem(x))
        inner = identity if self.reader == "input" else torch.relu(self.conv1(identity))
        out = torch.relu(self.conv2(inner) + identity)
        return (out, identity.flatten(1).mean(1)) if self.reader == "later" else out


@pytest.mark.parametrize("reader", ["none", "later", "input"])
def test_a_residual_nothing_reads_later_is_summed_into_without_a_copy(reader):
    model, x = _Block(reader).eval(), torch.randn(2, 3, 8, 8)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    converted = fxq.convert_fx(prepared)
    binary = converted.get_submodule("conv2")
    assert isinstance(binary, plain.ConvBinary2d) and binary.sums_in_place is (reader == "none")
    with torch.no_grad():
        fast = converted(x)
        binary.sums_in_place = False
        copied = converted(x)
    for a, b in zip(*(t if isinstance(t, tuple) else (t,) for t in (fast, copied))):
        assert torch.equal(a, b)  # the identity kept its values where something read it after or during the sum
    expected, got = (model(x)[0], fast[0]) if reader == "later" else (model(x), fast)
    assert sqnr(expected, got) > 25


def test_the_float_readers_of_a_kernel_get_fp32_from_it():
    _, prepared, x = _prepared("residual")
    converted = fxq.convert_fx(prepared)
    assert converted.get_submodule("fc").output_scale is None
    assert converted(x).dtype == torch.float32


def test_quantized_switch_and_environment_variable(monkeypatch):
    _, prepared, x = _prepared("residual")
    monkeypatch.setenv("FXQ_LOWERING", "quantized")
    assert not any(plain.reads_uint8(m) for m in fxq.convert_fx(prepared).modules())
    monkeypatch.setenv("FXQ_LOWERING", "plane")
    with pytest.raises(ValueError, match="FXQ_LOWERING='plane'; choose one of auto, plain, quantized"):
        fxq.convert_fx(prepared)
    with pytest.raises(ValueError, match=r"convert_custom_config\['lowering'\] = 'int8'"):
        fxq.convert_fx(prepared, convert_custom_config={"lowering": "int8"})


def test_converted_model_survives_save_load_deepcopy_and_pickle():
    _, prepared, x = _prepared("residual")
    converted = fxq.convert_fx(prepared)
    expected = converted(x)
    for copy_of in (saved_and_loaded(converted), copy.deepcopy(converted), pickle.loads(pickle.dumps(converted))):
        assert torch.equal(copy_of(x), expected)
    fresh = fxq.convert_fx(prepared)
    fresh.load_state_dict(converted.state_dict())
    assert torch.equal(fresh(x), expected)


def test_dynamic_linear_is_plain_too():
    model = MLPBlock().eval()
    x = torch.randn(4, 6, 32)
    prepared = fxq.prepare_fx(model, fxq.get_default_dynamic_qconfig_mapping(), (x,))
    with no_quantized_tensors():
        converted = fxq.convert_fx(prepared)
        out = converted(x)
    assert isinstance(converted.get_submodule("up"), plain.DynamicLinear)
    reference = fxq.convert_fx(prepared, convert_custom_config=QUANTIZED)(x)
    # this CPU saturates 8-bit pairs: plain takes 7-bit weights where the quantized kernel takes 7-bit activations
    assert sqnr(model(x), out) >= sqnr(model(x), reference) - 1.0


def test_the_fx_guides_static_custom_module_gets_and_returns_quantized_tensors(monkeypatch):
    """The one place the plain lowering makes quantized tensors: the boundary of a user's static quantized custom
    module, written for the FX guide's contract (quantized tensors in and out)."""
    import test_custom_modules as flows
    from custom_models import StaticQuantRecurrent, WithRecurrent
    plain_out = flows._run_flow(flows._fxq(), WithRecurrent, flows.flow_c)
    quantized = flows.flow_c(flows._fxq(), WithRecurrent().eval())
    assert type(quantized.recurrent) is StaticQuantRecurrent
    assert any(plain.reads_uint8(m) for m in quantized.modules())
    boundary = [n.target.__name__ for n in quantized.graph.nodes if n.op == "call_function"]
    assert "to_quantized_tensor" in boundary and "from_quantized_tensor" in boundary
    monkeypatch.setenv("FXQ_LOWERING", "quantized")
    assert sqnr(flows._run_flow(flows._fxq(), WithRecurrent, flows.flow_c), plain_out) >= 30


def test_a_model_input_quantized_with_other_qparams_is_requantized_for_the_kernel():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8)).eval()
    config = fxq.PrepareCustomConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(8, 16),),
                              prepare_custom_config=config)
    for _ in range(3):
        prepared(torch.randn(8, 16))
    converted = fxq.convert_fx(prepared)
    x = torch.randn(8, 16)
    own = converted.get_submodule("0")  # the input's own qparams: its integers go straight in
    same = converted(torch.quantize_per_tensor(x, own.input_scale, own.input_zero_point, torch.quint8))
    other = converted(torch.quantize_per_tensor(x, 0.03, 128, torch.quint8))
    assert same.dtype == torch.quint8 and other.dtype == torch.quint8
    assert sqnr(model(x), same) >= 30 and sqnr(model(x), other) >= 25


def test_dump_and_compare_read_a_plain_model():
    model, prepared, x = _prepared("residual")
    converted = fxq.convert_fx(prepared)
    table = fxq.dump(converted, example_inputs=(x,))
    assert "uint8[2x16x8x8]" in table and "fxq.nn.plain.ops.quantize_per_tensor" in table
    errors = {e.node: e for e in fxq.compare(model, converted, [x])}
    assert min(e.sqnr_db for e in errors.values()) > 20  # uint8 values are read with their scale


@pytest.mark.slow
def test_fxq_compile_computes_what_the_eager_model_does():
    _, prepared, x = _prepared("residual")
    converted = fxq.convert_fx(prepared)
    compiled = fxq.compile(converted)
    assert sqnr(converted(x), compiled(x)) >= 40
    with pytest.raises(ValueError, match="expects the model fxq.convert_fx returned"):
        fxq.compile(nn.Linear(2, 2))


def test_exported_and_reloaded_plain_models_compute_the_same():
    _, prepared, x = _prepared("mobile")
    converted = fxq.convert_fx(prepared)
    exported = torch.export.export(converted, (x,))
    assert torch.equal(exported.module()(x), converted(x))
    assert "fxq.quantize_per_tensor.default" in [str(n.target) for n in exported.graph.nodes]


def test_weight_only_and_reference_modules_make_no_quantized_tensor():
    """Weight-only layers and the reference modules an op without a plain kernel keeps (ConvTranspose) take their
    int8 weights from float arithmetic (dynamic LSTM / GRU: tests/test_recurrent_dynamic.py)."""
    embedding_model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8)).eval()
    tokens = torch.randint(0, 50, (2, 5))
    prepared = fxq.prepare_fx(embedding_model, fxq.get_weight_only_qconfig_mapping(), (tokens,))
    with no_quantized_tensors():
        out = fxq.convert_fx(prepared)(tokens)
    assert sqnr(embedding_model(tokens), out) >= 30
    transposed = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2, stride=2)).eval()
    x = torch.randn(1, 3, 8, 8)
    prepared = fxq.prepare_fx(transposed, fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    with no_quantized_tensors():
        out = fxq.convert_fx(prepared)(x)
    assert sqnr(transposed(x), out) >= 25
