"""Automatic leaf discovery, foreign GraphModules and tracers, standalone modules, quantized model inputs and
outputs, and the custom-module error cases."""
import warnings

import pytest
import torch
from torch import fx, nn
from torch.nn import functional as F

import fxq
from conftest import sqnr, torch_ao
from custom_models import FloatRecurrent, ObservedRecurrent, StaticQuantRecurrent, WithRecurrent

# Leaves, standalone modules and quantized model inputs are compared with PyTorch AO's graphs and outputs:
# quantized-tensor lowering (the plain lowering's boundary: test_plain_lowering.py).
pytestmark = pytest.mark.usefixtures("quantized_lowering")


class Gate(nn.Module):
    def forward(self, x):
        return torch.relu(x) if x.sum() > 0 else -x          # data-dependent branch


class Heads(nn.Module):
    def forward(self, x):
        shape = x.size()[:-1] + (2, 8)
        return x.view(*shape).sum(-2)                          # *args unpacking of a traced size


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.gate, self.fc2 = nn.Linear(16, 16), Gate(), nn.Linear(16, 16)
        self.heads, self.fc3 = Heads(), nn.Linear(8, 4)

    def forward(self, x):
        gated = self.gate(self.fc1(x))
        return self.fc3(self.heads(torch.relu(self.fc2(gated)) + gated))


_DATA = torch.Generator().manual_seed(0)  # module-level data must not depend on what was imported before
X = torch.randn(8, 16, generator=_DATA)


def _quantize(model, config=None, mapping=None, inputs=(X,)):
    prepared = fxq.prepare_fx(model, mapping or fxq.get_default_qconfig_mapping(), inputs, config)
    for _ in range(3):
        prepared(*[torch.randn_like(i) for i in inputs])
    prepared(*inputs)
    return fxq.convert_fx(prepared)


def test_find_untraceable_names_each_failing_module_with_its_source_line():
    report = fxq.find_untraceable(Untraceable(), (X,))
    assert report.traceable and report.leaves == ["gate", "heads"]
    assert "x.sum() > 0" in report.modules[0].source and "x.view(*shape)" in report.modules[1].source
    assert report.modules[0].type_name.endswith("Gate") and report.modules[1].error


def test_auto_leaf_quantizes_what_torch_ao_cannot_trace():
    model = Untraceable().eval()
    tao = torch_ao()
    with pytest.raises(fx.proxy.TraceError, match="control flow"):
        tao.quantize_fx.prepare_fx(model, tao.quantization.get_default_qconfig_mapping(), (X,))
    quantized = _quantize(model, {"auto_leaf": True})
    assert type(quantized.gate) is Gate and type(quantized.heads) is Heads
    modules = dict(quantized.named_modules())
    leaves = [n for n in quantized.graph.nodes if n.target in ("gate", "heads")]
    ops = [n for n in quantized.graph.nodes if n.op in ("call_module", "call_function", "call_method")
           and n not in leaves and n.target not in (torch.quantize_per_tensor, "dequantize")]
    int8 = [n.name for n in ops if _is_int8_op(n, modules)]
    assert int8 == [n.name for n in ops] and len(int8) == 4       # fc1, fc2 (+relu), add, fc3: all int8
    # float only at the leaves: quantize reads an input or a leaf, dequantize feeds a leaf or the output
    for node in quantized.graph.nodes:
        if node.target is torch.quantize_per_tensor:
            assert node.args[0].op == "placeholder" or node.args[0] in leaves
        if node.target == "dequantize":
            assert all(u in leaves or u.op == "output" for u in node.users)
    assert sqnr(model(X), quantized(X)) >= 25


def _is_int8_op(node, modules):
    if node.op == "call_module":
        return type(modules[node.target]).__module__.startswith("fxq.nn.quantized")
    return str(node.target).startswith("quantized.")                # torch.ops.quantized.*


class ChooseTracer(fx.Tracer):
    """Stands in for HF's tracer: it knows Gate and Heads are leaves, which plain FX does not."""

    def is_leaf_module(self, m, name):
        return isinstance(m, (Gate, Heads)) or super().is_leaf_module(m, name)


def test_a_foreign_graph_module_is_quantized_without_tracing_it_again(monkeypatch):
    model = Untraceable().eval()
    gm = fx.GraphModule(model, ChooseTracer().trace(model))
    mapping = fxq.get_default_qconfig_mapping().set_module_name("fc2", None)  # scopes come from the foreign graph
    monkeypatch.setattr("fxq.graph.leaves.trace", lambda *args, **kwargs: pytest.fail("the GraphModule was traced again"))
    quantized = _quantize(gm, mapping=mapping)
    assert type(quantized.fc1).__module__.startswith("fxq.nn.quantized")
    assert not type(quantized.fc2).__module__.startswith("fxq.nn.quantized")  # float (fused with its relu)
    assert sqnr(model(X), quantized(X)) >= 25
    tao = torch_ao()
    with pytest.raises(Exception):  # torch.ao traces the GraphModule again, into Gate
        tao.quantize_fx.prepare_fx(gm, tao.quantization.get_default_qconfig_mapping(), (X,))


def test_tracer_class_and_concrete_args_in_the_prepare_config():
    class Flagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.fc = Untraceable(), nn.Linear(4, 4)

        def forward(self, x, skip: bool = False):
            y = self.inner(x)
            return y if skip else self.fc(y)

    model = Flagged().eval()
    config = fxq.PrepareCustomConfig().set_tracer(ChooseTracer, concrete_args={"skip": False})
    assert fxq.PrepareCustomConfig.from_dict(config.to_dict()) == config
    quantized = _quantize(model, config)
    assert type(quantized.fc).__module__.startswith("fxq.nn.quantized")
    assert sqnr(model(X), quantized(X)) >= 25


class Sub(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return torch.relu(self.fc(x))                          # torch.ao does not fuse torch.relu: it runs float


class FusedSub(Sub):
    def forward(self, x):
        return F.relu(self.fc(x))                              # both libraries fuse linear + F.relu


class WithStandalone(nn.Module):
    def __init__(self, sub=Sub):
        super().__init__()
        self.fc_in, self.sub, self.fc_out = nn.Linear(16, 16), sub(), nn.Linear(16, 16)

    def forward(self, x):
        return self.fc_out(self.sub(self.fc_in(x)))


BOUNDARY = {"input_quantized_idxs": [0], "output_quantized_idxs": [0]}
CALIBRATION = [torch.randn(8, 16, generator=_DATA) for _ in range(3)]


def _libraries():
    tao = torch_ao()
    return [(tao.quantize_fx.prepare_fx, tao.quantize_fx.convert_fx, tao.quantization),
            (fxq.prepare_fx, fxq.convert_fx, fxq)]


def _standalone(library, model, key, child, child_mapping=None):
    """The same standalone flow, written as a legacy dict both libraries take."""
    prepare, convert, names = library
    mapping = names.get_default_qconfig_mapping()
    child_mapping = child_mapping and names.QConfigMapping().set_global(getattr(names, child_mapping))
    entry = ("sub" if key == "standalone_module_name" else type(model.sub), child_mapping, (X,), child, None)
    prepared = prepare(model, mapping, (X,), prepare_custom_config={key: [entry]})
    for batch in CALIBRATION:
        prepared(batch)
    return convert(prepared)


@pytest.mark.parametrize("key, child, child_mapping", [
    ("standalone_module_name", {}, None),                       # float in, float out
    ("standalone_module_name", BOUNDARY, None),                 # quantized in, quantized out
    ("standalone_module_class", BOUNDARY, None),
    ("standalone_module_name", BOUNDARY, "default_qconfig"),    # its own mapping: per-tensor weights
], ids=["name-float", "name-quantized", "class-quantized", "own-mapping"])
def test_standalone_module_matches_torch_ao(key, child, child_mapping):
    torch.manual_seed(3)
    model = WithStandalone(FusedSub).eval()
    ao_model, fxq_model = (_standalone(lib, model, key, child, child_mapping) for lib in _libraries())
    assert isinstance(fxq_model.sub, fx.GraphModule)
    assert type(fxq_model.sub.fc).__module__.startswith("fxq.nn.quantized")
    placeholder = next(n for n in fxq_model.sub.graph.nodes if n.op == "placeholder")
    takes_quantized = all(u.op == "call_module" for u in placeholder.users)  # no quantize_per_tensor in front
    assert takes_quantized == bool(child)
    weight_scheme = fxq_model.sub.fc._unpack()[0].qscheme()
    assert weight_scheme == (torch.per_tensor_affine if child_mapping else torch.per_channel_affine)
    assert sqnr(ao_model(X), fxq_model(X)) >= 40


def test_standalone_module_returning_quantized_where_torch_ao_fails():
    # The child ends in torch.relu, which torch.ao leaves float: its standalone graph returns a float tensor in
    # spite of output_quantized_idxs, and the parent hands it to the quantized fc_out (quantized::linear fails).
    # fxq quantizes the relu (fused with the linear), so the child returns what output_quantized_idxs promises.
    torch.manual_seed(3)
    model = WithStandalone(Sub).eval()
    tao_library, fxq_library = _libraries()
    with pytest.raises(NotImplementedError, match="quantized::linear"):
        _standalone(tao_library, model, "standalone_module_name", BOUNDARY)(X)
    quantized = _standalone(fxq_library, model, "standalone_module_name", BOUNDARY)
    node = next(n for n in quantized.graph.nodes if n.target == "sub")
    assert node.args[0].target == "fc_in"                      # quantized in, no dequantize between
    assert next(iter(node.users)).target == "fc_out"           # quantized out, straight into the int8 fc_out
    assert sqnr(model(X), quantized(X)) >= 25


def test_model_inputs_and_outputs_quantized_by_index_like_torch_ao():
    tao = torch_ao()
    outputs = []
    for prepare, convert, config in ((tao.quantize_fx.prepare_fx, tao.quantize_fx.convert_fx,
                                      {"input_quantized_idxs": [0], "output_quantized_idxs": [0]}),
                                     (fxq.prepare_fx, fxq.convert_fx,
                                      fxq.PrepareCustomConfig().set_input_quantized_indexes([0])
                                      .set_output_quantized_indexes([0]))):
        torch.manual_seed(4)
        model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8)).eval()
        mapping = (tao.quantization.get_default_qconfig_mapping() if prepare is not fxq.prepare_fx
                   else fxq.get_default_qconfig_mapping())
        prepared = prepare(model, mapping, (X,), prepare_custom_config=config)
        for _ in range(3):
            prepared(torch.randn(8, 16))
        outputs.append(convert(prepared)(torch.quantize_per_tensor(X, 0.03, 128, torch.quint8)))
    ao_out, fxq_out = outputs
    assert fxq_out.is_quantized and fxq_out.dtype == torch.quint8
    assert sqnr(ao_out, fxq_out) >= 40


# ---- errors ----

class NoFromFloat(nn.Module):
    pass


class NoFromObserved(nn.Module):
    pass


def test_custom_classes_without_from_float_or_from_observed_fail_at_registration():
    with pytest.raises(TypeError, match="NoFromFloat.*from_float"):
        fxq.register_custom_module(FloatRecurrent, NoFromFloat, StaticQuantRecurrent)
    with pytest.raises(TypeError, match="NoFromObserved.*from_observed"):
        fxq.register_custom_module(FloatRecurrent, ObservedRecurrent, NoFromObserved)
    config = {"float_to_observed_custom_module_class": {"static": {FloatRecurrent: NoFromFloat}}}
    with pytest.raises(TypeError, match=r'float_to_observed_custom_module_class"\]\["static"\].*NoFromFloat'):
        fxq.prepare_fx(WithRecurrent().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(5, 4, 8),), config)
    config = {"float_to_observed_custom_module_class": {"static": {FloatRecurrent: ObservedRecurrent}}}
    prepared = fxq.prepare_fx(WithRecurrent().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(5, 4, 8),),
                              config)
    prepared(torch.randn(5, 4, 8))
    config = {"observed_to_quantized_custom_module_class": {"dynamic": {ObservedRecurrent: NoFromObserved}}}
    with pytest.raises(TypeError, match=r'quantized_custom_module_class"\]\["dynamic"\].*NoFromObserved'):
        fxq.convert_fx(prepared, config)                        # checked before convert runs a pass


def test_observed_class_without_a_quantized_class_names_both_and_the_key():
    config = {"float_to_observed_custom_module_class": {"static": {FloatRecurrent: ObservedRecurrent}}}
    prepared = fxq.prepare_fx(WithRecurrent().eval(), fxq.get_default_qconfig_mapping(), (torch.randn(5, 4, 8),),
                              config)
    prepared(torch.randn(5, 4, 8))
    with pytest.raises(ValueError, match="FloatRecurrent.*ObservedRecurrent.*observed_to_quantized_custom_module"):
        fxq.convert_fx(prepared)


def test_non_traceable_name_that_matches_nothing_warns_with_the_closest_names():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fxq.prepare_fx(Untraceable().eval(), fxq.get_default_qconfig_mapping(), (X,),
                       {"non_traceable_module_name": ["gates"], "non_traceable_module_class": [Gate, Heads]})
    messages = [str(w.message) for w in caught if "matches no submodule" in str(w.message)]
    assert len(messages) == 1 and "'gates'" in messages[0] and "gate" in messages[0].split("closest")[1]


def test_unknown_custom_config_keys_and_modes_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid keys:.*tracer_options.*tracer"):
        fxq.PrepareCustomConfig.from_dict({"tracers": 1})
    with pytest.raises(ValueError, match="valid modes: static, dynamic, weight_only"):
        fxq.ConvertCustomConfig.from_dict({"observed_to_quantized_custom_module_class": {"dynamc": {}}})
