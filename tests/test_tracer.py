"""The tracer: leaf rules, node scopes, and trace errors that name the module and the source line."""
import pytest
import torch
from torch import nn

import fxq
from conftest import sqnr
from fxq.graph.tracer import TraceError, scope_of, trace


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)

    def forward(self, x):
        q = self.q(x)
        return torch.matmul(q, x.transpose(-1, -2))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(Attention()) for _ in range(2)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x) @ x
        return x


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not symbolically traceable
            return x
        return -x


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.branch = DataDependent()

    def forward(self, x):
        return self.branch(self.fc(x))


def test_function_nodes_record_the_module_that_called_them():
    gm = trace(Encoder())
    matmuls = [n for n in gm.graph.nodes if n.target is torch.matmul]
    assert [scope_of(n).path for n in matmuls] == ["layers.0.0", "layers.1.0"]
    assert all(scope_of(n).type_name.endswith("Attention") for n in matmuls)
    linears = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [(scope_of(n).path, scope_of(n).type_name) for n in linears] == [
        ("layers.0.0.q", "torch.nn.Linear"), ("layers.1.0.q", "torch.nn.Linear")]


def test_builtin_layers_are_leaves_and_containers_are_not():
    gm = trace(nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU()))
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["0.0", "1"]


def test_trace_error_names_module_line_and_fix():
    with pytest.raises(TraceError) as info:
        trace(Wrapper())
    message = str(info.value)
    assert "module 'branch'" in message and "DataDependent" in message
    assert "test_tracer.py" in message and "if x.sum() > 0" in message
    assert "non_traceable_module_name" in message and "['branch']" in message
    assert info.value.module_path == "branch"


def test_non_traceable_module_name_makes_it_a_leaf():
    model = Wrapper()
    gm = trace(model, leaf_names=["branch"])
    assert "branch" in [n.target for n in gm.graph.nodes if n.op == "call_module"]
    x = torch.randn(3, 4)
    assert torch.equal(gm(x), model(x))


def test_prepare_fx_accepts_the_user_guides_bare_string_leaf_name():
    model = Wrapper().eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),),
                              prepare_custom_config={"non_traceable_module_name": "branch"})
    x = torch.randn(256, 4)
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    assert quantized.get_submodule("branch").__class__ is DataDependent  # left float, as asked
    assert sqnr(model(x), quantized(x)) > 30
