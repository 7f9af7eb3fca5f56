"""record_values: shapes and dtypes of every node, without computing plain convolutions and linears."""
import pytest
import torch
from torch import fx, nn

from fxq.passes import record_values
from fxq.passes.context import PassContext


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 3, stride=2, padding=1)
        self.conv2d = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", groups=2, bias=False)
        self.conv3d = nn.Conv3d(6, 2, (1, 2, 2), dilation=(1, 2, 1))
        self.linear = nn.Linear(5, 7)

    def forward(self, x):
        y = self.conv1d(x)  # (1, 4, 8)
        y = self.conv2d(y.reshape(1, 4, 2, 4).repeat(1, 1, 4, 2))
        y = self.conv3d(y.unsqueeze(2).repeat(1, 1, 3, 1, 1))
        return self.linear(y[..., :5]).relu(), y.shape[-1]


class _EveryModuleALeaf(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def _record(model: nn.Module, example: tuple) -> dict:
    gm = fx.GraphModule(model, _EveryModuleALeaf().trace(model))
    record_values.run(gm, PassContext(example_inputs=example))
    return {node.name: record_values.value_of(node) for node in gm.graph.nodes}


def _record_computing_every_layer(model: nn.Module, example: tuple) -> dict:
    gm = fx.GraphModule(model, _EveryModuleALeaf().trace(model))
    with torch.no_grad():
        record_values._Recorder(gm, compute_layers=True).run(*example)
    return {node.name: record_values.value_of(node) for node in gm.graph.nodes}


def test_shapes_and_dtypes_equal_those_of_the_computed_run(monkeypatch):
    computed_inputs = []
    for name in ("conv1d", "conv2d", "conv3d", "linear"):
        real = getattr(torch.nn.functional, name)
        monkeypatch.setattr(torch.nn.modules.conv.F if name != "linear" else torch.nn.modules.linear.F, name,
                            lambda x, *a, real=real, **k: computed_inputs.append(x.device.type) or real(x, *a, **k))
    model, example = ConvNet().eval(), (torch.randn(1, 3, 16),)
    recorded = _record(model, example)
    assert set(computed_inputs) == {"meta"}  # no layer ran on real data
    computed_inputs.clear()
    assert recorded == _record_computing_every_layer(model, example)
    assert set(computed_inputs) == {"cpu"}
    assert recorded["linear"].shape == (1, 2, 3, 6, 7) and recorded["getitem_1"].type_name == "int"


def test_layers_with_hooks_or_subclasses_still_run():
    calls = []
    hooked = nn.Linear(4, 4)
    hooked.register_forward_hook(lambda module, inputs, output: calls.append(output.abs().sum().item()))

    class Doubling(nn.Linear):
        def forward(self, x):
            calls.append("subclass")
            return super().forward(x) * 2

    recorded = _record(nn.Sequential(hooked, Doubling(4, 4)), (torch.randn(2, 4),))
    assert calls[0] > 0 and calls[1] == "subclass"  # the hook saw the real output
    assert recorded["_1"].shape == (2, 4)


class NeedsNonzero(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        y = self.linear(x)
        torch._assert(y.abs().sum() > 0, "zeros reached a layer that cannot take them")
        return y


def test_a_model_that_fails_on_zeros_is_recorded_by_computing_every_layer():
    recorded = _record(NeedsNonzero().eval(), (torch.randn(2, 4),))
    assert recorded["linear"].shape == (2, 4) and recorded["output"].dtype == torch.float32


def test_inputs_that_do_not_fit_a_layer_name_that_layer():
    with pytest.raises(ValueError, match=r"node 'conv1d' \(call_module conv1d\).*expected input\[1, 5, 16\] to have 3 channels"):
        _record(ConvNet().eval(), (torch.randn(1, 5, 16),))
    with pytest.raises(ValueError, match=r"node 'linear' .*mat1 and mat2"):
        _record(NeedsNonzero().eval(), (torch.randn(2, 3),))
