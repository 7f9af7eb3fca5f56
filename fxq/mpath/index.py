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
_MISSING = object()


def _tag_anchors_on_users(tag: str) -> bool:
    """Input and parameter observers belong to the op reading them; every other tag to the op producing."""
    return tag.endswith("/input") or tag.startswith(_ANCHORED_ON_USERS) or tag == "input"


class _ScopeElement(Element):
    """A traced-through module the GraphModule holds only as a plain Module: its class name is looked up from the
    recorded scopes when a fragment first asks (one pass over the graph, only for queries that need it)."""

    __slots__ = ("index", "path", "resolved")

    def __init__(self, name: str, index: "GraphIndex", path: str):
        self.name, self.module, self.node, self.qtag = name, None, None, None
        self.index, self.path, self.resolved = index, path, None

    @property
    def type_name(self) -> str:  # shadows the base slot
        if self.resolved is None:
            self.resolved = self.index.scope_types().get(self.path, "")
        return self.resolved


class GraphIndex:
    """Path elements of one GraphModule, built once per search; memoises scope prefixes per program."""

    def __init__(self, gm: fx.GraphModule):
        self.root = gm
        self.nodes = list(gm.graph.nodes)
        self.modules: dict[str, Optional[nn.Module]] = {"": gm}
        self._positions: Optional[dict] = None
        self._scope_types: Optional[dict] = None
        self._scope_elements: dict[str, Element] = {}
        self._groups: Optional[tuple] = None

    @property
    def positions(self) -> dict:
        if self._positions is None:
            self._positions = {node: i for i, node in enumerate(self.nodes)}
        return self._positions

    def module(self, path: str) -> Optional[nn.Module]:
        """The submodule at ``path`` (None if absent), resolved through its memoised parent: no tree walk."""
        module = self.modules.get(path, _MISSING)
        if module is _MISSING:
            parent_path, _, name = path.rpartition(".")
            parent = self.module(parent_path)
            module = self.modules[path] = None if parent is None else parent._modules.get(name)
        return module

    def scope_types(self) -> dict:
        """Module path -> recorded class name (scopes of traced-through modules), built on first use."""
        if self._scope_types is None:
            self._scope_types = {}
            for (prefix, op), bucket in self.groups()[0].items():
                scope = bucket[1].meta.get(SCOPE_KEY) if op != "call_module" else None
                if scope is not None:  # every node of a non-module bucket has this prefix as its scope
                    self._scope_types.setdefault(prefix, scope.type_name)
        return self._scope_types

    def scope_element(self, path: str) -> Element:
        element = self._scope_elements.get(path)
        if element is None:
            module, name = self.module(path), path.rpartition(".")[2]
            if module is None or type(module) is nn.Module:  # fx's placeholder for a traced-through module
                element = _ScopeElement(name, self, path)
            else:
                element = Element(name, module, qtag=getattr(module, QTAG_KEY, None))
            self._scope_elements[path] = element
        return element

    def prefix_states(self, program: Program, path: str, memo: dict) -> frozenset:
        states = memo.get(path)
        if states is None:
            if not path:
                states = program.start
            else:
                parent_states = self.prefix_states(program, path.rpartition(".")[0], memo)
                states = self._step(program, parent_states, self.scope_element(path), memo) if parent_states \
                    else parent_states
            memo[path] = states
        return states

    @staticmethod
    def _step(program: Program, states: frozenset, element: Element, memo: dict) -> frozenset:
        if not program.structural:
            return program.step(states, element)
        module_class = type(element.module) if element.module is not None else None
        key = (states, element.name, module_class, element.type_name, element.qtag)
        result = memo.get(key)
        if result is None:
            result = memo[key] = program.step(states, element)
        return result

    def element(self, node: fx.Node) -> Element:
        if node.op == "call_module":
            return Element(node.target.rpartition(".")[2], self.module(node.target), "", node,
                           node.meta.get(QTAG_KEY))
        return Element(node.name, None, "", node, node.meta.get(QTAG_KEY))

    @staticmethod
    def prefix_of(node: fx.Node) -> str:
        if node.op == "call_module":
            return node.target.rpartition(".")[0]
        scope = node.meta.get(SCOPE_KEY)
        return scope.path if scope is not None else ""

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

    def groups(self) -> tuple:
        """Nodes bucketed by (scope prefix, op) in one pass, plus the observer nodes (their paths vary by anchor).

        A query then costs one test per live bucket plus one per node in buckets its last segment can match.
        """
        if self._groups is None:
            buckets: dict = {}
            observers = []
            for position, node in enumerate(self.nodes):
                meta = node.meta
                if QTAG_KEY in meta:
                    observers.append((position, node))
                    continue
                if node.op == "call_module":
                    prefix = node.target.rpartition(".")[0]
                else:
                    scope = meta.get(SCOPE_KEY)
                    prefix = scope.path if scope is not None else ""
                bucket = buckets.get((prefix, node.op))
                if bucket is None:
                    bucket = buckets[(prefix, node.op)] = []
                bucket += (position, node)  # flat [position, node, ...]: no tuple per node
            self._groups = (buckets, observers)
        return self._groups

    def match(self, program: Program, only: Optional[Iterable[fx.Node]] = None) -> list:
        """(position, node) of every matching node in graph order (of ``only`` when given)."""
        memo: dict = {}
        if only is not None:
            positions = self.positions
            candidates = sorted((positions[node], node) for node in only)
            return [(p, node) for p, node in candidates if self._node_matches(program, node, memo)]
        buckets, observers = self.groups()
        tests_of: dict = {}  # scope prefix -> (final tests, op kinds they can match or None for any)
        found = []
        for (prefix, op), bucket in buckets.items():
            entry = tests_of.get(prefix)
            if entry is None:
                states = self.prefix_states(program, prefix, memo)
                tests = program.final_tests(states) if states else ()
                entry = tests_of[prefix] = (tests, _op_kinds(tests))
            tests, ops = entry
            if not tests or (ops is not None and op not in ops):
                continue
            if tests[0] is True:
                found.extend(zip(bucket[::2], bucket[1::2]))
                continue
            if op == "call_module":  # resolve the children of one parent module, not each path from the root
                parent = self.module(prefix)
                children = parent._modules if parent is not None else {}
                for position, node in zip(bucket[::2], bucket[1::2]):
                    name = node.target.rpartition(".")[2]
                    element = Element(name, children.get(name), "", node)
                    if any(test.matches(element) for test in tests):
                        found.append((position, node))
                continue
            for position, node in zip(bucket[::2], bucket[1::2]):
                element = Element(node.name, None, "", node)
                if any(test.matches(element) for test in tests):
                    found.append((position, node))
        found.extend(item for item in observers if self._observer_matches(program, item[1], item[1].meta[QTAG_KEY],
                                                                           memo))
        found.sort(key=_first)
        return found

    def _node_matches(self, program: Program, node: fx.Node, memo: dict) -> bool:
        tag = node.meta.get(QTAG_KEY)
        if tag is not None:
            return self._observer_matches(program, node, tag, memo)
        states = self.prefix_states(program, self.prefix_of(node), memo)
        return bool(states) and program.accepts_last(states, self.element(node))


def _first(item: tuple) -> int:
    return item[0]


def _op_kinds(tests: tuple):
    """The node op kinds any of these fragments can match (fragments may declare ``node_ops``), None for all."""
    kinds: set = set()
    for test in tests:
        declared = getattr(test, "node_ops", None)
        if test is True or declared is None:
            return None
        kinds.update(declared)
    return kinds


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
