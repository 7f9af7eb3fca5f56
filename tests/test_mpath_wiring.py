"""mpath queries wired into the other configs: non-traceable modules, equalization selection, weight-only
exclusions, and the quantizer tags a custom module declares (passes/tag_declared_quantizers.py)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fxq
from conftest import sqnr
from fxq.config import PrepareCustomConfig, QConfigMapping, default_qconfig
from fxq.equalization import InputEqualizationObserver
from fxq.mpath import MPathError
from fxq.nn.quantized import weight_only

# Selected layers are checked through the quantized-tensor modules' class.
pytestmark = pytest.mark.usefixtures("quantized_lowering")


class Gate(nn.Module):
    """Data-dependent control flow: symbolic tracing fails inside it."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -x


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(8, 8)
        self.gate = Gate()
        self.blocks = nn.Sequential(nn.Sequential(Gate(), nn.Linear(8, 8)), nn.Linear(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.gate(self.stem(x)))


class Stack(nn.Module):
    """blocks.N.fc layers and a head."""

    def __init__(self, width: int = 32, depth: int = 3, act: type = nn.ReLU):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"fc": nn.Linear(width, width), "act": act()})
                                    for _ in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block["act"](block["fc"](x))
        return self.head(x)


def _stack(act: type = nn.ReLU) -> tuple:
    torch.manual_seed(0)
    x = torch.randn(64, 32) * torch.linspace(0.1, 8.0, 32)  # skewed channels: equalization has work to do
    return Stack(act=act).eval(), x


# ---- non-traceable modules by query ----

def test_non_traceable_query_makes_the_selected_modules_leaves():
    model, x = Gated().eval(), torch.randn(2, 8)
    with pytest.raises(fxq.TraceError):  # the gates cannot be traced: the query is what makes prepare work
        fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), (x,))
    config = PrepareCustomConfig().set_non_traceable_module_mpath(f"**/[cls:{__name__}.Gate]")
    prepared = fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), (x,), prepare_custom_config=config)
    called = [n.target for n in prepared.graph.nodes if n.op == "call_module" and not n.target.startswith("activ")]
    assert called == ["stem", "gate", "blocks.0.0", "blocks.0.1", "blocks.1"]  # gates whole, nothing inside them
    prepared(x)
    converted = fxq.convert_fx(prepared)
    assert type(converted.gate) is Gate and type(converted.gate.fc) is nn.Linear  # a leaf stays float inside
    assert type(converted.get_submodule("blocks.0.1")).__module__.startswith("fxq.nn.quantized")
    assert sqnr(model(x), converted(x)) > 20


def test_non_traceable_query_round_trips_and_checks_its_input():
    config = PrepareCustomConfig().set_non_traceable_module_mpath(["**/gate", "blocks/*/[re:0]"])
    assert config.to_dict() == {"non_traceable_module_mpath": ["**/gate", "blocks/*/[re:0]"]}
    assert PrepareCustomConfig.from_dict(config.to_dict()) == config
    assert PrepareCustomConfig.from_dict({"non_traceable_module_mpath": "**/gate"}).non_traceable_module_mpaths == [
        "**/gate"]
    with pytest.raises(ValueError, match="non_traceable_module_mpaths"):  # unknown keys still raise
        PrepareCustomConfig.from_dict({"non_traceable_module_mpaths": ["**/gate"]})
    with pytest.raises(MPathError, match="not closed"):  # a bad query fails when set, not inside prepare_fx
        PrepareCustomConfig().set_non_traceable_module_mpath("**/[cls:")


def test_non_traceable_query_that_selects_nothing_warns():
    config = PrepareCustomConfig().set_non_traceable_module_mpath("**/gates")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(fxq.TraceError):
        warnings.simplefilter("always")
        fxq.prepare_fx(Gated().eval(), QConfigMapping().set_global(default_qconfig), (torch.randn(2, 8),),
                       prepare_custom_config=config)
    assert any("'**/gates' selects no submodule of Gated" in str(w.message) for w in caught)


# ---- equalization selection by query ----

def _equalized_layers(prepared) -> list:
    modules = dict(prepared.named_modules())
    return [n.target for n in prepared.graph.nodes if n.op == "call_module" and n.args
            and getattr(n.args[0], "op", None) == "call_module"
            and isinstance(modules[n.args[0].target], InputEqualizationObserver)]


@pytest.mark.parametrize("equalization, expected", [
    (QConfigMapping().set_mpath("blocks/*/fc", fxq.default_equalization_qconfig),
     ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc"]),
    (QConfigMapping().set_global(fxq.default_equalization_qconfig).set_mpath("head", None),
     ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc"]),
    (QConfigMapping().set_global(fxq.default_equalization_qconfig).set_mpath("blocks/{0, 2}/**", None),
     ["blocks.1.fc", "head"]),
], ids=["select", "exclude-head", "exclude-blocks"])
def test_equalization_selects_layers_by_query(equalization, expected):
    model, x = _stack()
    prepared = fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), (x,),
                              _equalization_config=equalization)
    assert _equalized_layers(prepared) == expected
    prepared(x)
    converted = fxq.convert_fx(prepared)
    scaled = sorted(name[:-len("_equalization_scale")] for name, _ in converted.named_buffers()
                    if name.endswith("_equalization_scale") and "input" not in name)
    assert scaled == sorted(layer.replace(".", "_") for layer in expected)
    assert sqnr(model(x), converted(x)) > 20


# ---- weight-only exclusions by query ----

def test_weight_only_exclusions_accept_queries():
    model, x = _stack(act=nn.GELU)  # not fused with the linear: each fc stays one module
    mapping = fxq.get_weight_only_qconfig_mapping(exclude=["blocks/{0, 2}/fc"])
    prepared = fxq.prepare_fx(model, mapping, (x,))
    prepared(x)
    converted = fxq.convert_fx(prepared)
    kinds = {path: type(converted.get_submodule(path)) for path in
             ("blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "head")}
    assert kinds == {"blocks.0.fc": nn.Linear, "blocks.1.fc": weight_only.Linear, "blocks.2.fc": nn.Linear,
                     "head": weight_only.Linear}
    assert sqnr(model(x), converted(x)) > 30
    # a module name still excludes that module and everything inside it; names and queries mix
    mixed = fxq.get_weight_only_qconfig_mapping(exclude=["head", "blocks/*/[re:f.]"])
    assert dict(mixed.module_name_qconfigs) == {"head": None} and list(mixed.mpath_qconfigs) == [
        "blocks/*/[re:f.]"]


# ---- quantizer tags a custom module declares ----

class Doubler(nn.Module):
    def forward(self, data: torch.Tensor) -> torch.Tensor:
        return data * 2


class ObservedDoubler(Doubler):
    fxq_qtags = {"input": "my_tag_hierarchy/my_tag/input", "output": "my_tag_hierarchy/my_tag/output"}

    @classmethod
    def from_float(cls, module: nn.Module) -> "ObservedDoubler":
        return cls()


class QuantizedDoubler(nn.Module):
    @classmethod
    def from_observed(cls, module: nn.Module) -> "QuantizedDoubler":
        return cls()

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return torch.quantize_per_tensor(q.dequantize() * 2, q.q_scale() * 2, q.q_zero_point(), q.dtype)


class WithDoubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.custom, self.fc = Doubler(), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.custom(x))


def _prepare_with_doubler(observed_class=ObservedDoubler) -> tuple:
    torch.manual_seed(0)
    model, x = WithDoubler().eval(), torch.randn(8, 4)
    config = PrepareCustomConfig().set_float_to_observed_mapping(Doubler, observed_class)
    prepared = fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), (x,), prepare_custom_config=config)
    return model, prepared, x


def test_custom_module_declares_its_quantizer_tags():
    model, prepared, x = _prepare_with_doubler()
    both = fxq.find_quantizers(prepared, "**/[quantizer:my_tag_hierarchy/my_tag]")
    assert [n.meta["fxq_qtag"] for n in both.nodes] == ["my_tag_hierarchy/my_tag/input",
                                                        "my_tag_hierarchy/my_tag/output"]
    assert [n.args[0].name for n in both.nodes] == ["x", "custom"]
    assert fxq.find_quantizers(prepared, "custom/[quantizer:my_tag_hierarchy/my_tag/input]").nodes == both.nodes[:1]
    assert fxq.find_quantizers(prepared, "custom/[quantizer:my_tag_hierarchy/my_tag/output]").nodes == both.nodes[1:]
    assert len(fxq.find_quantizers(prepared, "**/[quantizer:input]")) == 0
    assert len(fxq.find_quantizers(prepared, "custom/[qtag:activation]")) == 0  # the default tags are gone
    assert len(fxq.find_quantizers(prepared, "fc/[qtag:activation/output]")) == 1  # other ops keep theirs
    both.initialize(fxq.observers.MinMaxObserver, dtype=torch.quint8, reduce_range=True)  # fbgemm needs 7 bits
    prepared(x)
    converted = fxq.convert_fx(prepared, convert_custom_config=fxq.ConvertCustomConfig()
                               .set_observed_to_quantized_mapping(ObservedDoubler, QuantizedDoubler))
    assert type(converted.custom) is QuantizedDoubler
    assert sqnr(model(x), converted(x)) > 25  # the retagged observers still quantize the custom module's edges


def test_a_shared_input_observer_keeps_its_tag_and_bad_declarations_raise():
    class SharedInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.custom, self.fc = Doubler(), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.custom(x)  # x's observer is the linear's input observer too

    config = PrepareCustomConfig().set_float_to_observed_mapping(Doubler, ObservedDoubler)
    prepared = fxq.prepare_fx(SharedInput().eval(), QConfigMapping().set_global(default_qconfig),
                              (torch.randn(8, 4),), prepare_custom_config=config)
    assert len(fxq.find_quantizers(prepared, "**/[qtag:my_tag_hierarchy/my_tag/input]")) == 0
    assert len(fxq.find_quantizers(prepared, "custom/[qtag:my_tag_hierarchy/my_tag/output]")) == 1

    class BadlyTagged(ObservedDoubler):
        fxq_qtags = {"inputs": "a/b"}

    with pytest.raises(TypeError, match=r"module 'custom' \(BadlyTagged\) declares fxq_qtags"):
        _prepare_with_doubler(BadlyTagged)


def test_set_mpath_picks_the_mode_of_a_custom_module():
    # the custom-module pass looks the qconfig up again for modes no kernel runs: with the node, so set_mpath counts
    from custom_models import DynamicQuantRecurrent, FloatRecurrent, WithRecurrent

    torch.manual_seed(0)
    model, x = WithRecurrent().eval(), torch.randn(5, 4, 8)  # (time, batch, features)
    mapping = QConfigMapping().set_global(default_qconfig).set_mpath("recurrent", fxq.default_dynamic_qconfig)
    prepared = fxq.prepare_fx(model, mapping, (x,), {"non_traceable_module_class": [FloatRecurrent]})
    prepared(x)
    converted = fxq.convert_fx(prepared, {"observed_to_quantized_custom_module_class": {
        "dynamic": {FloatRecurrent: DynamicQuantRecurrent}}})
    assert type(converted.recurrent) is DynamicQuantRecurrent
    assert type(converted.fc_in).__module__.startswith("fxq.nn.quantized")  # the rest stays static int8
    assert sqnr(model(x), converted(x)) > 20
