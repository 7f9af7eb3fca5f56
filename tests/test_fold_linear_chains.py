"""Folding chains of linear maps into one Linear (FuseCustomConfig fold_linear_chains)."""
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import sqnr

FOLD = {"fold_linear_chains": True}


class FunctionalChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(32, 16)), nn.Parameter(torch.randn(32))
        self.w2, self.b2 = nn.Parameter(torch.randn(8, 32)), nn.Parameter(torch.randn(8))

    def forward(self, x):
        return F.linear(F.linear(x, self.w1, self.b1), self.w2, self.b2)


def _linears(gm):
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if (n.op == "call_module" and isinstance(modules[n.target], nn.Linear))
            or n.target is F.linear]


def test_three_linears_with_dropout_and_identity_between_become_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.Linear(64, 64), nn.Identity(),
                          nn.Linear(64, 10)).eval()
    folded = fxq.fuse_fx(model, FOLD)
    assert len(_linears(folded)) == 1
    x = torch.randn(32, 16)
    assert (folded(x) - model(x)).abs().max() <= 1e-5


def test_functional_chain_folds():
    torch.manual_seed(0)
    model = FunctionalChain().eval()
    folded = fxq.fuse_fx(model, FOLD)
    assert len(_linears(folded)) == 1
    x = torch.randn(4, 16)
    assert (folded(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()


def test_a_value_with_other_users_is_not_folded_through():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) + h

    folded = fxq.fuse_fx(Branch().eval(), FOLD)
    assert len(_linears(folded)) == 2


def test_folding_is_off_by_default_and_relu_stops_it():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).eval()
    assert len(_linears(fxq.fuse_fx(model))) == 2  # linear+relu fused (LinearReLU is an nn.Sequential)
    assert type(fxq.fuse_fx(model, FOLD).get_submodule("0")).__name__ == "LinearReLU"  # 0,1 folded then fused


def test_folded_chain_quantizes_with_one_rounding_instead_of_two():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)).eval()
    x = torch.randn(256, 64)
    results = {}
    for name, source in (("unfolded", model), ("folded", fxq.fuse_fx(model, FOLD))):
        prepared = fxq.prepare_fx(source, fxq.get_default_qconfig_mapping(), (x,))
        prepared(x)
        results[name] = sqnr(model(x).detach(), fxq.convert_fx(prepared)(x))
    print(f"int8 SQNR vs float: unfolded {results['unfolded']:.1f} dB, folded {results['folded']:.1f} dB")
    assert results["folded"] > results["unfolded"]
