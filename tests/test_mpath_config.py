"""mpath wired into quantization: set_mpath in QConfigMapping, find_quantizers(...).initialize(...), and the
quantizer-tag examples of the MPath documentation on fxq's observer tags."""
from __future__ import annotations

import pytest
import torch

import fxq
from fxq.config import QConfigMapping, default_qconfig
from fxq.mpath import MPathError
from fxq.nn import quantized as nnq
from mpath_models import doc_tree, doc_tree_inputs, transformer
from conftest import sqnr

# Selected layers are checked through the quantized-tensor modules' class and output scale.
pytestmark = pytest.mark.usefixtures("quantized_lowering")


def _quantize(model, mapping, inputs):
    prepared = fxq.prepare_fx(model, mapping, inputs)
    prepared(*inputs)
    return fxq.convert_fx(prepared)


def test_set_mpath_keeps_selected_layers_float_and_quantizes_the_rest():
    model, inputs = transformer()
    mapping = QConfigMapping().set_global(default_qconfig).set_mpath("layers/1/**", None).set_mpath("head", None)
    converted = _quantize(model, mapping, inputs)
    assert isinstance(converted.get_submodule("layers.0.attn.q"), nnq.Linear)
    assert isinstance(converted.get_submodule("layers.0.mlp.2"), nnq.Linear)
    for path in ("layers.1.attn.q", "layers.1.attn.out", "layers.1.mlp.0", "layers.1.mlp.2", "head"):
        assert not type(converted.get_submodule(path)).__module__.startswith("fxq.nn.quantized"), path
    # the same selection with module_name rules gives a bit-identical model
    by_name = QConfigMapping().set_global(default_qconfig).set_module_name("layers.1", None).set_module_name("head", None)
    expected = _quantize(model, by_name, inputs)(*inputs)
    assert torch.equal(converted(*inputs), expected)
    assert sqnr(model(*inputs), converted(*inputs)) > 25


def test_set_mpath_wins_over_module_name_rules_and_selects_function_nodes():
    model, inputs = transformer()
    mapping = (QConfigMapping().set_global(default_qconfig).set_module_name("layers.0.attn", default_qconfig)
               .set_module_name_object_type_order("layers.0.attn", torch.matmul, 0, default_qconfig)
               .set_mpath("**/[target:torch.matmul]", None))
    prepared = fxq.prepare_fx(model, mapping, inputs)
    qconfigs = prepared._fxq_state.qconfigs
    matmuls = fxq.mpath.matches("**/[target:torch.matmul]", prepared)
    assert len(matmuls) == 4 and all(qconfigs[name] is None for name in matmuls)
    assert qconfigs["layers_0_attn_q"] is not None
    # without the node, mpath rules cannot apply and the next rule kind answers
    assert mapping.qconfig_for("layers.0.attn", (torch.matmul,), 0) == default_qconfig


def test_set_mpath_rejects_bad_queries_and_round_trips_through_dicts():
    with pytest.raises(MPathError, match="not closed"):
        QConfigMapping().set_mpath("[cls:", None)
    mapping = QConfigMapping().set_global(default_qconfig).set_mpath("**/head/**", None)
    assert mapping.to_dict()["mpath"] == [("**/head/**", None)] and mapping.mpath_qconfigs == {"**/head/**": None}
    assert QConfigMapping.from_dict(mapping.to_dict()) == mapping
    assert mapping != QConfigMapping().set_global(default_qconfig)
    assert "mpath" not in QConfigMapping().to_dict()  # torch.ao-shaped dicts are unchanged
    assert "mpath '**/head/**': None" in repr(mapping)


def test_find_quantizers_doc_query_and_initialize_with_four_bits():
    tree, inputs = doc_tree().eval(), doc_tree_inputs()
    prepared = fxq.prepare_fx(tree, QConfigMapping().set_global(default_qconfig), inputs)
    outputs = fxq.find_quantizers(prepared, "**/[cls:torch.nn.Linear]/[quantizer:activation/output]")
    linears = fxq.mpath.search("**/[cls:torch.nn.Linear]", prepared)
    assert len(outputs) == 6 and [n.args[0] for n in outputs.nodes] == linears.nodes
    assert all(n.meta["fxq_qtag"] == "activation/output" for n in outputs.nodes)
    assert len(fxq.find_quantizers(prepared, "**/[cls:torch.nn.Linear]/[qtag:parameter/weight]")) == 0  # modules
    untouched = {n.target for n in fxq.find_quantizers(prepared, "**/[qtag:activation]").nodes} - {
        n.target for n in outputs.nodes}
    four_bit = fxq.observers.MinMaxObserver
    assert outputs.initialize(four_bit, dtype=torch.quint8, quant_min=0, quant_max=15) is outputs
    assert all(m.quant_max == 15 for m in outputs.modules) and len({id(m) for m in outputs.modules}) == 6
    assert untouched and all(prepared.get_submodule(t).quant_max != 15 for t in untouched)
    assert "MinMaxObserver" in repr(outputs)
    prepared(*inputs)
    converted = fxq.convert_fx(prepared)
    expected = tree(*inputs)
    leaves = [p for p, m in tree.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ReLU))]
    for path, float_output in zip(leaves, expected):
        if path == "layer2.activation":
            continue  # reads the float input: stays float
        value_range = float(float_output.max().clamp(min=0) - float_output.min().clamp(max=0))
        levels = 15 if isinstance(tree.get_submodule(path), torch.nn.Linear) else 127  # 4 bits / reduce_range
        assert converted.get_submodule(path).scale == pytest.approx(value_range / levels, rel=1e-5), path
    assert sqnr(expected[0], converted(*inputs)[0]) > 10


def test_initialize_shared_uses_one_instance():
    tree, inputs = doc_tree().eval(), doc_tree_inputs()
    prepared = fxq.prepare_fx(tree, QConfigMapping().set_global(default_qconfig), inputs)
    found = fxq.find_quantizers(prepared, "layer4/**/[qtag:activation/output]")
    found.initialize(fxq.observers.MinMaxObserver, shared=True)
    assert len(found) == 4 and len({id(m) for m in found.modules}) == 1


def _retag(prepared, linear: str) -> None:
    """A custom module declaring its own tags: the doc's my_tag_hierarchy/my_tag/{input,output}."""
    for node in prepared.graph.nodes:
        tag = node.meta.get("fxq_qtag")
        if tag == "activation/input" and any(u.target == linear for u in node.users):
            node.meta["fxq_qtag"] = "my_tag_hierarchy/my_tag/input"
        if tag == "activation/output" and node.args[0].target == linear:
            node.meta["fxq_qtag"] = "my_tag_hierarchy/my_tag/output"


def test_hierarchical_tags_on_observer_nodes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    prepared = fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), (torch.randn(2, 4),))
    _retag(prepared, "0")
    both = fxq.find_quantizers(prepared, "**/[quantizer:my_tag_hierarchy/my_tag]")
    assert [n.meta["fxq_qtag"] for n in both.nodes] == ["my_tag_hierarchy/my_tag/input",
                                                        "my_tag_hierarchy/my_tag/output"]
    only_input = fxq.find_quantizers(prepared, "**/[quantizer:my_tag_hierarchy/my_tag/input]")
    assert only_input.nodes == both.nodes[:1]
    assert len(fxq.find_quantizers(prepared, "**/[quantizer:input]")) == 0
    assert len(fxq.find_quantizers(prepared, "**/[qtag:my_tag_hierarchy]")) == 2
    # module hierarchy and tag hierarchy mix: the input observer belongs to the linear that reads it
    assert fxq.find_quantizers(prepared, "0/[qtag:my_tag_hierarchy/my_tag/input]").nodes == only_input.nodes


def test_hierarchical_tags_on_a_module_tree():
    class Stub(torch.nn.Identity):
        def __init__(self, tag: str):
            super().__init__()
            self.fxq_qtag = tag

    model = torch.nn.ModuleDict({"input_quantizer": Stub("my_tag_hierarchy/my_tag/input"),
                                 "output_quantizer": Stub("my_tag_hierarchy/my_tag/output")})
    search = fxq.mpath.search
    assert search("**/[quantizer:my_tag_hierarchy/my_tag]", model).names == ["input_quantizer", "output_quantizer"]
    assert search("**/[quantizer:my_tag_hierarchy/my_tag/input]", model).names == ["input_quantizer"]
    assert search("**/[quantizer:input]", model).names == []


def test_search_over_prepared_and_converted_models():
    model, inputs = transformer()
    prepared = fxq.prepare_fx(model, QConfigMapping().set_global(default_qconfig), inputs)
    through = fxq.mpath.search("**/[cls:torch.nn.LayerNorm]", prepared).users(observers=True)
    assert len(through.filter("[cls:torch.nn.Linear]")) == 8
    # q reads ln1's output observer: an observed value is not observed again, so q has no input observer
    assert len(fxq.find_quantizers(prepared, "layers/0/attn/q/[qtag:activation/input]")) == 0
    ln1_out = fxq.find_quantizers(prepared, "layers/0/ln1/[qtag:activation/output]")
    assert len(ln1_out) == 1 and ln1_out.nodes[0].args[0].target == "layers.0.ln1"
    assert len(fxq.find_quantizers(prepared, "layers/0/ln1/[qtag:activation/input]")) == 1  # the model input
    prepared(*inputs)
    converted = fxq.convert_fx(prepared)
    quantized = fxq.mpath.search("**/[cls:fxq.nn.quantized.Linear]", converted)
    assert len(quantized) == 13
