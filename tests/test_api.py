"""prepare_fx / convert_fx behaviour beyond the zoo: errors that say how to fix them, configs that never fail
silently, ops torch.ao leaves in float, and the per-pass dumps."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxq
from conftest import saved_and_loaded, sqnr
from fxq.passes import pipeline


def _quantize(model, example, calibration=None, mapping=None, **kwargs):
    prepared = fxq.prepare_fx(model.eval(), mapping or fxq.get_default_qconfig_mapping(), example, **kwargs)
    with torch.no_grad():
        for batch in calibration or [example]:
            prepared(*batch)
    return prepared, fxq.convert_fx(prepared)


class LinearSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=-1)


class Gates(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return torch.sigmoid(y) * torch.tanh(y)


# ---- ops torch.ao leaves in float ----

def test_functional_softmax_on_a_quantized_input_runs_the_quantized_kernel(quantized_lowering):
    x = torch.randn(64, 16)
    model = LinearSoftmax().eval()
    _, quantized = _quantize(model, (x,))
    assert "torch.ops.quantized.softmax" in quantized.code
    assert sqnr(model(x).detach(), quantized(x)) > 25


def test_fixed_qparams_ops_run_on_quantized_tensors_with_torch_aos_ranges(quantized_lowering):
    x = torch.randn(64, 8)
    model = Gates().eval()
    _, quantized = _quantize(model, (x,))
    code = quantized.code
    assert "torch.sigmoid(fc)" in code and "torch.tanh(fc)" in code  # on the int8 output of fc, no dequantize
    assert "torch.ops.quantized.mul" in code
    assert sqnr(model(x).detach(), quantized(x)) > 25


# ---- configs never fail silently ----

def test_none_for_linear_keeps_a_fused_linear_relu_float():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)).eval()
    mapping = fxq.get_default_qconfig_mapping().set_object_type(nn.Linear, None)
    _, quantized = _quantize(model, (torch.randn(8, 4),), mapping=mapping)
    assert not any("Quantized" in type(m).__name__ for m in quantized.modules())
    assert "quantize_per_tensor" not in quantized.code


def test_a_dynamic_qconfig_on_a_conv_warns_that_it_stays_float():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Flatten(), nn.Linear(12, 4)).eval()
    mapping = fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig)
    with pytest.warns(UserWarning, match=r"no dynamic/weight-only kernel for _0 \(0\): left float"):
        _, quantized = _quantize(model, (torch.randn(2, 3, 2, 2),), mapping=mapping)
    assert type(quantized.get_submodule("0")) is nn.Conv2d
    assert "Dynamic" in quantized.get_submodule("2")._get_name()


def test_unknown_qconfig_dict_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'modul_name'.*'module_name'"):
        fxq.prepare_fx(nn.Linear(2, 2).eval(), {"": fxq.default_qconfig, "modul_name": []}, (torch.randn(1, 2),))


def test_unknown_custom_config_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="non_traceable_module_name"):
        fxq.prepare_fx(nn.Linear(2, 2).eval(), fxq.get_default_qconfig_mapping(), (torch.randn(1, 2),),
                       prepare_custom_config={"non_tracable_module_name": ["x"]})


# ---- bad input ----

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.mean() > 0:  # data-dependent: cannot be traced
            return self.fc(x)
        return x


def test_untraceable_model_names_module_and_line():
    with pytest.raises(fxq.TraceError, match=r"test_api.py:\d+: if x.mean\(\) > 0") as info:
        fxq.prepare_fx(nn.Sequential(Branchy()).eval(), fxq.get_default_qconfig_mapping(), (torch.randn(1, 4),))
    assert "module '0'" in str(info.value) and "non_traceable_module_name" in str(info.value)


def test_convert_of_a_model_not_from_prepare_fx_says_what_to_call():
    with pytest.raises(ValueError, match=r"fxq.prepare_fx\(model, qconfig_mapping, example_inputs\)"):
        fxq.convert_fx(torch.fx.symbolic_trace(nn.Linear(2, 2)))


def test_example_inputs_that_do_not_fit_name_the_node():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    with pytest.raises(ValueError, match=r"example_inputs do not fit the model: node '_0'.*module '0'"):
        fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 5),))
    with pytest.raises(ValueError, match="one example per argument"):
        fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4), torch.randn(2, 4)))
    with pytest.raises(TypeError, match=r"example_inputs=\(x,\)"):
        fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), torch.randn(2, 4))


def test_an_op_whose_observer_saw_no_data_stays_float_with_a_warning():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    with pytest.warns(UserWarning, match=r"observer 'activation_post_process_0' on 'input_1' saw no data"):
        quantized = fxq.convert_fx(prepared)  # converted without calibration
    assert not any("Quantized" in type(m).__name__ for m in quantized.modules())
    x = torch.randn(3, 4)
    assert torch.allclose(quantized(x), model(x))  # float, not garbage scales


def test_warnings_about_many_uncalibrated_observers_are_capped_and_written_out_in_full(tmp_path):
    model = nn.Sequential(*(nn.Linear(4, 4) for _ in range(30))).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    with pytest.warns(UserWarning) as caught:
        fxq.convert_fx(prepared, debug_dump_dir=str(tmp_path))
    message = str(caught[0].message)
    assert "none of the 31 observers has seen a batch" in message  # one line saying what to do, first
    assert message.count("saw no data") == 9
    assert "and 22 more" in message  # 31 observers: the input and each linear's output
    assert len((tmp_path / "convert" / "warnings.txt").read_text().splitlines()) == 32


def test_prepare_never_modifies_the_users_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    _quantize(model, (torch.randn(2, 3, 8, 8),))
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- dumps ----

def test_debug_dump_dir_has_the_graph_after_every_pass_and_timings(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),),
                              debug_dump_dir=str(tmp_path))
    prepared(torch.randn(8, 4))
    fxq.convert_fx(prepared, debug_dump_dir=str(tmp_path))
    prepare_files = sorted(p.name for p in (tmp_path / "prepare").iterdir())
    def expected(passes):  # one numbered file per pass of the pipeline, in its order
        return [f"{i:02d}-{run.__module__.rsplit('.', 1)[-1]}.txt" for i, run in enumerate(passes, 1)] + ["timing.txt"]
    assert prepare_files[:8] == ["01-functionalize_inplace.txt", "02-record_values.txt", "03-fuse.txt",
                                 "04-choose_default_mapping.txt", "05-layer_modules.txt", "06-assign_qconfig.txt",
                                 "07-cost_model.txt", "08-insert_observers.txt"]
    assert prepare_files == expected(pipeline.PREPARE)
    convert_files = sorted(p.name for p in (tmp_path / "convert").iterdir())
    assert convert_files == expected(pipeline.CONVERT)
    assert "activation_post_process_0" in (tmp_path / "prepare" / "08-insert_observers.txt").read_text()
    timing = (tmp_path / "prepare" / "timing.txt").read_text()
    assert "fused Linear -> ReLU|relu|relu|relu|relu_: 1" in timing or "fused" in timing
    assert "output observers: 1" in timing


def test_reference_model_is_dequantize_float_op_quantize():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    prepared(torch.randn(16, 4))
    reference = fxq.convert_to_reference_fx(prepared)
    ops = [(n.op, getattr(n.target, "__name__", n.target)) for n in reference.graph.nodes
           if n.op in ("call_function", "call_method", "call_module")]
    assert ops == [("call_function", "quantize_per_tensor"), ("call_method", "dequantize"), ("call_module", "0"),
                   ("call_function", "quantize_per_tensor"), ("call_method", "dequantize")]
    assert type(reference.get_submodule("0")).__module__ == "fxq.nn.reference"


def test_a_deep_copy_of_a_prepared_model_converts_like_the_original():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    x = torch.randn(8, 4)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    copied = copy.deepcopy(prepared)
    converted = fxq.convert_fx(copied)
    assert torch.equal(converted(x), fxq.convert_fx(prepared)(x))
    assert not hasattr(copy.deepcopy(converted), "_fxq_state")  # a converted model is not an observed one


def test_a_module_called_twice_becomes_one_quantized_module_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(8, 8)

        def forward(self, x):
            return self.shared(torch.relu(self.shared(x)))

    model = Twice().eval()
    x = torch.randn(16, 8)
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (x,))
    prepared(x)
    quantized = fxq.convert_fx(prepared)
    calls = [n for n in quantized.graph.nodes if n.op == "call_module"]
    assert len(calls) == 2 and calls[0].target != calls[1].target  # each call has its own output qparams
    assert all("Int8" in quantized.get_submodule(n.target)._get_name() for n in calls)
    assert sqnr(model(x).detach(), quantized(x)) > 30
    assert type(model.shared) is nn.Linear


def test_state_follows_nodes_that_torch_load_renames():
    from fxq.graph.state import get_state
    from zoo import ZOO
    model, example, _ = ZOO["residual"]()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    prepared(*example)
    loaded = saved_and_loaded(prepared)
    renamed = {n.name for n in loaded.graph.nodes} - {n.name for n in prepared.graph.nodes}
    if not renamed:
        pytest.skip("this torch.fx keeps node names on load: nothing to map back")
    state = get_state(loaded)
    assert renamed <= set(state.modes) and set(state.modes) <= {n.name for n in loaded.graph.nodes}
    assert torch.equal(fxq.convert_fx(loaded)(*example), fxq.convert_fx(prepared)(*example))
