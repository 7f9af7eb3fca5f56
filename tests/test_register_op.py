"""A user teaches fxq a new op from outside the package: observed in prepare, lowered in convert."""
import pytest
import torch
from torch import nn

import fxq
import fxq.patterns as patterns
from conftest import sqnr

# A registered op's lowering row applies to the quantized-tensor lowering (the plain lowering runs it in float).
pytestmark = pytest.mark.usefixtures("quantized_lowering")


class Swish(nn.Module):
    """A user op fxq knows nothing about."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class QuantizedSwish(nn.Module):
    """The user's int8 implementation: a lookup table over the 256 input codes."""

    def __init__(self, scale: float, zero_point: int):
        super().__init__()
        self.scale, self.zero_point = scale, zero_point

    def forward(self, q):
        codes = torch.arange(256, dtype=torch.float32)
        x = (codes - q.q_zero_point()) * q.q_scale()
        table = torch.quantize_per_tensor(x * torch.sigmoid(x), self.scale, self.zero_point, torch.quint8).int_repr()
        out = table[q.int_repr().long()]
        return torch._make_per_tensor_quantized_tensor(out, self.scale, self.zero_point)

    @classmethod
    def from_float(cls, module, scale, zero_point):
        return cls(scale, zero_point)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, 16), Swish(), nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_a_registered_module_op_is_observed_and_lowered_without_editing_fxq():
    patterns.register_op(Swish, observe=patterns.Observe(patterns.OWN), lower=QuantizedSwish)
    model = Net().eval()
    x = torch.randn(64, 16)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,))
    assert "act" in [n.target for n in prepared.graph.nodes if n.op == "call_module"]  # a leaf, not traced into
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    assert isinstance(quantized.act, QuantizedSwish)
    assert quantized.code.count(".dequantize()") == 1  # fc1 -> swish -> fc2 all int8
    assert sqnr(model(x).detach(), quantized(x)) > 25
