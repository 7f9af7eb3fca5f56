"""mpath [cls:...] on scopes the GraphModule holds only as plain Modules (traced-through Sequentials, user blocks,
ModuleLists): the tracer's class record answers them, on a traced model and after prepare, deepcopy, convert and
torch.save/load, and for foreign GraphModules from nn_module_stack.

No ``from __future__ import annotations`` here: torch.fx cannot torch.save a graph whose placeholders carry string
annotations, and these models are saved.
"""
import copy

import pytest
import torch
from torch import nn

import fxq
from fxq.mpath import search
from fxq.graph.tracer import ModuleClasses, module_classes
from fxq.graph.module_copy import copy_module
from conftest import saved_and_loaded
from mpath_models import transformer


class Mixer(nn.Module):
    """Attention-like: its matmuls are function nodes in its own scope."""

    def __init__(self, width):
        super().__init__()
        self.q, self.k = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        scores = torch.matmul(self.q(x), self.k(x).transpose(-2, -1)).softmax(-1)
        return torch.matmul(scores, x)


class BaseStage(nn.Module):
    pass


class Stage(BaseStage):
    """Its forward only calls submodules: no node is created in its own scope."""

    def __init__(self, width):
        super().__init__()
        self.mixer = Mixer(width)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x):
        return self.mlp(self.mixer(x))


class Gate(nn.Module):
    """Calls torch.matmul in its own forward (the `**/[cls:Block]/[target:torch.matmul]` case)."""

    def __init__(self, width):
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        return torch.matmul(self.proj(x), x.transpose(-2, -1)).softmax(-1).matmul(x)


class Net(nn.Module):
    def __init__(self, width=8, depth=2):
        super().__init__()
        self.stages = nn.ModuleList(Stage(width) for _ in range(depth))
        self.gate = Gate(width)
        self.head = nn.Sequential(nn.Linear(width, 4))

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return self.head(self.gate(x))


STAGE_MATMULS = "**/[cls:test_mpath_scopes.Stage]/**/[target:torch.matmul]"
QUERIES = [
    "**/[cls:torch.nn.Sequential]/[cls:torch.nn.Linear]",
    STAGE_MATMULS,
    "[cls:torch.nn.ModuleList]/*/mixer/[cls:torch.nn.Linear]",
    "**/[cls:test_mpath_scopes.Gate]/[target:torch.matmul]",
]


def _paths(query, model):
    return [match.path for match in search(query, model)]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval(), (torch.randn(2, 5, 8),)


@pytest.fixture(scope="module")
def prepared(net):
    model, example = net
    gm = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), example)
    gm(*example)
    return gm


def test_sequential_query_on_a_traced_transformer_equals_the_module_tree():
    model, _ = transformer()
    query = "**/[cls:torch.nn.Sequential]/*"
    expected = [f"layers.{i}.mlp.{j}" for i in range(2) for j in range(3)]
    assert _paths(query, model) == expected
    assert _paths(query, fxq.tracer.trace(model)) == expected  # was [] before the tracer kept the classes


def test_module_list_never_called_is_still_a_classed_scope():
    # the ModuleList is only iterated by Transformer.forward: never entered, recorded as a container on the way
    model, _ = transformer()
    found = search("[cls:torch.nn.ModuleList]/*/attn/[target:torch.matmul]", fxq.tracer.trace(model))
    assert found.names == ["matmul", "matmul_1", "matmul_2", "matmul_3"]


def test_user_block_query_reaches_function_nodes_inside_it(net):
    gm = fxq.tracer.trace(net[0])
    # Stage creates no node itself: only the record knows its class
    assert _paths(STAGE_MATMULS, gm) == [f"stages.{i}.mixer.{name}" for i in range(2)
                                         for name in (("matmul", "matmul_1"), ("matmul_2", "matmul_3"))[i]]
    assert len(search("**/[cls:test_mpath_scopes.BaseStage]/mixer/[target:torch.matmul]", gm)) == 4  # subclass
    assert len(search("**/[cls:test_mpath_scopes.Stage]/[target:torch.matmul]", gm)) == 0  # not directly in it
    gate = search("**/[cls:test_mpath_scopes.Gate]/[target:torch.matmul]", gm)
    assert gate.names == ["matmul_4"]  # torch.matmul, not the .matmul method (a call_method node)
    assert search("**/[cls:test_mpath_scopes.Gate]/[target:matmul]", gm).names == ["matmul_4", "matmul_5"]


def test_record_lists_traced_through_modules_and_containers_only(net):
    record = module_classes(fxq.tracer.trace(net[0]))
    assert isinstance(record, ModuleClasses)
    assert record == {"stages": nn.ModuleList, "stages.0": Stage, "stages.0.mixer": Mixer,
                      "stages.0.mlp": nn.Sequential, "stages.1": Stage, "stages.1.mixer": Mixer,
                      "stages.1.mlp": nn.Sequential, "gate": Gate, "head": nn.Sequential}


@pytest.mark.parametrize("query", QUERIES)
def test_same_results_after_prepare_deepcopy_and_reference_convert(net, prepared, query):
    expected = _paths(query, fxq.tracer.trace(net[0]))
    assert expected, query
    assert _paths(query, prepared) == expected
    assert _paths(query, copy.deepcopy(prepared)) == expected
    assert _paths(query, fxq.convert_to_reference_fx(prepared)) == expected


def test_record_carried_through_prepare_convert_and_save(net, prepared):
    record = module_classes(fxq.tracer.trace(net[0]))
    converted = fxq.convert_fx(prepared)
    loaded = saved_and_loaded(prepared)
    for gm in (prepared, copy.deepcopy(prepared), converted, fxq.fuse_fx(net[0]), loaded,
               saved_and_loaded(converted), fxq.convert_to_reference_fx(loaded)):
        assert module_classes(gm) == record
    # torch.load drops gm.meta, so a plain deepcopy of a loaded model loses the record; fxq's own copies keep it
    assert module_classes(copy_module(loaded)) == record


def test_module_call_queries_survive_torch_save(prepared):
    # torch.load re-traces the saved code, so node scopes are lost (function nodes fall to the root scope);
    # module calls keep their paths and the record keeps the classes of the scopes around them
    loaded = saved_and_loaded(prepared)
    for query in ("**/[cls:torch.nn.Sequential]/[cls:torch.nn.Linear]",
                  "[cls:torch.nn.ModuleList]/*/mixer/[cls:torch.nn.Linear]"):
        assert _paths(query, loaded) == _paths(query, prepared)


def test_classes_pickle_cannot_store_are_saved_by_name():
    class Local(nn.Module):  # defined in a function: pickle cannot store it by reference
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    gm = fxq.tracer.trace(nn.Sequential(Local(), nn.Sequential(nn.ReLU())))
    loaded = saved_and_loaded(gm)  # saving must not fail because of the record
    assert module_classes(loaded) == {"0": f"{__name__}.{Local.__qualname__}", "1": nn.Sequential}
    assert search("[cls:torch.nn.Sequential]/*", loaded).names == ["_1_0"]
    assert search("*/[cls:torch.nn.Linear]", loaded).names == ["_0_fc"]


def test_foreign_graph_module_fills_the_record_from_nn_module_stack(net):
    model, example = net
    foreign = torch.fx.symbolic_trace(model)
    assert module_classes(foreign) is None
    prepared = fxq.prepare_fx(foreign, fxq.get_default_qconfig_mapping(), example)
    # nn_module_stack lists the modules called; the ModuleList is only iterated, so only fxq's tracer knows it
    called = {path: cls for path, cls in module_classes(fxq.tracer.trace(model)).items() if path != "stages"}
    assert module_classes(prepared) == called
    for query in QUERIES:
        expected = _paths(query, fxq.tracer.trace(model)) if "ModuleList" not in query else []
        assert _paths(query, prepared) == expected, query


def test_graph_without_record_falls_back_to_node_scopes(net):
    gm = fxq.tracer.trace(net[0])
    delattr(gm, "_fxq_module_classes")
    # Mixer makes nodes in its own scope, so its class name is known from them; Stage's is not
    assert len(search("**/[cls:test_mpath_scopes.Mixer]/[target:torch.matmul]", gm)) == 4
    assert len(search(STAGE_MATMULS, gm)) == 0


def test_ops_of_a_converted_model_are_found_as_ops_not_as_quantizers(prepared):
    converted = fxq.convert_fx(prepared)
    calls = {n.name for n in converted.graph.nodes if n.op == "call_module"}
    assert calls and {m.node.name for m in search("**/[op:call_module]", converted)} == calls
    quantizers = fxq.find_quantizers(converted, "**/[qtag:activation]")
    assert not {m.node.name for m in quantizers} & calls  # lowered ops do not inherit the quantize node's tags
