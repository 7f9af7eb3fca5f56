"""The paths a query is matched against: of every node of a GraphModule, or of every module of a module tree.

Node paths (graph order is the result order):

* a ``call_module`` node: the module path (``layer4.sublayer1`` -> ``layer4 / sublayer1``), its last element
  being the module itself;
* any other node: its scope from the tracer (``node.meta["fxq_scope"]``, the module whose forward made it)
  followed by the node itself, named by ``node.name`` and selected with ``[op:...]`` / ``[target:...]``;
* a scope the GraphModule holds only as a plain ``nn.Module`` (a traced-through Sequential or user block, a
  ModuleList) has the class the tracer recorded (``fxq.graph.tracer.module_classes``), so ``[cls:...]`` tests it as it
  would the module; a graph without that record falls back to the class names in its nodes' scopes;
* an observer node (it carries ``node.meta["fxq_qtag"]``): the path of the op it belongs to followed by the
  observer. Output observers belong to the node they observe; input and parameter observers to the node(s)
  that read them, so ``**/[cls:torch.nn.Linear]/[qtag:parameter/weight]`` finds a linear's weight observer.
  A tag a module declares (``fxq_qtags``) comes with its role (``node.meta["fxq_qtag_role"]``), which decides.

Module trees use ``named_modules()`` order (definition order, pre-order); a module's ``fxq_qtag`` attribute is
its quantizer tag.
"""
from __future__ import annotations

from typing import Iterable, Optional

from torch import fx, nn

from fxq.graph import node_meta
from fxq.mpath.fragments import Element
from fxq.mpath.program import Program
from fxq.graph.tracer import SCOPE_KEY, module_classes

__all__ = ["QTAG_KEY", "GraphIndex", "ModuleIndex", "index_of"]

QTAG_KEY = "fxq_qtag"  # written by passes/insert_observers.py (same key)
QTAG_ROLE_KEY = "fxq_qtag_role"  # "input" / "output", written with a declared tag by passes/tag_declared_quantizers
_ANCHORED_ON_USERS = ("parameter/",)
_MISSING = object()
_DEAD = ((), None, {}, False, {})  # the entry of a scope no node of which can match
_NAME_ONLY = ((), ("node",), ("name",), ("name", "node"))  # field sets a scope's name alone decides
_CLASS_FIELDS = ("module_class", "type_name")  # what [cls:...] reads (sorted, as Program.reads gives them)


def _tag_anchors_on_users(tag: str) -> bool:
    """Input and parameter observers belong to the op reading them; every other tag to the op producing."""
    return tag.endswith("/input") or tag.startswith(_ANCHORED_ON_USERS) or tag == "input"


class _ScopeElement(Element):
    """A traced-through module of a graph without a class record (adopted without nn_module_stack): its class name
    is looked up from the nodes' scopes when a fragment first asks (one pass over the graph, only when needed)."""

    __slots__ = ("index", "path", "resolved")

    def __init__(self, name: str, index: "GraphIndex", path: str):
        self.name, self.module, self.node, self.qtag, self.module_class = name, None, None, None, None
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
        self.classes = module_classes(gm) or {}  # path -> class of modules the graph holds as placeholders
        self._positions: Optional[dict] = None
        self._scope_types: Optional[dict] = None
        self._scope_elements: dict[str, Element] = {}

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
            types, last = {}, None
            for node in self.nodes:
                if node.op == "call_module":
                    continue
                scope = node.meta.get(SCOPE_KEY)
                if scope is not last and scope is not None:  # consecutive nodes mostly share one Scope object
                    types.setdefault(scope.path, scope.type_name)
                    last = scope
            self._scope_types = types
        return self._scope_types

    def scope_module(self, path: str):
        """What a scope's class is known by: the tracer's record first (a class, or a class name when the class
        could not be pickled), then the module the graph holds; None for a placeholder nothing recorded."""
        recorded = self.classes.get(path)
        if recorded is not None:
            return recorded
        module = self.module(path)
        return None if module is None or type(module) is nn.Module else module  # fx's placeholder: no class

    def _scope_class(self, path: str) -> tuple:
        """(class, "") when the scope's class is known, else (None, its class name as far as known): the values its
        Element gives ``module_class`` and ``type_name``."""
        known = self.scope_module(path)
        if isinstance(known, str):
            return None, known
        if known is None:
            return None, self.scope_types().get(path, "")
        return (known if isinstance(known, type) else type(known)), ""

    def scope_element(self, path: str) -> Element:
        element = self._scope_elements.get(path)
        if element is None:
            known, name = self.scope_module(path), path.rpartition(".")[2]
            if isinstance(known, type):
                element = Element(name, module_class=known)
            elif isinstance(known, str):
                element = Element(name, type_name=known)
            elif known is None:
                element = _ScopeElement(name, self, path)
            else:
                element = Element(name, known, qtag=getattr(known, QTAG_KEY, None))
            self._scope_elements[path] = element
        return element

    def prefix_states(self, program: Program, path: str, memo: dict) -> frozenset:
        """The live states after the module scope ``path`` (memoised in ``memo`` per path)."""
        states = memo.get(path)
        if states is None:
            if not path:
                states = program.start
            else:
                parent, _, name = path.rpartition(".")
                states = memo.get(parent)
                if states is None:
                    states = self.prefix_states(program, parent, memo)
                if states:
                    following = program.following(states)  # the same for every scope when no live test reads it
                    states = following if following is not None else self._step(program, states, path, name, memo)
            memo[path] = states
        return states

    def _step(self, program: Program, states: frozenset, path: str, name: str, memo: dict) -> frozenset:
        """One scope step, shared between scopes equal in what the live fragments read (Program.reads).

        ``memo[states]`` maps that signature to the next states (path keys are str: they never collide).
        """
        fields = program.reads(states)
        if fields is None:
            return program.step(states, self.scope_element(path), inner=True)
        steps = memo.get(states)
        if steps is None:
            steps = memo[states] = {}
        key = self._signature(path, name, fields)
        result = steps.get(key)
        if result is None:
            result = steps[key] = program.step(states, self.scope_element(path), inner=True)
        return result

    def _signature(self, path: str, name: str, fields: tuple):
        """The values of ``fields`` for the scope at ``path``, without building its Element."""
        if fields in _NAME_ONLY:  # a scope has no node
            return name if fields and fields[0] == "name" else None
        cls, type_name = self._scope_class(path)
        if fields == _CLASS_FIELDS:  # a class test: the class, or the recorded class name (a type never equals a str)
            return cls if cls is not None else type_name
        values = []
        for field in fields:
            if field == "name":
                values.append(name)
            elif field == "module_class":
                values.append(cls)
            elif field == "type_name":
                values.append(type_name)
            elif field != "node":  # a scope has no node
                values.append(getattr(self.scope_element(path), field))
        return tuple(values)

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
        role = node.meta.get(QTAG_ROLE_KEY)  # a declared tag (passes/tag_declared_quantizers.py) says its role
        on_users = role == "input" if role is not None else _tag_anchors_on_users(tag)
        if on_users:
            anchors = [user for user in node.users if QTAG_KEY not in user.meta]
        else:
            anchors = [arg for arg in node.args[:1] if isinstance(arg, fx.Node)]
        element = self.element(node)
        for anchor in anchors or [None]:
            if anchor is None:  # an observer with nothing to belong to sits in its own scope
                states = self.prefix_states(program, self.prefix_of(node), memo)
            else:
                states = self.prefix_states(program, self.prefix_of(anchor), memo)
                states = program.step(states, self.element(anchor), inner=True) if states else states
            if states and program.accepts_last(states, element):
                return True
        return False

    def match(self, program: Program, only: Optional[Iterable[fx.Node]] = None) -> list:
        """Every matching node in graph order (of ``only`` when given).

        One pass over the graph. What a node must pass depends only on the states after its scope prefix, found
        once per prefix; consecutive nodes of one module call share one Scope object and skip even that lookup.
        Results are a plain list of nodes: a search keeps no per-node objects alive (no extra GC work).
        """
        memo: dict = {}
        if only is not None:
            positions = self.positions
            return [node for node in sorted(only, key=positions.__getitem__)
                    if self._node_matches(program, node, memo)]
        found: list = []
        entries: dict = {}  # scope prefix -> (final tests, their op kinds, the prefix's children, by class, answers)
        last_scope = last_entry = None
        final_ops = program.final_ops  # a node of another op kind cannot be a match, whatever its path
        for node in self.nodes:
            op = node.op
            if final_ops is not None and op not in final_ops:
                continue
            meta = node.meta
            if QTAG_KEY in meta:  # an observer: its path goes through the op it belongs to
                if self._observer_matches(program, node, meta[QTAG_KEY], memo):
                    found.append(node)
                continue
            if op == "call_module":
                prefix, _, name = node.target.rpartition(".")
                entry = entries.get(prefix) or self._entry(program, prefix, memo, entries)
            else:
                scope = meta.get(SCOPE_KEY)
                if scope is not last_scope or last_entry is None:
                    prefix = scope.path if scope is not None else ""
                    last_scope, last_entry = scope, entries.get(prefix) or self._entry(program, prefix, memo, entries)
                entry = last_entry
            tests, ops, children, by_class, verdicts = entry
            if not tests or (ops is not None and op not in ops):
                continue
            if tests[0] is True:
                found.append(node)
                continue
            if op != "call_module":
                element = Element(node.name, None, "", node)
            elif by_class:  # only the module's class decides ([cls:...]): answer once per class
                module = children.get(name)
                verdict = verdicts.get(type(module))
                if verdict is None:
                    element = Element(name, module, "", node)
                    verdict = verdicts[type(module)] = any(test.matches(element) for test in tests)
                if verdict:
                    found.append(node)
                continue
            else:
                element = Element(name, children.get(name), "", node)
            for test in tests:
                if test.matches(element):
                    found.append(node)
                    break
        return found

    def _entry(self, program: Program, prefix: str, memo: dict, entries: dict) -> tuple:
        """What a node in scope ``prefix`` must pass; a scope the query cannot reach shares one empty entry."""
        states = self.prefix_states(program, prefix, memo)
        tests, ops, by_class, verdicts = program.final_entry(states) if states else (None, None, False, None)
        if not tests:
            entry = _DEAD
        else:  # module calls resolve through their parent's children: no walk from the root per node
            parent = self.module(prefix)
            entry = (tests, ops, parent._modules if parent is not None else {}, by_class, verdicts)
        entries[prefix] = entry
        return entry

    def _node_matches(self, program: Program, node: fx.Node, memo: dict) -> bool:
        tag = node.meta.get(QTAG_KEY)
        if tag is not None:
            return self._observer_matches(program, node, tag, memo)
        states = self.prefix_states(program, self.prefix_of(node), memo)
        return bool(states) and program.accepts_last(states, self.element(node))


class ModuleIndex:
    """Path elements of a plain module tree, in named_modules() order (the root itself is not a candidate)."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.entries = [(name, module) for name, module in root.named_modules() if name]
        self.positions = {name: i for i, (name, _) in enumerate(self.entries)}

    def match(self, program: Program, only: Optional[Iterable[str]] = None) -> list:
        """The paths of the matching modules in named_modules() order (of ``only`` when given)."""
        memo = {"": program.start}
        names = set(only) if only is not None else None
        found = []
        for name, module in self.entries:
            parent, _, attribute = name.rpartition(".")
            parent_states = memo.get(parent, frozenset())
            element = Element(attribute, module, qtag=getattr(module, QTAG_KEY, None))
            states = program.step(parent_states, element) if parent_states else parent_states
            memo[name] = states
            if (names is None or name in names) and program.accepts(states):
                found.append(name)
        return found


def index_of(root: nn.Module):
    node_meta.restore(root)  # a loaded GraphModule lost its scopes and quantizer tags
    return GraphIndex(root) if isinstance(root, fx.GraphModule) else ModuleIndex(root)
