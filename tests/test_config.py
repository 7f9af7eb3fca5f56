"""fxq.config: QConfig, defaults and QConfigMapping resolution against torch.ao; custom-config dicts."""
import pickle
import warnings
from collections import defaultdict

import pytest
import torch
from torch import nn

from conftest import torch_ao
from fxq import observers as obs
from fxq.config import (ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig, QConfig, QConfigMapping,
                        constructor_parts, default_dynamic_qconfig, default_per_channel_qconfig, default_qconfig,
                        float16_dynamic_qconfig, float_qparams_weight_only_qconfig, get_default_dynamic_qconfig_mapping,
                        get_default_qconfig, get_default_qconfig_mapping, per_channel_dynamic_qconfig)

BACKENDS = ["x86", "fbgemm", "qnnpack", "onednn"]


# ---- helpers: compare fxq constructors with torch.ao's by class name and kwargs ----

def ao_parts(constructor):
    """(class name, kwargs) of a torch.ao observer constructor (a class or a _PartialWrapper)."""
    if constructor is None:
        return None
    if hasattr(constructor, "p"):
        return constructor.p.func.__name__, dict(constructor.p.keywords)
    return constructor.__name__, {}


def fxq_parts(constructor):
    if constructor is None:
        return None
    cls, kwargs = constructor_parts(constructor)
    return cls.__name__, kwargs


def assert_same_qconfig(fxq_qconfig, ao_qconfig, where):
    if ao_qconfig is None:
        assert fxq_qconfig is None, where
        return
    assert fxq_parts(fxq_qconfig.activation) == ao_parts(ao_qconfig.activation), where
    assert fxq_parts(fxq_qconfig.weight) == ao_parts(ao_qconfig.weight), where


# ---- QConfig ----

def test_qconfig_rejects_observer_instance():
    # the usual mistake: an observer where a constructor belongs
    with pytest.raises(TypeError, match=r"MinMaxObserver\.with_args"):
        QConfig(obs.MinMaxObserver(), obs.default_weight_observer)
    with pytest.raises(TypeError, match="weight"):
        QConfig(obs.MinMaxObserver, obs.MinMaxObserver())


def test_qconfig_equality_hash_immutability_pickle():
    a = QConfig(obs.HistogramObserver.with_args(reduce_range=True), obs.default_per_channel_weight_observer)
    b = QConfig(obs.HistogramObserver.with_args(reduce_range=True), obs.default_per_channel_weight_observer)
    c = QConfig(obs.HistogramObserver.with_args(reduce_range=False), obs.default_per_channel_weight_observer)
    assert a == b and hash(a) == hash(b) and a != c
    assert QConfig(obs.MinMaxObserver, None) != QConfig(obs.MinMaxObserver.with_args(quant_min=0), None)
    with pytest.raises(AttributeError):
        a.activation = obs.MinMaxObserver
    assert pickle.loads(pickle.dumps(a)) == a


def test_qconfig_short_form():
    assert str(get_default_qconfig("x86")) == (
        "QConfig(act=HistogramObserver(reduce_range=True), w=PerChannelMinMaxObserver(qint8, per_channel_symmetric))")
    assert QConfig(obs.MinMaxObserver, None).short() == "QConfig(act=MinMaxObserver(), w=None)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_qconfig_matches_torch_ao(backend):
    tao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onednn warns on CPUs without VNNI
        expected = tao.quantization.get_default_qconfig(backend)
    assert_same_qconfig(get_default_qconfig(backend), expected, backend)


def test_named_qconfigs_match_torch_ao():
    q = torch_ao().quantization
    pairs = [(default_qconfig, q.default_qconfig), (default_per_channel_qconfig, q.default_per_channel_qconfig),
             (default_dynamic_qconfig, q.default_dynamic_qconfig), (float16_dynamic_qconfig, q.float16_dynamic_qconfig),
             (per_channel_dynamic_qconfig, q.per_channel_dynamic_qconfig),
             (float_qparams_weight_only_qconfig, q.float_qparams_weight_only_qconfig)]
    for ours, theirs in pairs:
        assert_same_qconfig(ours, theirs, str(ours))


def test_unknown_backend_lists_valid_ones():
    for function in (get_default_qconfig, get_default_qconfig_mapping):
        with pytest.raises(ValueError, match="x86, fbgemm, qnnpack, onednn"):
            function("tensorrt")


# ---- default mappings ----

@pytest.mark.parametrize("backend", BACKENDS)
def test_default_qconfig_mapping_matches_torch_ao_entry_for_entry(backend):
    tao = torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = tao.quantization.get_default_qconfig_mapping(backend)
    ours = get_default_qconfig_mapping(backend)
    assert_same_qconfig(ours.global_qconfig, expected.global_qconfig, "global")
    expected_types = list(expected.object_type_qconfigs)
    if not hasattr(obs, "ReuseInputObserver"):  # the one entry fxq cannot build yet (see defaults.py)
        expected_types.remove("reshape")
    assert list(ours.object_type_qconfigs) == expected_types
    for object_type in expected_types:
        ao_qconfig = expected.object_type_qconfigs[object_type]
        assert_same_qconfig(ours.object_type_qconfigs[object_type], ao_qconfig, f"{backend} {object_type}")
    for key in ("module_name_regex", "module_name", "module_name_object_type_order"):
        assert ours.to_dict()[key] == [] == expected.to_dict()[key]


def test_default_dynamic_mapping():
    mapping = get_default_dynamic_qconfig_mapping()
    assert mapping.global_qconfig is None
    assert mapping.qconfig_for("rnn", (nn.LSTM,)) == default_dynamic_qconfig
    assert mapping.qconfig_for("conv", (nn.Conv2d,)) is None
    assert get_default_dynamic_qconfig_mapping(torch.quint8).qconfig_for("emb", (nn.Embedding,)) == \
        float_qparams_weight_only_qconfig
    with pytest.raises(ValueError, match="qint8"):
        get_default_dynamic_qconfig_mapping(torch.int32)


# ---- resolution: the qconfig of each node, compared with the one torch.ao's prepare_fx assigned ----

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        x = torch.add(torch.add(self.act(self.fc(x)), 1), 1)
        return torch.sigmoid(x.reshape(-1, 4))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.layer1, self.layer2, self.layer3 = Block(), Block(), Block()
        self.head = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return torch.sigmoid(self.head(torch.add(torch.add(x, x), x)))


def make_qconfig(module, qconfig_class, label):
    """A qconfig told apart by its activation's quant_max; `module` is fxq.observers or torch.ao.quantization."""
    if label is None:
        return None
    return qconfig_class(module.MinMaxObserver.with_args(quant_min=0, quant_max=100 + label),
                         module.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))


def legacy_dict(module, qconfig_class, spec):
    """Turn a spec with int labels into a legacy qconfig_dict built from `module`'s observers."""
    q = lambda label: make_qconfig(module, qconfig_class, label)  # noqa: E731
    return {
        "": q(spec[""]),
        "object_type": [(t, q(label)) for t, label in spec["object_type"]],
        "module_name_regex": [(r, q(label)) for r, label in spec["module_name_regex"]],
        "module_name": [(n, q(label)) for n, label in spec["module_name"]],
        "module_name_object_type_order": [(*key, q(label)) for *key, label in spec["module_name_object_type_order"]],
    }


SPEC = {
    "": 0,
    "object_type": [(torch.add, 1), (nn.Linear, 2), (nn.ReLU, 2), ("reshape", 3), (torch.sigmoid, None)],
    "module_name_regex": [("layer[23]", 4), ("layer.*", 9)],  # first registered match wins
    "module_name": [("layer1", 5), ("layer2.fc", None), ("layer3", 7)],  # None on a fused Linear+ReLU keeps it float
    "module_name_object_type_order": [("layer1", torch.add, 1, 6), ("", torch.add, 0, 8), ("", nn.Linear, 0, 10),
                                      ("layer3", Block, 0, 11)],  # the last one names no call: must not match
}


def label_of(qconfig):
    if qconfig is None:
        return None
    activation = qconfig.activation
    keywords = activation.p.keywords if hasattr(activation, "p") else constructor_parts(activation)[1]
    return keywords["quant_max"] - 100


def fxq_labels(mapping, observed, scopes, node_names):
    """Resolve each node the way the integrator will: scope, candidate types, call index per (module, type)."""
    calls = defaultdict(int)
    labels = {}
    for node in observed.graph.nodes:
        if node.name not in node_names:
            continue  # an inserted observer
        path, scope_type = scopes[node.name]
        qconfig = None
        if node.op == "call_module":
            module = observed.get_submodule(node.target)
            candidates = (type(module),) + ((type(module[0]),) if isinstance(module, nn.Sequential) else ())
            parent = node.target.rpartition(".")[0]
            index, calls[(parent, scope_type)] = calls[(parent, scope_type)], calls[(parent, scope_type)] + 1
            qconfig = mapping.qconfig_for(node.target, candidates, index, counted_in=parent)
        elif node.op == "call_function":
            index, calls[(path, node.target)] = calls[(path, node.target)], calls[(path, node.target)] + 1
            qconfig = mapping.qconfig_for(path, (node.target,), index)
        elif node.op == "call_method":
            qconfig = mapping.qconfig_for(path, (scope_type, node.target))
        labels[node.name] = label_of(qconfig)
    return labels


def test_resolution_matches_torch_ao_prepare_fx():
    tao = torch_ao()
    ao_dict = legacy_dict(tao.quantization, tao.quantization.QConfig, SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observed = tao.quantize_fx.prepare_fx(Net().eval(), ao_dict, (torch.randn(2, 4),))
    attrs = observed.meta["_observed_graph_module_attrs"]
    expected = {name: label_of(q) for name, q in attrs.node_name_to_qconfig.items()}
    mapping = QConfigMapping.from_dict(legacy_dict(obs, QConfig, SPEC))
    ours = fxq_labels(mapping, observed, attrs.node_name_to_scope, set(expected))
    assert ours == expected
    # the spec exercises every rule kind (a few spot checks so a silent fallback cannot pass)
    # (adds: add, add_1 in layer1; add_2, add_3 in layer2; add_4, add_5 in layer3; add_6, add_7 at the root)
    assert (expected["stem"], expected["add_1"], expected["add_2"], expected["add_4"]) == (10, 6, 4, 7)
    assert (expected["layer2_fc"], expected["sigmoid"], expected["reshape_1"], expected["head_0"]) == (None, 5, 4, 2)
    assert expected["sigmoid_3"] is None
    assert (expected["layer3_fc"], expected["add_6"], expected["add_7"]) == (7, 8, 1)


def test_none_on_fused_module_type_keeps_it_float():
    # torch.ao treats set_object_type(nn.Linear, None) as unset for a fused LinearReLU and quantizes it: fxq does not
    mapping = QConfigMapping().set_global(default_qconfig).set_object_type(nn.Linear, None)
    fused_type = type("LinearReLU", (nn.Sequential,), {})
    assert mapping.qconfig_for("layer1.fc", (fused_type, nn.Linear)) is None
    assert mapping.qconfig_for("layer1.act", (nn.ReLU,)) == default_qconfig
    # an entry for the fused type itself wins over the component's
    mapping.set_object_type(fused_type, default_per_channel_qconfig)
    assert mapping.qconfig_for("layer1.fc", (fused_type, nn.Linear)) == default_per_channel_qconfig


def test_module_name_none_is_not_unset_and_walks_up_prefixes():
    mapping = (QConfigMapping().set_global(default_qconfig).set_object_type(nn.Conv2d, default_per_channel_qconfig)
               .set_module_name("encoder", None).set_module_name("encoder.block.0", default_dynamic_qconfig))
    assert mapping.qconfig_for("encoder.block.1.conv", (nn.Conv2d,)) is None
    assert mapping.qconfig_for("encoder.block.0.conv", (nn.Conv2d,)) == default_dynamic_qconfig
    # a string prefix is not a parent module
    assert mapping.qconfig_for("encoderx", (nn.Conv2d,)) == default_per_channel_qconfig
    assert mapping.qconfig_for("", (torch.add,)) == default_qconfig


def test_resolution_is_cached_and_invalidated_by_setters():
    mapping = QConfigMapping().set_global(default_qconfig)
    assert mapping.qconfig_for("a.b", (nn.Linear,)) == default_qconfig
    mapping.set_module_name_regex(r"a\.", None)
    assert mapping.qconfig_for("a.b", (nn.Linear,)) is None
    with pytest.raises(TypeError):
        mapping.object_type_qconfigs[nn.Linear] = None  # read-only views keep the cache honest
    with pytest.raises(ValueError, match="not a valid regex"):
        mapping.set_module_name_regex("a(", None)


# ---- legacy dicts ----

def test_qconfig_mapping_round_trips_every_key():
    qconfig_dict = {
        "": default_qconfig,
        "object_type": [(nn.Linear, default_per_channel_qconfig), (torch.add, None), ("reshape", default_qconfig)],
        "module_name_regex": [("enc.*", None), ("dec.*", default_qconfig)],
        "module_name": [("head", default_dynamic_qconfig)],
        "module_name_object_type_order": [("enc", torch.add, 2, default_qconfig), ("", nn.Linear, 0, None)],
    }
    mapping = QConfigMapping.from_dict(qconfig_dict)
    assert mapping.to_dict() == qconfig_dict
    assert QConfigMapping.from_dict(mapping.to_dict()) == mapping
    assert QConfigMapping.coerce(qconfig_dict) == mapping and QConfigMapping.coerce(mapping) is mapping
    assert QConfigMapping.coerce(None).qconfig_for("fc", (nn.Linear,)) is None


def test_qconfig_mapping_unknown_key_and_bad_entries():
    with pytest.raises(ValueError, match=r"'module_names'.*valid keys: '', 'object_type'"):
        QConfigMapping.coerce({"": default_qconfig, "module_names": [("fc", None)]})
    with pytest.raises(ValueError, match=r'"module_name_object_type_order"\]\[0\]'):
        QConfigMapping.from_dict({"module_name_object_type_order": [("fc", torch.add, None)]})
    with pytest.raises(TypeError, match="set_object_type"):
        QConfigMapping().set_object_type(nn.Linear, "default")


def test_qconfig_mapping_accepts_torch_ao_objects():
    tao = torch_ao()
    converted = QConfigMapping.coerce(tao.quantization.QConfigMapping().set_module_name("fc", None)
                                      .set_global(tao.quantization.default_qconfig))
    assert converted.module_name_qconfigs == {"fc": None}
    assert_same_qconfig(converted.global_qconfig, tao.quantization.default_qconfig, "global")


class FloatCustom(nn.Module):
    pass


class ObservedCustom(nn.Module):
    pass


Observed = ObservedCustom


class QuantizedCustom(nn.Module):
    pass


def test_prepare_custom_config_round_trips_every_key():
    child = {"input_quantized_idxs": [0]}
    config_dict = {
        "standalone_module_name": [("sub", QConfigMapping().set_global(default_qconfig).to_dict(), (torch.ones(1),),
                                    child, None)],
        "standalone_module_class": [(FloatCustom, None, (), None, None)],
        "float_to_observed_custom_module_class": {"static": {FloatCustom: ObservedCustom},
                                                  "dynamic": {nn.LSTM: ObservedCustom}},
        "non_traceable_module_name": ["a", "b.c"],
        "non_traceable_module_class": [FloatCustom],
        "input_quantized_idxs": [0, 1],
        "output_quantized_idxs": [0],
        "preserved_attributes": ["version"],
        "auto_leaf": True,
    }
    config = PrepareCustomConfig.from_dict(config_dict)
    assert config.to_dict() == config_dict
    assert PrepareCustomConfig.from_dict(config.to_dict()) == config
    entry = config.standalone_module_names["sub"]
    assert entry.qconfig_mapping.global_qconfig == default_qconfig
    assert entry.prepare_custom_config.input_quantized_indexes == [0]
    assert config.standalone_module_classes[FloatCustom].qconfig_mapping is None  # None = the parent's mapping
    assert config.auto_leaf and PrepareCustomConfig().to_dict() == {}


def test_prepare_custom_config_setters_match_dict():
    config = (PrepareCustomConfig().set_standalone_module_name("sub", None, (), None, None)
              .set_float_to_observed_mapping(FloatCustom, ObservedCustom)
              .set_non_traceable_module_names(["a"]).set_non_traceable_module_classes([FloatCustom])
              .set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
              .set_preserved_attributes(["v"]).set_auto_leaf(True))
    assert config.to_dict() == {
        "standalone_module_name": [("sub", None, (), None, None)],
        "float_to_observed_custom_module_class": {"static": {FloatCustom: ObservedCustom}},
        "non_traceable_module_name": ["a"], "non_traceable_module_class": [FloatCustom],
        "input_quantized_idxs": [0], "output_quantized_idxs": [0], "preserved_attributes": ["v"], "auto_leaf": True,
    }


def test_bare_string_non_traceable_module_name():
    # the torch.ao user guide writes a bare string, which torch.ao itself rejects
    config = PrepareCustomConfig.coerce({"non_traceable_module_name": "sub"})
    assert config.non_traceable_module_names == ["sub"]
    assert PrepareCustomConfig().set_non_traceable_module_names("sub").non_traceable_module_names == ["sub"]


def test_custom_configs_reject_unknown_keys_and_modes():
    with pytest.raises(ValueError, match=r"'non_traceable_module_names'.*'non_traceable_module_name'"):
        PrepareCustomConfig.coerce({"non_traceable_module_names": ["sub"]})
    with pytest.raises(ValueError, match=r"'stati'.*static, dynamic, weight_only"):
        PrepareCustomConfig.from_dict({"float_to_observed_custom_module_class": {"stati": {FloatCustom: Observed}}})
    with pytest.raises(ValueError, match="valid modes"):
        ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedCustom, QuantizedCustom, "int8")
    with pytest.raises(ValueError, match="'preserved_attributes'"):
        ConvertCustomConfig.coerce({"preserved_attribute": ["v"]})
    with pytest.raises(ValueError, match="'fold_linear_chains'"):
        FuseCustomConfig.coerce({"fold_linear_chain": True})


def test_convert_and_fuse_custom_configs_round_trip():
    convert_dict = {"observed_to_quantized_custom_module_class": {"static": {ObservedCustom: QuantizedCustom},
                                                                  "weight_only": {nn.Embedding: QuantizedCustom}},
                    "preserved_attributes": ["v"]}
    convert = ConvertCustomConfig.coerce(convert_dict)
    assert convert.to_dict() == convert_dict
    assert convert.observed_to_quantized_mapping["static"] == {ObservedCustom: QuantizedCustom}
    assert ConvertCustomConfig.coerce(None).to_dict() == {} and ConvertCustomConfig.coerce(convert) is convert
    fuse = FuseCustomConfig.coerce({"preserved_attributes": ["v"], "fold_linear_chains": True})
    assert fuse.fold_linear_chains and fuse.to_dict() == {"preserved_attributes": ["v"], "fold_linear_chains": True}
    assert FuseCustomConfig().fold_linear_chains is False


def test_custom_configs_accept_torch_ao_instances():
    tao = torch_ao()
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig as AoPrepareCustomConfig
    ao_config = AoPrepareCustomConfig().set_non_traceable_module_names(["sub"]).set_float_to_observed_mapping(
        FloatCustom, ObservedCustom)
    config = PrepareCustomConfig.coerce(ao_config)
    assert tao is not None and config.to_dict() == ao_config.to_dict()


def test_config_import_adds_no_torch_ao_module():
    # `import torch` itself loads parts of torch.ao; fxq.config must not load any more of it
    import subprocess
    import sys
    code = ("import sys, torch; before = set(sys.modules); import fxq.config; "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('torch.ao')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
