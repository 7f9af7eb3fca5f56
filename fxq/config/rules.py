"""The rule kinds of a QConfigMapping, one class each, and the order in which they win.

Each kind stores its entries and answers `lookup(query)` with the qconfig it assigns to one graph
node, or `UNSET` when none of its entries applies. An explicit `None` entry ("keep this float") is
an answer, not UNSET, so it stops the search like any qconfig. `PRECEDENCE` lists the kinds from
the one that wins to the fallback; adding a kind is a new class here plus one line in `PRECEDENCE`.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

__all__ = ["UNSET", "NodeQuery", "PRECEDENCE", "GlobalRule", "ObjectTypeRules", "ModuleNameRegexRules",
           "ModuleNameRules", "ModuleNameObjectTypeOrderRules", "MPathRules"]


class _Unset:
    """The answer of a rule kind that has nothing to say about a node (distinct from an explicit None)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


@dataclass(frozen=True)
class NodeQuery:
    """What resolution knows about one graph node; hashable, so results are cached per query."""

    module_path: str
    object_types: tuple = ()
    call_index: Optional[int] = None
    counted_in: str = ""
    mpath: tuple = ()  # the set_mpath queries that select this node (MPathRules.selecting), registration order


def _check_hashable(key: Any, where: str) -> None:
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"{where}: {key!r} is not hashable; use a module class, a function or a method name") from None


class GlobalRule:
    """The qconfig of every node no other rule matches (legacy dict key "")."""

    key = ""

    def __init__(self) -> None:
        self.qconfig: Any = None

    def lookup(self, query: NodeQuery) -> Any:
        return self.qconfig

    def legacy(self) -> Any:
        return self.qconfig


class _TableRules:
    """Shared storage: an insertion-ordered dict from rule key to qconfig."""

    key = ""

    def __init__(self) -> None:
        self.entries: dict[Any, Any] = {}

    def set(self, rule_key: Any, qconfig: Any) -> None:
        self.entries[rule_key] = qconfig  # re-setting keeps the first registration's position, like PyTorch AO

    def legacy(self) -> list:
        return list(self.entries.items())


class ObjectTypeRules(_TableRules):
    """Module class, function or method name -> qconfig; the first candidate type with an entry wins."""

    key = "object_type"

    def set(self, rule_key: Any, qconfig: Any) -> None:
        _check_hashable(rule_key, "set_object_type")
        super().set(rule_key, qconfig)

    def lookup(self, query: NodeQuery) -> Any:
        for object_type in query.object_types:
            if object_type in self.entries:
                return self.entries[object_type]
        return UNSET


class ModuleNameRegexRules(_TableRules):
    """Regex over the module path (matched at its start, like re.match); the first registered match wins."""

    key = "module_name_regex"

    def __init__(self) -> None:
        super().__init__()
        self._compiled: dict[str, re.Pattern] = {}

    def set(self, rule_key: str, qconfig: Any) -> None:
        if not isinstance(rule_key, str):
            raise TypeError(f"set_module_name_regex: the pattern must be a str, got {rule_key!r}")
        try:
            self._compiled[rule_key] = re.compile(rule_key)  # compiled once here, not per node
        except re.error as error:
            raise ValueError(f"set_module_name_regex: {rule_key!r} is not a valid regex ({error})") from None
        super().set(rule_key, qconfig)

    def lookup(self, query: NodeQuery) -> Any:
        for pattern, qconfig in self.entries.items():
            if self._compiled[pattern].match(query.module_path):
                return qconfig
        return UNSET


def _enclosing_paths(module_path: str) -> Iterator[str]:
    """"a.b.c" -> "a.b.c", "a.b", "a": the module itself first, then each parent (the root "" never)."""
    while module_path:
        yield module_path
        module_path = module_path.rpartition(".")[0]


class ModuleNameRules(_TableRules):
    """Module path -> qconfig for that module and everything inside it; the most specific path wins."""

    key = "module_name"

    def set(self, rule_key: str, qconfig: Any) -> None:
        if not isinstance(rule_key, str):
            raise TypeError(f"set_module_name: the module name must be a str, got {rule_key!r}")
        if rule_key == "":
            raise ValueError("set_module_name(''): the root module is the global rule; use set_global(qconfig)")
        super().set(rule_key, qconfig)

    def lookup(self, query: NodeQuery) -> Any:
        for path in _enclosing_paths(query.module_path):
            if path in self.entries:
                return self.entries[path]
        return UNSET


class ModuleNameObjectTypeOrderRules(_TableRules):
    """(module path, object type, n) -> qconfig for the n-th call (from 0) of that type inside that module."""

    key = "module_name_object_type_order"

    def set(self, rule_key: tuple, qconfig: Any) -> None:
        module_name, object_type, index = rule_key
        _check_hashable(object_type, "set_module_name_object_type_order")
        if not isinstance(module_name, str) or not isinstance(index, int) or index < 0:
            raise TypeError(
                f"set_module_name_object_type_order({module_name!r}, {object_type!r}, {index!r}): expected a "
                f"module name str and a call index int >= 0"
            )
        super().set((module_name, object_type, index), qconfig)

    def lookup(self, query: NodeQuery) -> Any:
        if query.call_index is None:
            return UNSET
        for object_type in query.object_types:
            qconfig = self.entries.get((query.counted_in, object_type, query.call_index), UNSET)
            if qconfig is not UNSET:
                return qconfig
        return UNSET

    def legacy(self) -> list:
        return [(*rule_key, qconfig) for rule_key, qconfig in self.entries.items()]


class MPathRules(_TableRules):
    """mpath query -> qconfig for every graph node the query selects; the first registered match wins.

    Needs the node itself (``qconfig_for(..., node=node)``): each query is matched once per graph, and a
    node's lookup key carries the queries selecting it, so resolution stays cached per distinct answer.
    """

    key = "mpath"

    def __init__(self) -> None:
        super().__init__()
        self._selected: dict = {}  # query -> (graph ref, node count, node names) for the graph last asked about

    def set(self, rule_key: str, qconfig: Any) -> None:
        from fxq.mpath import compile as compile_query  # late: fxq.mpath imports the tracer, not the config

        if not isinstance(rule_key, str):
            raise TypeError(f"set_mpath: the query must be a str such as '**/head/**', got {rule_key!r}")
        compile_query(rule_key)  # a bad query fails here, with a caret, not in the middle of prepare_fx
        self._selected.pop(rule_key, None)
        super().set(rule_key, qconfig)

    def selecting(self, node: Any) -> tuple:
        """The registered queries that select ``node`` (a node of a GraphModule), in registration order."""
        if not self.entries or node is None:
            return ()
        return tuple(query for query in self.entries if node.name in self._names(query, node.graph))

    def _names(self, query: str, graph: Any) -> set:
        from fxq.mpath import search

        cached = self._selected.get(query)
        if cached is None or cached[0]() is not graph or cached[1] != len(graph.nodes):  # rebuilt when edited
            names = set(search(query, graph.owning_module).names)  # names, not nodes: no model is kept alive
            cached = self._selected[query] = (weakref.ref(graph), len(graph.nodes), names)
        return cached[2]

    def lookup(self, query: NodeQuery) -> Any:
        return self.entries[query.mpath[0]] if query.mpath else UNSET


# The rule kind that wins comes first: mpath queries, then the module-name kinds, regex, type, global.
PRECEDENCE: tuple[Callable[[], Any], ...] = (
    MPathRules,
    ModuleNameObjectTypeOrderRules,
    ModuleNameRules,
    ModuleNameRegexRules,
    ObjectTypeRules,
    GlobalRule,
)
