"""copy_module: the copy prepare_fx and convert_fx work on behaves as copy.deepcopy, parameters aside."""
import copy

import torch
from torch import fx, nn

from fxq.graph.module_copy import copy_module


class WithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.register_buffer("running", torch.ones(3))
        self.tensors = [torch.zeros(2)]
        self.settings = {"scale": 2.0}

    def forward(self, x):
        return self.linear(x) * self.settings["scale"] + self.running


class CopiesItself(nn.Module):
    """A class with its own __deepcopy__: copy_module must go through it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.copied_by_its_own_deepcopy = False

    def __deepcopy__(self, memo):
        new = CopiesItself()
        new.inner = copy.deepcopy(self.inner, memo)
        new.copied_by_its_own_deepcopy = True
        return new


def test_the_copy_shares_weights_storage_but_nothing_else():
    model = WithState()
    copied = copy_module(model)
    assert copied.linear is not model.linear and copied.linear.weight is not model.linear.weight
    assert copied.linear.weight.data_ptr() == model.linear.weight.data_ptr()
    assert copied.running.data_ptr() != model.running.data_ptr()  # buffers are copied, as deepcopy does
    assert copied.tensors[0] is not model.tensors[0] and copied.settings is not model.settings
    copied.settings["scale"] = 5.0
    assert model.settings["scale"] == 2.0
    x = torch.randn(4, 3)
    assert torch.equal(copy_module(model)(x), model(x))


def test_shared_modules_stay_shared_and_hooks_are_kept():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    calls = []
    model[1].register_forward_hook(lambda *_: calls.append(1))
    copied = copy_module(model)
    assert copied[0] is copied[2] and copied[0] is not shared
    copied(torch.randn(1, 2))
    assert calls == [1]
    assert copied[1]._forward_hooks is not model[1]._forward_hooks


def test_a_class_with_its_own_deepcopy_is_copied_through_it():
    model = nn.Sequential(CopiesItself())
    copied = copy_module(model)
    assert copied[0].copied_by_its_own_deepcopy and copied[0].inner is not model[0].inner


def test_a_graph_module_copies_with_its_code_and_its_children():
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    copied = copy_module(gm)
    assert isinstance(copied, fx.GraphModule) and copied.get_submodule("0") is not gm.get_submodule("0")
    x = torch.randn(2, 3)
    assert torch.equal(copied(x), gm(x)) and copied.code == gm.code
