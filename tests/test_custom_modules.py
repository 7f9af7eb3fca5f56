"""The torch.ao user guide's flows for non-traceable code, run verbatim with `import fxq`, against torch.ao."""
import copy
import operator

import pytest
import torch

import fxq
from conftest import sqnr, torch_ao
from custom_models import (DynamicQuantRecurrent, FloatLSTMLike, FloatRecurrent, FP32NonTraceable, ObservedLSTMLike,
                           ObservedLSTMLikeFloatState, ObservedLSTMLikeOutputOnly, ObservedRecurrent, SkipSubmodule,
                           StaticQuantLSTMLike, StaticQuantRecurrent, TraceOnlySubmodule, WeightOnlyQuantRecurrent,
                           WithLSTMLike, WithLSTMLikeState, WithLSTMLikeWhole, WithRecurrent)

# The custom-module flows are compared with PyTorch AO's graphs and outputs: quantized-tensor lowering (the plain
# lowering's boundary is tested in test_plain_lowering.py).
pytestmark = pytest.mark.usefixtures("quantized_lowering")

_DATA = torch.Generator().manual_seed(0)  # module-level data must not depend on what was imported before
X = torch.randn(5, 4, 8, generator=_DATA)
CALIBRATION = [torch.randn(5, 4, 8, generator=_DATA) for _ in range(4)]


def _calibrate(model):
    with torch.no_grad():
        for batch in CALIBRATION:
            model(batch)


def _run_flow(library, make, flow):
    """Run one flow with a library namespace that has prepare_fx, convert_fx and the qconfig names."""
    model = make().eval()
    torch.manual_seed(1)
    model.load_state_dict(_WEIGHTS[make])
    quantized = flow(library, model)
    with torch.no_grad():
        return quantized(X)


def _weights(make):
    torch.manual_seed(1)
    return make().state_dict()


_WEIGHTS = {make: _weights(make) for make in (TraceOnlySubmodule, SkipSubmodule, WithRecurrent)}


def _ao():
    tao = torch_ao()
    weight_only = tao.quantization.QConfig(activation=tao.quantization.PlaceholderObserver.with_args(dtype=torch.float),
                                           weight=tao.quantization.default_weight_observer)
    return _Lib(prepare_fx=tao.quantize_fx.prepare_fx, convert_fx=tao.quantize_fx.convert_fx,
                QConfigMapping=tao.quantization.QConfigMapping, qconfig=tao.quantization.get_default_qconfig("x86"),
                dynamic=tao.quantization.default_dynamic_qconfig, weight_only=weight_only)


def _fxq():
    return _Lib(prepare_fx=fxq.prepare_fx, convert_fx=fxq.convert_fx, QConfigMapping=fxq.QConfigMapping,
                qconfig=fxq.get_default_qconfig("x86"), dynamic=fxq.default_dynamic_qconfig,
                weight_only=fxq.get_weight_only_qconfig())


class _Lib:
    def __init__(self, **items):
        self.__dict__.update(items)


def _both(make, flow):
    ao_out = _run_flow(_ao(), make, flow)
    fxq_out = _run_flow(_fxq(), make, flow)
    return fxq_out, ao_out


# (a) symbolically trace only the code that needs to be quantized
def flow_a(lib, model_fp32):
    qconfig_mapping = lib.QConfigMapping().set_global(lib.qconfig)
    example_inputs = (torch.randn(5, 4, 8),)
    model_fp32.traceable_submodule = lib.prepare_fx(model_fp32.traceable_submodule, qconfig_mapping, example_inputs)
    _calibrate(model_fp32)
    model_fp32.traceable_submodule = lib.convert_fx(model_fp32.traceable_submodule)
    return model_fp32


def test_a_trace_only_the_traceable_submodule_matches_torch_ao():
    fxq_out, ao_out = _both(TraceOnlySubmodule, flow_a)
    assert sqnr(ao_out, fxq_out) >= 40


# (b) skip symbolically tracing the non-traceable code, by name (a bare str, as the guide writes it) and by class
def flow_b(option):
    def flow(lib, model_fp32):
        qconfig_mapping = lib.QConfigMapping().set_global(lib.qconfig)
        prepare_custom_config_dict = option
        if lib.prepare_fx is not fxq.prepare_fx:  # torch.ao fails on the guide's bare str; fxq takes it as written
            prepare_custom_config_dict = {k: [v] if isinstance(v, str) else v for k, v in option.items()}
        model_prepared = lib.prepare_fx(model_fp32, qconfig_mapping, (X,),
                                        prepare_custom_config=prepare_custom_config_dict)
        _calibrate(model_prepared)
        return lib.convert_fx(model_prepared)
    return flow


@pytest.mark.parametrize("option", [{"non_traceable_module_name": "non_traceable_submodule"},
                                    {"non_traceable_module_class": [FP32NonTraceable]}], ids=["name", "class"])
def test_b_skip_the_non_traceable_submodule_matches_torch_ao(option):
    fxq_out, ao_out = _both(SkipSubmodule, flow_b(option))
    assert sqnr(ao_out, fxq_out) >= 40
    quantized = flow_b(option)(_fxq(), SkipSubmodule().eval())
    assert type(quantized.non_traceable_submodule) is FP32NonTraceable  # left float, called as a leaf
    assert type(quantized.traceable_code_1.fc1).__module__.startswith("fxq.nn.quantized")


# (c) an LSTM-like loop quantized statically through the user's observed and quantized custom modules
def flow_c(lib, model_fp32):
    qconfig_mapping = lib.QConfigMapping().set_global(lib.qconfig)
    prepare_custom_config_dict = {
        "float_to_observed_custom_module_class": {"static": {FloatRecurrent: ObservedRecurrent}}}
    model_prepared = lib.prepare_fx(model_fp32, qconfig_mapping, (X,),
                                    prepare_custom_config=prepare_custom_config_dict)
    _calibrate(model_prepared)
    convert_custom_config_dict = {
        "observed_to_quantized_custom_module_class": {"static": {ObservedRecurrent: StaticQuantRecurrent}}}
    return lib.convert_fx(model_prepared, convert_custom_config_dict)


def test_c_static_custom_module_matches_torch_ao():
    fxq_out, ao_out = _both(WithRecurrent, flow_c)
    assert sqnr(ao_out, fxq_out) >= 40
    quantized = flow_c(_fxq(), WithRecurrent().eval())
    assert type(quantized.recurrent) is StaticQuantRecurrent
    node = next(n for n in quantized.graph.nodes if n.target == "recurrent")
    assert node.args[0].op == "call_module"  # the quantized fc_in's output goes straight in: no dequantize


def test_c_custom_module_from_the_global_registry():
    fxq.register_custom_module(FloatRecurrent, ObservedRecurrent, StaticQuantRecurrent)
    try:
        model = WithRecurrent().eval()
        prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (X,))
        _calibrate(prepared)
        quantized = fxq.convert_fx(prepared)
    finally:
        fxq.unregister_custom_module(FloatRecurrent)
    assert type(quantized.recurrent) is StaticQuantRecurrent
    assert sqnr(model(X), quantized(X)) >= 25


# (d) dynamic / weight-only: the custom module is only non-traceable in prepare; convert swaps it for the class
# registered under the mode its qconfig asks for
QUANTIZED_CLASS = {"dynamic": DynamicQuantRecurrent, "weight_only": WeightOnlyQuantRecurrent}


def flow_d(mode):
    def flow(lib, model_fp32):
        qconfig_mapping = lib.QConfigMapping().set_global(lib.qconfig).set_object_type(FloatRecurrent,
                                                                                       getattr(lib, mode))
        prepare_custom_config_dict = {"non_traceable_module_class": [FloatRecurrent]}
        model_prepared = lib.prepare_fx(model_fp32, qconfig_mapping, (X,),
                                        prepare_custom_config=prepare_custom_config_dict)
        _calibrate(model_prepared)
        convert_custom_config_dict = {
            "observed_to_quantized_custom_module_class": {mode: {FloatRecurrent: QUANTIZED_CLASS[mode]}}}
        return lib.convert_fx(model_prepared, convert_custom_config_dict)
    return flow


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_d_dynamic_and_weight_only_custom_module_match_torch_ao(mode):
    fxq_out, ao_out = _both(WithRecurrent, flow_d(mode))
    assert sqnr(ao_out, fxq_out) >= 40
    quantized = flow_d(mode)(_fxq(), WithRecurrent().eval())
    assert type(quantized.recurrent) is QUANTIZED_CLASS[mode]


def test_float16_dynamic_qconfig_picks_the_dynamic_classes():
    # the mode comes from fxq.modes.quant_mode alone; torch.ao files float16 dynamic under "dynamic" too
    lib = _fxq()
    lib.dynamic = fxq.float16_dynamic_qconfig
    quantized = flow_d("dynamic")(lib, WithRecurrent().eval())
    assert type(quantized.recurrent) is DynamicQuantRecurrent


# (c) with nn.LSTM's signature: lstm(x, (h0, c0)) -> (output, (h, c)); inputs and outputs are counted flat
H0, C0 = torch.randn(4, 8, generator=_DATA), torch.randn(4, 8, generator=_DATA)


def _tuple_flow(model, observed_class, inputs=(X,)):
    prepare_custom_config_dict = {"float_to_observed_custom_module_class": {"static": {FloatLSTMLike: observed_class}}}
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), inputs, prepare_custom_config_dict)
    with torch.no_grad():
        for batch in CALIBRATION:
            prepared(batch, *[torch.randn_like(i) for i in inputs[1:]])
    convert_custom_config_dict = {"observed_to_quantized_custom_module_class": {"static": {observed_class:
                                                                                          StaticQuantLSTMLike}}}
    return fxq.convert_fx(prepared, convert_custom_config_dict)


def _flat(value):
    return [leaf for item in value for leaf in _flat(item)] if isinstance(value, (tuple, list)) else [value]


def _node(gm, target):
    return next(n for n in gm.graph.nodes if n.target == target)


def test_c_tuple_returning_custom_module_where_torch_ao_fails():
    model = WithLSTMLike().eval()
    tao = torch_ao()
    prepared = tao.quantize_fx.prepare_fx(
        copy.deepcopy(model), tao.quantization.get_default_qconfig_mapping(), (X,),
        {"float_to_observed_custom_module_class": {"static": {FloatLSTMLike: ObservedLSTMLike}}})
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'numel'"):
        prepared(X)  # torch.ao puts one observer on the whole (output, (h, c)) tuple
    quantized = _tuple_flow(model, ObservedLSTMLike)
    assert type(quantized.recurrent) is StaticQuantLSTMLike
    assert _node(quantized, "fc_out").args[0].target is operator.getitem  # output[0] goes in quantized
    assert _node(quantized, "fc_h").args[0].target is operator.getitem    # so does h, through output[1][0]
    expected, actual = model(X), quantized(X)
    assert not any(t.is_quantized for t in actual)                          # c leaves the model dequantized
    assert min(sqnr(e, a) for e, a in zip(expected, actual)) >= 25


def test_custom_module_output_and_input_quantized_idxs_count_tuple_leaves():
    model = WithLSTMLike().eval()
    quantized = _tuple_flow(model, ObservedLSTMLikeOutputOnly)              # output quantized; h, c float
    assert _node(quantized, "fc_out").args[0].target is operator.getitem
    assert _node(quantized, "fc_h").args[0].target is torch.quantize_per_tensor  # float h quantized by fxq
    assert min(sqnr(e, a) for e, a in zip(model(X), quantized(X))) >= 25
    model = WithLSTMLikeState().eval()
    quantized = _tuple_flow(model, ObservedLSTMLikeFloatState, (X, H0, C0))  # (h0, c0) go in float
    state = _node(quantized, "recurrent").args[1]
    assert [n.op for n in state] == ["placeholder", "placeholder"]
    assert sqnr(model(X, H0, C0)[0], quantized(X, H0, C0)[0]) >= 25


@pytest.mark.parametrize("make", [WithLSTMLikeState, WithLSTMLikeWhole], ids=["sub_tuple", "whole_tuple"])
def test_readers_of_a_whole_result_or_sub_tuple_get_float_tensors(make):
    model = make().eval()
    inputs = (X, H0, C0) if make is WithLSTMLikeState else (X,)
    quantized = _tuple_flow(model, ObservedLSTMLike, inputs)
    if make is WithLSTMLikeState:  # h0 and c0 are quantized on the way in, like x
        assert [n.target for n in _node(quantized, "recurrent").args[1]] == [torch.quantize_per_tensor] * 2
    expected, actual = model(*inputs), quantized(*inputs)
    assert [type(v) for v in expected] == [type(v) for v in actual]  # (output, (h, c)): the same structure
    assert not any(t.is_quantized for t in _flat(actual))
    assert min(sqnr(e, a) for e, a in zip(_flat(expected), _flat(actual))) >= 25


def test_c_nn_lstm_through_torch_ao_classes_matches_torch_ao():
    """torch.ao runs tuple custom modules only for nn.LSTM; the same classes under fxq give the same outputs."""
    tao = torch_ao()
    from torch.ao.nn import quantizable, quantized as ao_quantized

    class WithLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lstm, self.fc_out = torch.nn.Linear(8, 8), torch.nn.LSTM(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x, h0, c0):
            output, (h, c) = self.lstm(self.fc(x), (h0, c0))
            return self.fc_out(output), h, c

    inputs = (X, torch.randn(1, 4, 8), torch.randn(1, 4, 8))
    calibration = [(batch, torch.randn(1, 4, 8), torch.randn(1, 4, 8)) for batch in CALIBRATION]
    model = WithLSTM().eval()
    outputs = []
    for lib in (_ao(), _fxq()):
        prepared = lib.prepare_fx(copy.deepcopy(model), lib.QConfigMapping().set_global(lib.qconfig), inputs,
                                  {"float_to_observed_custom_module_class": {"static": {torch.nn.LSTM:
                                                                                         quantizable.LSTM}}})
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        converted = lib.convert_fx(prepared, {"observed_to_quantized_custom_module_class": {
            "static": {quantizable.LSTM: ao_quantized.LSTM}}})
        outputs.append(converted(*inputs))
    assert tao is not None and type(converted.lstm) is ao_quantized.LSTM
    assert min(sqnr(a, f) for a, f in zip(*outputs)) >= 40


def test_custom_module_quantized_idxs_that_name_no_float_tensor_fail_in_prepare():
    class BadOutputs(ObservedLSTMLike):
        output_quantized_idxs = [3]

    with pytest.raises(ValueError, match=r"'recurrent' \(BadOutputs\): output_quantized_idxs.*0\.\.2"):
        _tuple_flow(WithLSTMLike().eval(), BadOutputs)


# ---- every custom-config key through to_dict / from_dict ----

class _Tracer(torch.fx.Tracer):
    pass


def test_every_custom_config_key_round_trips_through_to_dict_and_from_dict():
    child = {"input_quantized_idxs": [0], "output_quantized_idxs": [0]}
    mapping = fxq.QConfigMapping().set_global(fxq.default_qconfig).to_dict()
    every_mode = {"static": {FloatRecurrent: ObservedRecurrent}, "dynamic": {FloatLSTMLike: ObservedLSTMLike},
                  "weight_only": {FP32NonTraceable: ObservedRecurrent}}
    dicts = {
        fxq.PrepareCustomConfig: {
            "standalone_module_name": [("sub", mapping, (X,), child, None)],
            "standalone_module_class": [(FloatRecurrent, None, (), None, None)],
            "float_to_observed_custom_module_class": every_mode,
            "non_traceable_module_name": ["a", "b.c"],
            "non_traceable_module_class": [FP32NonTraceable],
            "input_quantized_idxs": [0, 1],
            "output_quantized_idxs": [0],
            "preserved_attributes": ["version"],
            "auto_leaf": True,
            "tracer_class": _Tracer,
            "tracer_options": {"param_shapes_constant": True, "concrete_args": {"skip": False}},
            "cost_model": True,
            "tracer": "export",
        },
        fxq.ConvertCustomConfig: {
            "observed_to_quantized_custom_module_class": {"static": {ObservedRecurrent: StaticQuantRecurrent},
                                                          "dynamic": {FloatRecurrent: DynamicQuantRecurrent},
                                                          "weight_only": {FloatLSTMLike: StaticQuantLSTMLike}},
            "preserved_attributes": ["version"],
            "lowering": "plain",
            "keep_roundings": True,
        },
        fxq.FuseCustomConfig: {"preserved_attributes": ["version"], "fold_linear_chains": True},
    }
    landing = {"non_traceable_module_mpath": ["**/[cls:torch.nn.LSTM]"]}  # being added concurrently
    dicts[fxq.PrepareCustomConfig].update(
        {key: value for key, value in landing.items() if key in fxq.PrepareCustomConfig.DICT_KEYS})
    for config_class, config_dict in dicts.items():
        missing = set(config_class.DICT_KEYS) - set(config_dict)
        assert not missing, f"add {sorted(missing)} to this round-trip test"
        config = config_class.from_dict(config_dict)
        assert config.to_dict() == config_dict
        assert config_class.from_dict(config.to_dict()) == config
    standalone = fxq.PrepareCustomConfig.from_dict(dicts[fxq.PrepareCustomConfig]).standalone_module_names["sub"]
    assert standalone.prepare_custom_config.output_quantized_indexes == [0]
