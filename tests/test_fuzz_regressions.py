"""Graphs the fuzzer (tests/test_fuzz.py, tools/fuzz.py) found broken, shrunk and written out as small models.

Each test names what fxq got wrong and fails on the code before its fix.
"""
import pytest
import torch
from torch import nn

import fxq
from conftest import sqnr

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _convert(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    prepared = fxq.prepare_fx(model.eval(), fxq.get_default_qconfig_mapping("x86"), (example,))
    with torch.no_grad():
        prepared(example)
    return fxq.convert_fx(prepared)


class DeadBranch(nn.Module):
    """A branch whose result nothing uses, beside a Linear whose output qparams lowering moves into the module."""

    def __init__(self):
        super().__init__()
        self.linear, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        branch = torch.sigmoid(self.unused(x))  # noqa: F841  (dead, as in half the fuzzed graphs)
        return self.linear(x)


def test_converted_model_carries_no_buffer_its_graph_does_not_read():
    # Found by the fuzzer: convert_fx kept the qparam buffers of dead nodes ('unused_scale', 'sigmoid_scale')
    # and of outputs lowered into quantized modules ('linear_scale') in the root's state_dict.
    converted = _convert(DeadBranch(), torch.randn(8, 4))
    read = {node.target for node in converted.graph.nodes if node.op == "get_attr"}
    assert set(converted._buffers) == read, f"unread buffers: {sorted(set(converted._buffers) - read)}"
    assert set(converted._buffers) == {"x_scale", "x_zero_point"}


class SharedLinearOneCallDead(nn.Module):
    """``self.linear`` called twice; only the second call's result is read, and a ReLU follows it."""

    def __init__(self):
        super().__init__()
        self.linear, self.relu = nn.Linear(8, 8), nn.ReLU()

    def forward(self, x):
        unused = self.linear(x)  # noqa: F841
        return self.relu(self.linear(x))


class SharedLinearBothCallsRead(SharedLinearOneCallDead):
    def forward(self, x):
        plain = self.linear(x)
        return self.relu(self.linear(x)), plain


def test_a_dead_call_does_not_block_fusing_a_module_with_its_relu():
    # Found by the fuzzer (SQNR vs float 2 dB under torch.ao's): fusion skipped Linear -> ReLU because a dead
    # call also used the Linear, so the int8 Linear spent half its output range on negatives the ReLU drops.
    model = SharedLinearOneCallDead().eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(4, 8),))
    assert type(prepared.get_submodule("linear")).__name__ == "LinearReLU"
    x = torch.randn(32, 8)
    with torch.no_grad():
        prepared(x)
        assert sqnr(model(x), fxq.convert_fx(prepared)(x)) >= 35


def test_a_module_whose_other_call_is_read_is_still_not_fused():
    # torch.ao fuses it anyway and applies the ReLU to the other call too (3 dB there); fxq must not.
    model = SharedLinearBothCallsRead().eval()
    x = torch.randn(32, 8)
    converted = _convert(model, x)
    with torch.no_grad():
        expected, got = model(x), converted(x)
    assert sqnr(expected[1], got[1]) >= 30
    assert sqnr(expected[0], got[0]) >= 30


class SharedFusedLinear(nn.Module):
    """``self.fc`` called twice, only the second call followed by a ReLU (so fuse makes it a LinearReLU)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(11, 6, bias=False)

    def forward(self, x):
        self.fc(x)  # dead, as in the fuzzed graph
        return torch.relu(self.fc(x))


def test_the_cost_model_keeps_a_shared_fused_layer_whole(monkeypatch):
    # Found by the fuzzer (seed 7, 1000 graphs): the cost model left the first call float and split the fused
    # Linear + ReLU under it; the second call then ran the bare Linear and lost its ReLU (0.2 dB).
    from fxq.nn import cost_model
    monkeypatch.setattr(cost_model, "layer_cost", lambda *args, **kwargs: cost_model.Cost(int8_ms=2.0, float_ms=1.0))
    model, x = SharedFusedLinear().eval(), torch.randn(4, 11)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,), {"cost_model": True})
    prepared(x)
    assert torch.equal(fxq.convert_fx(prepared)(x), model(x))  # every layer float, every relu kept


class LinearTwiceSecondFloat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_a_float_call_of_a_shared_module_keeps_the_float_module():
    # Also behind that fuzzed graph: when the first call of a shared module was int8 and a later one float, the
    # first kept the module's name, lowering swapped the module, and the float call ran the int8 one (it failed)
    model, x = LinearTwiceSecondFloat().eval(), torch.randn(8, 16)
    mapping = fxq.get_default_qconfig_mapping().set_module_name_object_type_order("", nn.Linear, 1, None)
    prepared = fxq.prepare_fx(model, mapping, (x,))
    prepared(x)
    converted = fxq.convert_fx(prepared)
    assert type(converted.fc) is nn.Linear  # the float call's module, untouched
    assert sqnr(model(x), converted(x)) > 30
