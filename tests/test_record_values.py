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


def _record(model: nn.Module, example: tuple, compute_every_layer: bool = False) -> dict:
    gm = fx.GraphModule(model, _EveryModuleALeaf().trace(model))
    if compute_every_layer:
        with torch.no_grad():
            record_values._Recorder(gm, compute_layers=True).run(*example)
    else:
        record_values.run(gm, PassContext(example_inputs=example))
    return {node.name: record_values.value_of(node) for node in gm.graph.nodes}


def _log_layer_inputs(monkeypatch) -> list:
    """The device of every input given to F.conv*d / F.linear from here on."""
    devices = []
    for name in ("conv1d", "conv2d", "conv3d", "linear"):
        real = getattr(torch.nn.functional, name)
        monkeypatch.setattr(torch.nn.modules.conv.F if name != "linear" else torch.nn.modules.linear.F, name,
                            lambda x, *a, real=real, **k: devices.append(x.device.type) or real(x, *a, **k))
    return devices


def test_shapes_and_dtypes_equal_those_of_the_computed_run(monkeypatch):
    devices = _log_layer_inputs(monkeypatch)
    monkeypatch.setattr(record_values, "_WORTH_A_META_KERNEL", 0)  # every conv, however small
    model, example = ConvNet().eval(), (torch.randn(1, 3, 16),)
    recorded = _record(model, example)
    assert devices == ["meta"] * 3  # no layer ran on real data; the linear's shape needs no kernel
    devices.clear()
    assert recorded == _record(model, example, compute_every_layer=True)
    assert devices == ["cpu"] * 4
    assert recorded["linear"].shape == (1, 2, 3, 6, 7) and recorded["getitem_1"].type_name == "int"


def test_small_convs_are_computed_and_large_ones_are_not(monkeypatch):
    devices = _log_layer_inputs(monkeypatch)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 64, 3), nn.Conv2d(64, 64, 3))
    recorded = _record(model.eval(), (torch.randn(1, 3, 32, 32),))
    assert devices == ["cpu", "meta", "meta"]  # 3*9*8 MACs per position is cheaper to compute than to skip
    assert recorded["_2"].shape == (1, 64, 26, 26)


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


def test_recording_a_model_in_training_mode_leaves_its_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU()).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    gm = fx.symbolic_trace(model)
    record_values.run(gm, PassContext(example_inputs=(torch.randn(2, 3, 16, 16),)))
    assert all(torch.equal(value, before[name]) for name, value in gm.state_dict().items())
    assert gm.training and record_values.value_of(list(gm.graph.nodes)[2]).shape == (2, 64, 14, 14)
