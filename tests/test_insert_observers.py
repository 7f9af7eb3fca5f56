"""passes/insert_observers.py: where observers go, checked on the converted graph's quantize calls and numbers."""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fxq
from conftest import sqnr, torch_ao

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class FloatActivationSqueezeExcite(nn.Module):
    """EfficientNet's SE after a SiLU that stays float: the pool and the int8 mul both read the SiLU output."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 8, 3), nn.SiLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.act(self.conv(x))
        return self.fc(self.pool(x)) * x


def quantize_calls(gm: fx.GraphModule) -> int:
    return sum(node.op == "call_function" and node.target is torch.quantize_per_tensor for node in gm.graph.nodes)


def quantized(prepare, convert, mapping, model, batches):
    prepared = prepare(model, mapping, batches[0])
    with torch.no_grad():
        for batch in batches:
            prepared(*batch)
    return convert(prepared)


def test_pool_shares_the_quantize_of_a_float_value_another_reader_quantizes(quantized_lowering):
    # one quantize for the SiLU output, read by both the pool and the mul (before the fix: a second one after the pool)
    model = FloatActivationSqueezeExcite().eval()
    batches = [(torch.randn(4, 3, 10, 10),) for _ in range(3)]
    converted = quantized(fxq.prepare_fx, fxq.convert_fx, fxq.get_default_qconfig_mapping("x86"), model, batches)
    pool = next(node for node in converted.graph.nodes if node.target == "pool")
    assert pool.args[0].target is torch.quantize_per_tensor, converted.code
    assert quantize_calls(converted) == 2, converted.code
    tao = torch_ao()
    reference = quantized(tao.quantize_fx.prepare_fx, tao.quantize_fx.convert_fx,
                          tao.quantization.get_default_qconfig_mapping("x86"), model, batches)
    assert quantize_calls(converted) <= quantize_calls(reference)
    with torch.no_grad():
        expected = model(*batches[0])
        assert sqnr(expected, converted(*batches[0])) >= sqnr(expected, reference(*batches[0])) - 0.5


class PoolIntoFloatOp(nn.Module):
    """The input feeds a conv (quantized) and a pool whose only reader, GELU, runs in float."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2)

    def forward(self, x):
        return self.conv(x).mean() + F.gelu(self.pool(x)).mean()


def test_pool_read_by_a_float_op_stays_float_even_when_its_input_is_quantized_for_another_reader():
    # an int8 pool there would only add a rounding and a dequantize in front of the GELU
    model = PoolIntoFloatOp().eval()
    batches = [(torch.randn(2, 3, 8, 8),)]
    converted = quantized(fxq.prepare_fx, fxq.convert_fx, fxq.get_default_qconfig_mapping("x86"), model, batches)
    pool = next(node for node in converted.graph.nodes if node.target == "pool")
    assert pool.args[0].op == "placeholder", converted.code


def test_pool_on_a_float_value_nobody_quantizes_stays_float():
    # the pool reads the model input and feeds only a float op: quantizing it would add an error and a kernel
    model = nn.Sequential(nn.MaxPool2d(2), nn.GELU()).eval()
    batches = [(torch.randn(2, 3, 8, 8),)]
    converted = quantized(fxq.prepare_fx, fxq.convert_fx, fxq.get_default_qconfig_mapping("x86"), model, batches)
    assert quantize_calls(converted) == 0, converted.code


class PairwiseInteractions(nn.Module):
    """DLRM's feature interaction: bmm of the stacked features, keep the upper triangle, concat, top MLP."""

    def __init__(self):
        super().__init__()
        self.bottom, self.top = nn.Linear(8, 8), nn.Linear(8 + 6, 4)

    def forward(self, dense, embedded):
        x = torch.relu(self.bottom(dense))
        features = torch.stack([x, embedded[:, 0], embedded[:, 1], embedded[:, 2]], dim=1)
        interactions = torch.bmm(features, features.transpose(1, 2))
        rows, cols = torch.triu_indices(4, 4, offset=1)
        return self.top(torch.cat([x, interactions[:, rows, cols]], 1))


def test_bmm_without_an_int8_kernel_is_not_quantized_before_a_selection():
    # quantizing bmm's whole output (diagonal included) before the triu selection cost 5-10 dB against torch.ao
    torch.manual_seed(0)
    model = PairwiseInteractions().eval()
    batches = [(torch.randn(8, 8), torch.randn(8, 3, 8)) for _ in range(4)]
    converted = quantized(fxq.prepare_fx, fxq.convert_fx, fxq.get_default_qconfig_mapping("x86"), model, batches)
    bmm = next(node for node in converted.graph.nodes if node.target is torch.bmm)
    assert all(user.target is not torch.quantize_per_tensor for user in bmm.users), converted.code
    tao = torch_ao()
    reference = quantized(tao.quantize_fx.prepare_fx, tao.quantize_fx.convert_fx,
                          tao.quantization.get_default_qconfig_mapping("x86"), model, batches)
    with torch.no_grad():
        expected = model(*batches[0])
        assert sqnr(expected, converted(*batches[0])) >= sqnr(expected, reference(*batches[0])) - 0.5


def test_a_cat_of_a_float_branch_and_a_sigmoid_does_not_clip_the_branch_to_the_sigmoids_range():
    # detection heads: boxes and sigmoid scores concatenated. With the head float (a user's choice or the cost
    # model's), the boxes had no observer and took the sigmoid's fixed [0, 1) one, clipping them (15 dB)
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 9, 1)

        def forward(self, x):
            y = self.head(torch.relu(self.conv(x))).permute(0, 2, 3, 1)
            return torch.cat([y[..., :4], torch.sigmoid(y[..., 4:])], -1)

    torch.manual_seed(0)
    model, x = Head().eval(), torch.randn(4, 3, 10, 10)
    mapping = fxq.get_default_qconfig_mapping().set_module_name("head", None)
    prepared = fxq.prepare_fx(model, mapping, (x,))
    prepared(x)
    assert sqnr(model(x), fxq.convert_fx(prepared)(x)) > 30
