"""The bad-input table of the README, one test per row: what fxq says when it is called wrongly.

Each message must say what failed, where (node, module path, key or argument) and which call or key fixes it;
each row's patterns check those three parts. The README records what PyTorch AO does for the same input.
"""
import re
import warnings

import pytest
import torch
from torch import nn

import fxq
import fxq.api
from fxq.observers import MinMaxObserver, default_weight_observer


class Net(nn.Module):
    def __init__(self, kernel=3):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, kernel), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def x():
    return torch.randn(2, 3, 8, 8)


def prepared(model=None, inputs=None, mapping=None, **kwargs):
    model = model if model is not None else Net().eval()
    mapping = mapping if mapping is not None else fxq.get_default_qconfig_mapping()
    return fxq.prepare_fx(model, mapping, inputs if inputs is not None else (x(),), **kwargs)


def calibrated(batches, **kwargs):
    model = prepared(**kwargs)
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model


def with_nan_at(batch_index, value=float("nan"), every_channel=False):
    batches = [x() for _ in range(3)]
    batches[batch_index][0, slice(None) if every_channel else 0, 0, 0] = value
    return batches


def static(activation, weight=default_weight_observer):
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation, weight))


def load_other_models_state_dict():
    converted = fxq.convert_fx(calibrated([x()]))
    other = fxq.convert_fx(calibrated([x()], model=Net(kernel=5).eval()))
    converted.load_state_dict(other.state_dict())


def load_state_dict_missing_a_key():
    converted = fxq.convert_fx(calibrated([x()]))
    state = converted.state_dict()
    state.pop("x_scale")
    converted.load_state_dict(state)


def old_torch(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.1.2+cpu")
    prepared()


# id: (call, exception or warning class, patterns the message must contain: what, where, how to fix)
ERRORS = {
    "example_inputs not a tuple": (lambda mp: prepared(inputs=x()), TypeError,
                                   ["example_inputs must be a tuple", "got Tensor", r"example_inputs=\(x,\)"]),
    "example_inputs a dict": (lambda mp: prepared(inputs={"x": x()}), TypeError, ["must be a tuple", "got dict"]),
    "too many example_inputs": (lambda mp: prepared(inputs=(x(), x())), ValueError,
                                ["has 2 item", r"forward takes \(x\)", "one example per argument"]),
    "no example_inputs": (lambda mp: prepared(inputs=()), ValueError, ["has 0 item", "one example per argument"]),
    "example_inputs of the wrong dtype": (lambda mp: prepared(inputs=(torch.randint(0, 5, (2, 3, 8, 8)),)), ValueError,
                                          ["do not fit the model", "node 'conv'", "module 'conv'", "long",
                                           "Pass example_inputs"]),
    "example_inputs on the wrong device": (lambda mp: prepared(inputs=(x().to("meta"),)), ValueError,
                                           ["do not fit the model", "node 'bn'", "device", "Pass example_inputs"]),
    "example_inputs of the wrong shape": (lambda mp: prepared(inputs=(torch.randn(2, 5, 8, 8),)), ValueError,
                                          ["node 'conv'", "3 channels", "Pass example_inputs"]),
    "model is not an nn.Module": (lambda mp: fxq.prepare_fx(lambda t: t, fxq.get_default_qconfig_mapping(), (x(),)),
                                  TypeError, ["expects an nn.Module", "got function"]),
    "NaN in a calibration batch": (lambda mp: calibrated(with_nan_at(1)), ValueError,
                                   ["observer 'activation_post_process_0'", "node 'x'", "calibration batch 2",
                                    "NaN", "set_module_name"]),
    "NaN made by a layer from an infinite input": (  # inf * w1 + inf * w2 with weights of both signs
        lambda mp: calibrated(with_nan_at(2, float("inf"), every_channel=True)), ValueError,
        ["node 'conv'", "module 'conv'", "calibration batch 3", "NaN"]),
    "unsupported activation dtype in a QConfig": (
        lambda mp: prepared(mapping=static(MinMaxObserver.with_args(dtype=torch.qint32))), ValueError,
        ["qconfig of node 'conv'", "module 'conv'", "activation dtype torch.qint32", "fxq.get_default_qconfig"]),
    "per-channel qscheme on a per-tensor observer": (
        lambda mp: prepared(mapping=static(MinMaxObserver, MinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric))), ValueError,
        ["node 'conv'", r"MinMaxObserver\(qscheme=torch.per_channel_symmetric\) is not supported",
         "must be one of"]),
    "quint8 weights for a conv": (
        lambda mp: prepared(mapping=static(MinMaxObserver, MinMaxObserver.with_args(dtype=torch.quint8))), ValueError,
        ["node 'conv'", "module 'conv'", "torch.quint8", "dtype=torch.qint8"]),
    "a QConfig where a QConfigMapping goes": (lambda mp: prepared(mapping=fxq.get_default_qconfig()), TypeError,
                                              ["qconfig_mapping", "got QConfig", r"set_global\(qconfig\)"]),
    "a list as the QConfigMapping": (lambda mp: prepared(mapping=[fxq.get_default_qconfig()]), TypeError,
                                     ["qconfig_mapping", "got list"]),
    "unknown qconfig_dict key": (lambda mp: prepared(mapping={"": fxq.get_default_qconfig(), "module_names": []}),
                                 ValueError, ["unknown key", "'module_names'", "valid keys", "'module_name'"]),
    "unknown prepare_custom_config key": (
        lambda mp: prepared(prepare_custom_config={"non_traceable_module_names": ["fc"]}), ValueError,
        ["unknown key", "'non_traceable_module_names'", "'non_traceable_module_name'"]),
    "a PyTorch AO backend_config": (lambda mp: prepared(backend_config=object()), NotImplementedError,
                                    ["backend_config", "fxq.patterns", "backend_config=None"]),
    "unknown backend name": (lambda mp: fxq.get_default_qconfig_mapping("arm"), ValueError,
                             ["backend 'arm'", "x86, fbgemm, qnnpack, onednn"]),
    "prepare run twice": (lambda mp: fxq.prepare_fx(prepared(), fxq.get_default_qconfig_mapping(), (x(),)), ValueError,
                          ["already returned", "convert_fx", "original float model"]),
    "convert run twice": (lambda mp: fxq.convert_fx(fxq.convert_fx(calibrated([x()]))), ValueError,
                          ["convert_fx already returned", "prepared \\(calibrated\\) model"]),
    "convert of a model prepare_fx did not return": (lambda mp: fxq.convert_fx(Net().eval()), ValueError,
                                                     ["got a Net without fxq's observers", "fxq.prepare_fx"]),
    "state_dict of another model": (lambda mp: load_other_models_state_dict(), RuntimeError,
                                    ["size mismatch for conv.weight", r"\(4, 3, 5, 5\)", r"\(4, 3, 3, 3\)",
                                     "same float model"]),
    "state_dict with a missing key": (lambda mp: load_state_dict_missing_a_key(), RuntimeError,
                                      ["Missing key", "x_scale"]),
    "unsupported torch version": (old_torch, RuntimeError,
                                  ["fxq supports torch 2.3 to 2.13", "torch 2.1.2", "pip install 'torch>=2.3'"]),
    "calibration batch of the wrong shape": (lambda mp: calibrated([torch.randn(2, 5, 8, 8)]), RuntimeError,
                                             ["expected input", "3 channels"]),
}


@pytest.mark.parametrize("row", list(ERRORS))
def test_bad_input_raises_a_message_that_says_what_where_and_how_to_fix(row, monkeypatch):
    call, error, patterns = ERRORS[row]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as caught:
            call(monkeypatch)
    for pattern in patterns:
        assert re.search(pattern, str(caught.value)), (pattern, str(caught.value))


def _said(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, " | ".join(str(w.message) for w in caught)


def test_train_mode_for_ptq_warns_to_call_eval():
    _, said = _said(lambda: prepared(model=Net().train()))
    assert "training mode" in said and "running statistics" in said and "model.eval() before prepare_fx" in said


@pytest.mark.parametrize("batches", [[], [torch.randn(0, 3, 8, 8)]], ids=["no batch", "empty batches"])
def test_convert_without_calibration_data_warns_and_stays_float(batches):
    float_model = Net().eval()
    model = calibrated(batches, model=float_model)
    quantized, said = _said(lambda: fxq.convert_fx(model))
    assert "none of the 4 observers has seen a batch" in said and "before convert_fx" in said
    assert "observer 'activation_post_process_0' on 'x' saw no data" in said
    assert not any("Quantized" in type(m).__name__ for m in quantized.modules())
    sample = x()
    with torch.no_grad():  # float, not PyTorch AO's output from its default scale 1.0
        assert torch.allclose(quantized(sample), float_model(sample), atol=1e-5)


def test_an_infinite_input_value_is_skipped_with_a_warning_naming_the_observer_and_batch():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2)).eval()
    batches = with_nan_at(1, float("inf"))
    observed = prepared(model=model, inputs=(batches[0],))
    _, said = _said(lambda: [observed(batch) for batch in batches])
    assert "observer 'activation_post_process_0' on node 'input_1'" in said and "infinite values" in said
    assert "calibration batch 2" in said
    for observer in (m for m in observed.modules() if isinstance(m, fxq.observers.ObserverBase)):
        for name in ("min_val", "max_val"):
            if hasattr(observer, name):
                assert torch.isfinite(getattr(observer, name)).all()  # an observer never stores NaN or inf


def test_set_module_name_of_a_module_that_does_not_exist_warns():
    _, said = _said(lambda: prepared(mapping=fxq.get_default_qconfig_mapping().set_module_name("fcc", None)))
    assert "set_module_name('fcc', ...) names no module" in said and "fc" in said


def test_newer_torch_than_tested_warns_once(monkeypatch):
    monkeypatch.setattr(fxq.api, "_newer_torch_warned", [])
    with pytest.warns(UserWarning, match="tested with torch 2.3 to 2.13; torch 2.99.0 is newer"):
        fxq.api.check_torch_version("2.99.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxq.api.check_torch_version("2.99.0")  # once per process
