"""The torch.ao user guide's flows for non-traceable code, run verbatim with `import fxq`, against torch.ao."""
import copy

import pytest
import torch

import fxq
from conftest import sqnr, torch_ao
from custom_models import (DynamicQuantRecurrent, FloatRecurrent, FP32NonTraceable, ObservedRecurrent,
                           SkipSubmodule, StaticQuantRecurrent, TraceOnlySubmodule, WithRecurrent)

X = torch.randn(5, 4, 8)
CALIBRATION = [torch.randn(5, 4, 8) for _ in range(4)]


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
    return _Lib(prepare_fx=tao.quantize_fx.prepare_fx, convert_fx=tao.quantize_fx.convert_fx,
                QConfigMapping=tao.quantization.QConfigMapping, qconfig=tao.quantization.get_default_qconfig("x86"),
                dynamic=tao.quantization.default_dynamic_qconfig)


def _fxq():
    return _Lib(prepare_fx=fxq.prepare_fx, convert_fx=fxq.convert_fx, QConfigMapping=fxq.QConfigMapping,
                qconfig=fxq.get_default_qconfig("x86"), dynamic=fxq.default_dynamic_qconfig)


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


# (d) dynamic: the custom module is only non-traceable in prepare; convert swaps it for the dynamic class
def flow_d(lib, model_fp32):
    qconfig_mapping = lib.QConfigMapping().set_global(lib.qconfig).set_object_type(FloatRecurrent, lib.dynamic)
    prepare_custom_config_dict = {"non_traceable_module_class": [FloatRecurrent]}
    model_prepared = lib.prepare_fx(model_fp32, qconfig_mapping, (X,),
                                    prepare_custom_config=prepare_custom_config_dict)
    _calibrate(model_prepared)
    convert_custom_config_dict = {
        "observed_to_quantized_custom_module_class": {"dynamic": {FloatRecurrent: DynamicQuantRecurrent}}}
    return lib.convert_fx(model_prepared, convert_custom_config_dict)


def test_d_dynamic_custom_module_matches_torch_ao():
    fxq_out, ao_out = _both(WithRecurrent, flow_d)
    assert sqnr(ao_out, fxq_out) >= 40
    quantized = flow_d(_fxq(), WithRecurrent().eval())
    assert type(quantized.recurrent) is DynamicQuantRecurrent
