"""The opt-in cost model: layers measured slower in int8 than in float keep no qconfig, and say why."""
import json

import torch
from torch import nn

import fxq
from fxq.nn import cost_model


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.small, self.big = nn.Linear(8, 8), nn.Linear(8, 64)

    def forward(self, x):
        return self.big(torch.relu(self.small(x)))


def _fake_costs(monkeypatch, slow_int8_out_features):
    calls = []

    def fake(kind, weight_shape, input_shape, geometry=(), engine=""):
        calls.append((kind, weight_shape, input_shape))
        slow = weight_shape[0] == slow_int8_out_features
        return cost_model.Cost(int8_ms=2.0 if slow else 0.5, float_ms=1.0)

    monkeypatch.setattr(cost_model, "layer_cost", fake)
    return calls


def test_a_layer_slower_in_int8_stays_float_with_the_reason_recorded(monkeypatch, quantized_lowering):
    calls = _fake_costs(monkeypatch, slow_int8_out_features=8)
    x = torch.randn(4, 8)
    prepared = fxq.prepare_fx(TwoLayers().eval(), fxq.get_default_qconfig_mapping(), (x,),
                              prepare_custom_config={"cost_model": True})
    assert ("linear", (8, 8), (4, 8)) in calls  # the shape the example input gives the layer
    reasons = {n.name: n.meta.get("fxq_float_reason") for n in prepared.graph.nodes}
    (relu,) = [n.name for n in prepared.graph.nodes if n.target is torch.relu]
    assert reasons["small"] == "cost model: int8 2.000 vs float 1.000 ms" and reasons["big"] is None
    assert reasons[relu] == reasons["small"]  # the relu fused into it stays float with it
    assert "float (cost model: int8 2.000 vs float 1.000 ms)" in fxq.dump(prepared)
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    assert type(quantized.small) is nn.Linear  # float, and unfused: a float Sequential only costs a module call
    first_call = next(n for n in quantized.graph.nodes if n.op != "placeholder")
    assert first_call.target == "small"  # float input straight in: no quantize in front of it
    assert quantized.big._get_name().startswith("QuantizedLinear")


def test_on_by_default_off_by_config_or_environment(monkeypatch):
    calls = _fake_costs(monkeypatch, slow_int8_out_features=8)
    monkeypatch.delenv("FXQ_COST_MODEL", raising=False)
    prepared = fxq.prepare_fx(TwoLayers().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 8),))
    assert len(calls) == 2 and any("fxq_float_reason" in n.meta for n in prepared.graph.nodes)
    calls.clear()
    fxq.prepare_fx(TwoLayers().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 8),),
                   prepare_custom_config={"cost_model": False})
    monkeypatch.setenv("FXQ_COST_MODEL", "off")
    prepared = fxq.prepare_fx(TwoLayers().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 8),))
    assert calls == [] and not any("fxq_float_reason" in n.meta for n in prepared.graph.nodes)


def test_measurements_are_cached_per_shape_and_kept_in_a_file(monkeypatch, tmp_path):
    measured = []

    def measure(weight_shape, input_shape, geometry, engine):
        measured.append(weight_shape)
        return cost_model.Cost(1.0, 2.0)

    monkeypatch.setitem(cost_model._MEASURE, "linear", measure)
    monkeypatch.setenv("FXQ_COST_CACHE", str(tmp_path / "costs.json"))
    cost_model.clear_cache()
    try:
        first = cost_model.layer_cost("linear", (16, 8), (1, 8))
        assert cost_model.layer_cost("linear", (16, 8), (1, 8)) == first and measured == [(16, 8)]
        cost_model.layer_cost("linear", (32, 8), (1, 8))
        assert measured == [(16, 8), (32, 8)]
        assert len(json.loads((tmp_path / "costs.json").read_text())) == 2
        cost_model.clear_cache()
        assert cost_model.layer_cost("linear", (16, 8), (1, 8)) == first and len(measured) == 2  # from the file
    finally:
        cost_model.clear_cache()


def test_real_measurements_are_positive_for_linear_and_conv():
    cost_model.clear_cache()
    assert cost_model.layer_cost("linear", (16, 16), (2, 16)).float_ms > 0
    conv = cost_model.layer_cost("conv2d", (4, 3, 3, 3), (1, 3, 8, 8), ((1, 1), (1, 1), (1, 1), 1))
    assert conv.int8_ms > 0 and conv.float_ms > 0


def test_each_layer_is_packed_for_its_fastest_engine_with_the_single_engine_numerics(monkeypatch, quantized_lowering):
    fastest = {(8, 8): "onednn", (64, 8): "fbgemm"}

    def fake(kind, weight_shape, input_shape, geometry=(), engine=""):
        return cost_model.Cost(int8_ms=0.1 if engine == fastest[weight_shape] else 0.5, float_ms=1.0)

    monkeypatch.setattr(cost_model, "layer_cost", fake)
    model, x = TwoLayers().eval(), torch.randn(16, 8)
    converted = {}
    for setting in (True, False):
        prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,),
                                  prepare_custom_config={"cost_model": setting})
        prepared(x)
        converted[setting] = fxq.convert_fx(prepared)
    assert (converted[True].small.engine, converted[True].big.engine) == ("onednn", "fbgemm")
    assert converted[False].small.engine == converted[False].big.engine == "x86"
    assert torch.equal(converted[True](x), converted[False](x))


def test_an_engine_name_pins_the_engine(monkeypatch, quantized_lowering):
    measured_engines = set()

    def fake(kind, weight_shape, input_shape, geometry=(), engine=""):
        measured_engines.add(engine)
        return cost_model.Cost(0.1, 1.0)

    monkeypatch.setattr(cost_model, "layer_cost", fake)
    x = torch.randn(4, 8)
    prepared = fxq.prepare_fx(TwoLayers().eval(), fxq.get_default_qconfig_mapping(), (x,),
                              prepare_custom_config=fxq.PrepareCustomConfig().set_cost_model("onednn"))
    prepared(x)
    assert measured_engines == {"onednn"} and fxq.convert_fx(prepared).big.engine == "onednn"


def test_a_near_tie_keeps_the_default_engine(monkeypatch):
    monkeypatch.setattr(cost_model, "layer_cost", lambda kind, w, i, g=(), engine="": cost_model.Cost(
        int8_ms=0.95 if engine == "onednn" else 1.0, float_ms=10.0))
    engine, _ = cost_model.fastest_int8("linear", (8, 8), (4, 8))
    assert engine == torch.backends.quantized.engine == "x86"  # 5% faster is within timing noise


def test_compare_pairs_a_fused_layer_the_cost_model_split_with_its_relu(monkeypatch):
    _fake_costs(monkeypatch, slow_int8_out_features=8)
    model, data = TwoLayers().eval(), [torch.randn(4, 8) for _ in range(3)]
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],),
                              prepare_custom_config={"cost_model": True})
    prepared(data[0])
    errors = {e.node: e for e in fxq.compare(model, fxq.convert_fx(prepared), data)}
    assert errors["small"].sqnr_db > 40  # its linear + relu is compared (the rounding for big), not the linear alone


def test_functional_linears_of_exported_graphs_are_measured_too(monkeypatch):
    calls = _fake_costs(monkeypatch, slow_int8_out_features=8)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 8))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight)

    prepared = fxq.prepare_fx(Functional().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(4, 8),),
                              prepare_custom_config={"cost_model": True})
    assert ("linear", (8, 8), (4, 8)) in calls
    (linear,) = [n for n in prepared.graph.nodes if n.target is torch.nn.functional.linear]
    assert linear.meta["fxq_float_reason"].startswith("cost model")
