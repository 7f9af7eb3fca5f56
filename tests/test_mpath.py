"""mpath queries: fastforward's documented examples on a module tree and its traced graph, node queries on a
transformer, collections (order, set operations, data flow, repr) and parse errors."""
from __future__ import annotations

import operator
import random

import pytest
import torch

import fxq
from fxq.mpath import Element, MPathError, search
from mpath_models import doc_tree, transformer

LINEARS = ["layer1.sublayer1", "layer2.sublayer1", "layer3.sublayer1", "layer4.sublayer1", "layer4.sublayer2.first",
           "layer4.sublayer2.last.only"]
# Every query of the MPath documentation and the modules it selects (in fxq's definition order).
DOC_QUERIES = {
    "**/[cls:torch.nn.Linear]": LINEARS,
    "layer4/**/[cls:torch.nn.Linear]": ["layer4.sublayer1", "layer4.sublayer2.first", "layer4.sublayer2.last.only"],
    "layer4/*/[cls:torch.nn.Linear]": ["layer4.sublayer2.first"],
    "layer4/[cls:torch.nn.Linear]": ["layer4.sublayer1"],
    r"[re:layer[12\]]/sublayer1": ["layer1.sublayer1", "layer2.sublayer1"],
    "layer2/~[cls:torch.nn.Linear]": ["layer2.activation", "layer2.sublayer2"],
}


@pytest.fixture(scope="module")
def tree():
    return doc_tree()


@pytest.fixture(scope="module")
def block():
    model, _ = transformer()
    return fxq.tracer.trace(model)


@pytest.mark.parametrize("query", DOC_QUERIES)
def test_doc_queries_on_the_module_tree(tree, query):
    assert search(query, tree).names == DOC_QUERIES[query]


@pytest.mark.parametrize("query", DOC_QUERIES)
def test_doc_queries_on_the_traced_graph_select_the_same_module_calls(tree, query):
    found = search(query, fxq.tracer.trace(tree))
    assert [match.path for match in found] == DOC_QUERIES[query]
    assert all(node.op == "call_module" for node in found.nodes)


def test_spaces_after_the_colon_leading_slash_and_class_alias(tree):
    # fastforward's docstring writes [cls: torch.nn.Linear]; a leading / is accepted (queries are rooted anyway)
    assert search("/layer4/*/[class: torch.nn.Linear]", tree).names == ["layer4.sublayer2.first"]


def test_double_star_matches_zero_levels_and_groups_alternate(tree):
    assert search("layer4/**/last", tree).names == ["layer4.sublayer2.last"]
    assert search("layer3/**", tree).names == ["layer3", "layer3.sublayer1", "layer3.sublayer2"]
    assert search("{layer1, layer4/**}/sublayer1", tree).names == ["layer1.sublayer1", "layer4.sublayer1"]
    assert search("~~layer1/[regex:sub.*1]", tree).names == ["layer1.sublayer1"]


def test_matmul_nodes_exactly(block):
    expected = [node for node in block.graph.nodes if node.target is torch.matmul]
    assert len(expected) == 4
    assert search("**/[target:torch.matmul]", block).nodes == expected
    assert search("**/attn/[target:torch.matmul]", block).nodes == expected
    assert search("layers/1/**/[op:call_function]", block).nodes[0] is expected[2]


def test_negated_op_under_one_scope(block):
    found = search("layers/0/attn/~[op:call_module]", block)
    expected = [n for n in block.graph.nodes if n.op != "call_module" and n.meta["fxq_scope"].path == "layers.0.attn"]
    assert found.nodes == expected
    assert [n.target for n in found.nodes] == ["transpose", torch.matmul, operator.mul, "softmax", torch.matmul]
    assert {n.name for n in search("layers/0/attn/[target:transpose]", block).nodes} == {"transpose"}


def test_regex_with_escaped_brackets_over_node_paths(block):
    found = search(r"layers/[re:[1\]]/attn/[re:[qk\]]", block)
    assert [m.path for m in found] == ["layers.1.attn.q", "layers.1.attn.k"]


def test_layernorm_users_that_are_linears(block):
    found = search("**/[cls:torch.nn.LayerNorm]", block).users().filter("[cls:torch.nn.Linear]")
    expected = [f"layers.{i}.{name}" for i in range(2) for name in ("attn.q", "attn.k", "attn.v", "mlp.0")]
    assert sorted(m.path for m in found) == sorted(expected)
    assert [m.node for m in found] == sorted((m.node for m in found), key=list(block.graph.nodes).index)


def test_producers_and_filter_anchoring(block):
    producers = search("**/attn/out", block).producers()
    assert [n.target for n in producers.nodes] == [torch.matmul, torch.matmul]
    linears = search("**/[cls:torch.nn.Linear]", block)
    assert linears.filter("/head").names == ["head"] and linears.filter("head").names == ["head"]
    assert linears.filter("/q").names == []  # a leading / anchors the filter at the root


def test_set_operations_keep_graph_order(block):
    linears, mlp = search("**/[cls:torch.nn.Linear]", block), search("**/mlp/**", block)
    order = list(block.graph.nodes).index
    union = search("**/[cls:torch.nn.LayerNorm]", block) | linears
    assert [order(n) for n in union.nodes] == sorted(order(n) for n in union.nodes) and len(union) == 4 + 13
    assert (linears & mlp).names == [n for n in linears.names if n in mlp.names] and len(linears & mlp) == 4
    assert len(linears - mlp) == 9 and "head" in (linears - mlp)
    assert (mlp & linears).names == (linears & mlp).names


def test_collection_sequence_and_repr(block, tree):
    linears = search("**/[cls:torch.nn.Linear]", block)
    assert len(linears) == 13 and linears[0].module is block.get_submodule("layers.0.attn.q")
    assert len(linears[1:3]) == 2 and isinstance(linears[1:3], fxq.mpath.NodeCollection)
    assert linears.modules[-1] is block.head and linears.nodes[-1].target == "head"
    assert repr(search("layer4/**/[cls:torch.nn.Linear]", tree)) == (
        "NodeCollection([<0: layer4.sublayer1: Linear>, <1: layer4.sublayer2.first: Linear>, "
        "<2: layer4.sublayer2.last.only: Linear>])")
    assert repr(search("**/[target:torch.matmul]", block)[:1]) == "NodeCollection([<0: layers.0.attn.matmul: matmul>])"
    with pytest.raises(TypeError, match="search a GraphModule"):
        search("**", tree).users()


def test_traced_through_scopes_match_their_recorded_class(block):
    found = search("**/[cls:mpath_models.Attention]/[target:torch.matmul]", block)
    assert len(found) == 4


def test_register_fragment_adds_a_kind():
    class EvenIndex:
        def __init__(self, argument: str):
            self.offset = int(argument)

        def matches(self, element) -> bool:
            return element.name.isdigit() and (int(element.name) + self.offset) % 2 == 0

    fxq.mpath.register_fragment("even", EvenIndex)
    model = torch.nn.Sequential(*(torch.nn.ReLU() for _ in range(5)))
    assert search("[even:0]", model).names == ["0", "2", "4"]
    assert search("[even: 1]", fxq.tracer.trace(model)).names == ["_1", "_3"]


def test_fragments_declaring_what_they_read_share_scope_steps_and_give_the_same_answers(block):
    class Layer:  # [layer:N] selects the element named N; says it reads only the name
        reads = ("name",)

        def __init__(self, argument: str):
            self.name = argument

        def matches(self, element) -> bool:
            return element.name == self.name

    class Undeclared(Layer):  # the same test without the declaration: tested on each scope
        reads = None

    fxq.mpath.register_fragment("layer", Layer)
    fxq.mpath.register_fragment("layerundeclared", Undeclared)
    declared = search("layers/[layer:1]/**/[cls:torch.nn.Linear]", block)
    assert [m.path for m in declared] == ["layers.1.attn.q", "layers.1.attn.k", "layers.1.attn.v", "layers.1.attn.out",
                                          "layers.1.mlp.0", "layers.1.mlp.2"]
    assert search("layers/[layerundeclared:1]/**/[cls:torch.nn.Linear]", block).nodes == declared.nodes
    # a class test on traced-through scopes (the graph holds them as plain Modules) reads the recorded class
    assert len(search("**/[cls:mpath_models.Block]/*/[cls:torch.nn.Linear]", block)) == 12
    assert len(search("**/[cls:torch.nn.Linear]/*", block)) == 0


def _brute_force(query: str, gm) -> list:
    """The names of the nodes whose whole path, stepped from the root with no memo and no shortcut, the query
    accepts: the reference the index's one-pass matching must equal."""
    program, types = fxq.mpath.compile(query), {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            types.setdefault(fxq.tracer.scope_of(node).path, fxq.tracer.scope_of(node).type_name)
    found = []
    for node in gm.graph.nodes:
        scope = fxq.tracer.scope_of(node).path
        names = node.target.split(".") if node.op == "call_module" else scope.split(".") * bool(scope) + [node.name]
        elements = []
        for depth, name in enumerate(names[:-1], 1):
            module = gm.get_submodule(".".join(names[:depth]))
            placeholder = type(module) is torch.nn.Module  # fx keeps traced-through modules as plain Modules
            elements.append(Element(name, None if placeholder else module,
                                    types.get(".".join(names[:depth]), "") if placeholder else ""))
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if program.matches_path(elements + [Element(names[-1], module, "", node)]):
            found.append(node.name)
    return found


def test_one_pass_matching_equals_stepping_every_path_from_the_root(block):
    pieces = ["layers", "1", "attn", "mlp", "q", "*", "**", "[cls:torch.nn.Linear]", "[cls:mpath_models.Block]",
              "[re:l.*]", "~attn", "[op:call_function]", "~[op:call_module]", "[target:torch.matmul]",
              "[target:softmax]", "{attn, mlp/*}", "head", "~[cls:torch.nn.Linear]"]
    rng = random.Random(0)
    queries = {"/".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(300)}
    for query in sorted(queries):
        assert search(query, block).names == _brute_force(query, block), query


@pytest.mark.parametrize("query, position, words", [
    ("[cls:", 5, "not closed: expected ']'"),
    ("[unknown:x]", 1, "unknown fragment kind 'unknown'; known kinds: class, cls"),
    ("a//b", 2, "expected a name"),
    ("[re:(]", 4, "invalid regex '('"),
    ("[cls:no.such.Class]", 5, "cannot resolve 'no.such.Class'"),
    ("[cls:torch.nn.functional.relu]", 5, "not a class"),
    ("layer*", 5, "must be a whole segment"),
    ("{a, b", 5, "expected ',' or '}'"),
    ("[op:call_fn]", 4, "unknown op kind"),
    ("a/~*", 3, "'~' negates a name or a [kind:argument]"),
])
def test_parse_errors_point_at_the_problem(query, position, words):
    with pytest.raises(MPathError) as caught:
        fxq.mpath.compile(query)
    assert caught.value.position == position and words in str(caught.value)
    assert str(caught.value).splitlines()[1:] == [f"  {query}", "  " + " " * position + "^"]
