"""Scopes and quantizer tags survive torch.save / torch.load of prepared and converted models."""
import torch

import fxq
from conftest import saved_and_loaded
from zoo import ZOO


def _names(collection):
    return [match.node.name for match in collection]


def test_queries_and_quantizers_of_a_loaded_prepared_model_match_the_original():
    model, example, _ = ZOO["transformer_block"]()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    loaded = saved_and_loaded(prepared)
    for query in ("**/[op:call_function]", "**/[target:torch.matmul]", "**/[cls:torch.nn.Linear]"):
        found = fxq.mpath.search(query, prepared)
        assert found and [m.path for m in fxq.mpath.search(query, loaded)] == [m.path for m in found], query
    tagged = fxq.find_quantizers(prepared, "**/[qtag:activation]")
    assert len(tagged) > 3 and len(fxq.find_quantizers(loaded, "**/[qtag:activation]")) == len(tagged)
    prepared(*example)
    loaded(*example)
    assert torch.equal(fxq.convert_fx(loaded)(*example), fxq.convert_fx(prepared)(*example))


def test_a_loaded_converted_model_keeps_its_scopes():
    model, example, _ = ZOO["transformer_block"]()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    prepared(*example)
    converted = fxq.convert_fx(prepared)
    query = "**/[op:call_function]"

    def scopes(gm):  # the module each function node ran in (torch.load renumbers names like getitem_5)
        return [m.path.rpartition(".")[0] for m in fxq.mpath.search(query, gm)]

    assert "attention" in scopes(converted) and scopes(saved_and_loaded(converted)) == scopes(converted)


def test_an_edited_graph_is_not_given_stale_metadata():
    model, example, _ = ZOO["mlp"]()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    loaded = saved_and_loaded(prepared)
    first_call = next(n for n in loaded.graph.nodes if n.op == "call_module")
    with loaded.graph.inserting_before(first_call):
        loaded.graph.call_function(torch.relu, (first_call.args[0],))
    for node in loaded.graph.nodes:
        node.meta.pop("fxq_scope", None)
    fxq.node_meta.restore(loaded)
    assert not any("fxq_scope" in n.meta for n in loaded.graph.nodes)
