"""The paths a query is matched against: of every node of a GraphModule, or of every module of a module tree.

Node paths (graph order is the result order):

* a ``call_module`` node: the module path (``layer4.sublayer1`` -> ``layer4 / sublayer1``), its last element
  being the module itself;
* any other node: its scope from the tracer (``node.meta["fxq_scope"]``, the module whose forward made it)
  followed by the node itself, named by ``node.name`` and selected with ``[op:...]`` / ``[target:...]``;
* an observer node (it carries ``node.meta["fxq_qtag"]``): the path of the op it belongs to followed by the
  observer. Output observers belong to the node they observe; input and parameter observers to the node(s)
  that read them, so ``**/[cls:torch.nn.Linear]/[qtag:parameter/weight]`` finds a linear's weight observer.

Module trees use ``named_modules()`` order (definition order, pre-order); a module's ``fxq_qtag`` attribute is
its quantizer tag.
"""
from __future__ import annotations

from typing import Iterable, Optional

from torch import fx, nn

from fxq.mpath.fragments import Element
from fxq.mpath.program import Program
from fxq.tracer import SCOPE_KEY

__all__ = ["QTAG_KEY", "GraphIndex", "ModuleIndex", "index_of"]

QTAG_KEY = "fxq_qtag"  # written by passes/insert_observers.py (same key)
_ANCHORED_ON_USERS = ("parameter/",)


def _tag_anchors_on_users(tag: str) -> bool:
    """Input and parameter observers belong to the op reading them; every other tag to the op producing."""
    return tag.endswith("/input") or tag.startswith(_ANCHORED_ON_USERS) or tag == "input"


class GraphIndex:
    """Path elements of one GraphModule, built once per search; memoises scope prefixes per program."""

    def __init__(self, gm: fx.GraphModule):
        self.root = gm
        self.modules = dict(gm.named_modules())
        self.nodes = list(gm.graph.nodes)
        self._positions: Optional[dict] = None
        self._scope_types: Optional[dict] = None
        self._scope_elements: dict[str, Element] = {}

    @property
    def positions(self) -> dict:
        if self._positions is None:
            self._positions = {node: i for i, node in enumerate(self.nodes)}
        return self._positions

    def scope_types(self) -> dict:
        """Module path -> recorded class name, for traced-through modules the GraphModule holds as plain Modules."""
        if self._scope_types is None:
            self._scope_types = {}
            for scope in {node.meta.get(SCOPE_KEY) for node in self.nodes}:
                if scope is not None:
                    self._scope_types.setdefault(scope.path, scope.type_name)
        return self._scope_types

    def scope_element(self, path: str) -> Element:
        element = self._scope_elements.get(path)
        if element is None:
            module = self.modules.get(path)
            if module is None or type(module) is nn.Module:  # fx's placeholder for a traced-through module
                element = Element(path.rpartition(".")[2], None, self.scope_types().get(path, ""))
            else:
                element = Element(path.rpartition(".")[2], module, qtag=getattr(module, QTAG_KEY, None))
            self._scope_elements[path] = element
        return element

    def prefix_states(self, program: Program, path: str, memo: dict) -> frozenset:
        states = memo.get(path)
        if states is None:
            if not path:
                states = program.start
            else:
                parent_states = self.prefix_states(program, path.rpartition(".")[0], memo)
                states = program.step(parent_states, self.scope_element(path)) if parent_states else parent_states
            memo[path] = states
        return states

    def element(self, node: fx.Node) -> Element:
        if node.op == "call_module":
            return Element(node.target.rpartition(".")[2], self.modules.get(node.target), "", node,
                           node.meta.get(QTAG_KEY))
        return Element(node.name, None, "", node, node.meta.get(QTAG_KEY))

    def prefix_of(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return node.target.rpartition(".")[0]
        scope = node.meta.get(SCOPE_KEY)
        return scope.path if scope is not None else ""

    def node_matches(self, program: Program, node: fx.Node, memo: dict) -> bool:
        tag = node.meta.get(QTAG_KEY)
        if tag is not None:
            return self._observer_matches(program, node, tag, memo)
        states = self.prefix_states(program, self.prefix_of(node), memo)
        return bool(states) and bool(program.final_tests(states)) and program.accepts_last(states, self.element(node))

    def _observer_matches(self, program: Program, node: fx.Node, tag: str, memo: dict) -> bool:
        if _tag_anchors_on_users(tag):
            anchors = [user for user in node.users if QTAG_KEY not in user.meta]
        else:
            anchors = [arg for arg in node.args[:1] if isinstance(arg, fx.Node)]
        element = self.element(node)
        for anchor in anchors or [None]:
            if anchor is None:  # an observer with nothing to belong to sits in its own scope
                states = self.prefix_states(program, self.prefix_of(node), memo)
            else:
                states = self.prefix_states(program, self.prefix_of(anchor), memo)
                states = program.step(states, self.element(anchor)) if states else states
            if states and program.accepts_last(states, element):
                return True
        return False

    def match(self, program: Program, only: Optional[Iterable[fx.Node]] = None) -> list:
        """(position, node) of every matching node in graph order (of ``only`` when given)."""
        memo: dict = {}
        if only is None:
            return [(i, node) for i, node in enumerate(self.nodes) if self.node_matches(program, node, memo)]
        positions = self.positions
        candidates = sorted((positions[node], node) for node in only)
        return [(i, node) for i, node in candidates if self.node_matches(program, node, memo)]


class ModuleIndex:
    """Path elements of a plain module tree, in named_modules() order (the root itself is not a candidate)."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.entries = [(name, module) for name, module in root.named_modules() if name]
        self.positions = {name: i for i, (name, _) in enumerate(self.entries)}

    def match(self, program: Program, only: Optional[Iterable[str]] = None) -> list:
        memo = {"": program.start}
        names = set(only) if only is not None else None
        found = []
        for position, (name, module) in enumerate(self.entries):
            parent, _, attribute = name.rpartition(".")
            parent_states = memo.get(parent, frozenset())
            element = Element(attribute, module, qtag=getattr(module, QTAG_KEY, None))
            states = program.step(parent_states, element) if parent_states else parent_states
            memo[name] = states
            if (names is None or name in names) and program.accepts(states):
                found.append((position, name))
        return found


def index_of(root: nn.Module):
    return GraphIndex(root) if isinstance(root, fx.GraphModule) else ModuleIndex(root)
