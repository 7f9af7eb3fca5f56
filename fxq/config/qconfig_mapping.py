"""QConfigMapping: which qconfig each graph node gets, set by rules and resolved per node.

    >>> import torch
    >>> from fxq.config import QConfigMapping, default_qconfig
    >>> mapping = (QConfigMapping().set_global(default_qconfig)
    ...            .set_object_type(torch.nn.Linear, None)          # keep every Linear float...
    ...            .set_module_name("head.fc", default_qconfig))    # ...except this one
    >>> mapping.qconfig_for("body.fc", (torch.nn.Linear,)) is None
    True
    >>> mapping.qconfig_for("head.fc", (torch.nn.Linear,)) == default_qconfig
    True
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Optional

from fxq.config.qconfig import QConfig, QConfigAny
from fxq.config.rules import PRECEDENCE, UNSET, NodeQuery

__all__ = ["QConfigMapping", "QCONFIG_DICT_KEYS"]

# The legacy qconfig_dict keys, in PyTorch AO's to_dict order.
QCONFIG_DICT_KEYS = ("", "object_type", "module_name_regex", "module_name", "module_name_object_type_order")
_ENTRY_LENGTH = {"mpath": 2, "object_type": 2, "module_name_regex": 2, "module_name": 2,
                 "module_name_object_type_order": 4}


def as_qconfig(value: Any, where: str) -> QConfigAny:
    """Accept a QConfig, None, or any (activation, weight) namedtuple such as PyTorch AO's QConfig."""
    if value is None or isinstance(value, QConfig):
        return value
    if isinstance(value, tuple) and hasattr(value, "activation") and hasattr(value, "weight"):
        return QConfig(value.activation, value.weight)
    raise TypeError(f"{where}: expected a QConfig or None (None keeps the op in float), got {value!r}")


class QConfigMapping:
    """Rules that assign a QConfig (or None = keep float) to each node of a model's graph.

    Rule kinds, from the one that wins to the fallback:

    ================================  ==========================================================
    mpath                             nodes an fxq.mpath query selects (first registered wins)
    module_name_object_type_order     the n-th call of a type inside one module (exact module)
    module_name                       a module and all its submodules (most specific path wins)
    module_name_regex                 module paths matching a regex (first registered wins)
    object_type                       a module class, function or method name
    global ("")                       everything else
    ================================  ==========================================================

    An explicit None is a rule like any other: it keeps the matched ops in float and overrides
    lower rules. Setters return self so calls chain; the legacy dict form goes through
    `to_dict` / `from_dict`, and `coerce` accepts whatever prepare_fx is given.
    """

    def __init__(self) -> None:
        self._rules = {kind.key: kind() for kind in PRECEDENCE}
        self._order = tuple(self._rules[kind.key] for kind in PRECEDENCE)
        self._cache: dict[NodeQuery, QConfigAny] = {}
        # the backend whose untouched default mapping this is (get_default_qconfig_mapping sets it); any setter
        # clears it: prepare_fx may replace an untouched default on transformer-like torch.export graphs only
        self.stock_default: Optional[str] = None

    # ---- setters (PyTorch AO's API) ----

    def _set(self, kind: str, rule_key: Any, qconfig: Any, where: str) -> "QConfigMapping":
        self._rules[kind].set(rule_key, as_qconfig(qconfig, where))
        self._cache.clear()
        self.stock_default = None
        return self

    def set_global(self, qconfig: QConfigAny) -> "QConfigMapping":
        """Set the qconfig of every node no other rule matches."""
        self._rules[""].qconfig = as_qconfig(qconfig, "set_global")
        self._cache.clear()
        self.stock_default = None
        return self

    def set_object_type(self, object_type: Any, qconfig: QConfigAny) -> "QConfigMapping":
        """Set the qconfig of a module class (e.g. nn.Linear), a function (F.linear) or a method name ("reshape")."""
        return self._set("object_type", object_type, qconfig, f"set_object_type({object_type!r})")

    def set_module_name_regex(self, module_name_regex: str, qconfig: QConfigAny) -> "QConfigMapping":
        """Set the qconfig of modules whose path matches the regex at its start; earlier registrations win."""
        where = f"set_module_name_regex({module_name_regex!r})"
        return self._set("module_name_regex", module_name_regex, qconfig, where)

    def set_module_name(self, module_name: str, qconfig: QConfigAny) -> "QConfigMapping":
        """Set the qconfig of the module at this dotted path and of everything inside it."""
        return self._set("module_name", module_name, qconfig, f"set_module_name({module_name!r})")

    def set_mpath(self, query: str, qconfig: QConfigAny) -> "QConfigMapping":
        """Set the qconfig of every node the mpath query selects; wins over every other rule kind.

        >>> from fxq.config import default_qconfig
        >>> mapping = QConfigMapping().set_global(default_qconfig).set_mpath("**/head/**", None)  # head stays float
        """
        return self._set("mpath", query, qconfig, f"set_mpath({query!r})")

    def set_module_name_object_type_order(
        self, module_name: str, object_type: Any, index: int, qconfig: QConfigAny
    ) -> "QConfigMapping":
        """Set the qconfig of the `index`-th call (from 0) of `object_type` made by the module at `module_name`."""
        where = f"set_module_name_object_type_order({module_name!r}, {object_type!r}, {index!r})"
        return self._set("module_name_object_type_order", (module_name, object_type, index), qconfig, where)

    # ---- PyTorch AO's attribute names, read-only so the resolution cache stays valid ----

    @property
    def global_qconfig(self) -> QConfigAny:
        return self._rules[""].qconfig

    @property
    def object_type_qconfigs(self) -> Mapping[Any, QConfigAny]:
        return MappingProxyType(self._rules["object_type"].entries)

    @property
    def module_name_regex_qconfigs(self) -> Mapping[str, QConfigAny]:
        return MappingProxyType(self._rules["module_name_regex"].entries)

    @property
    def module_name_qconfigs(self) -> Mapping[str, QConfigAny]:
        return MappingProxyType(self._rules["module_name"].entries)

    @property
    def mpath_qconfigs(self) -> Mapping[str, QConfigAny]:
        return MappingProxyType(self._rules["mpath"].entries)

    @property
    def module_name_object_type_order_qconfigs(self) -> Mapping[tuple, QConfigAny]:
        return MappingProxyType(self._rules["module_name_object_type_order"].entries)

    # ---- resolution ----

    def qconfig_for(
        self, module_path: str, object_types: tuple = (), call_index: Optional[int] = None, *,
        counted_in: Optional[str] = None, node: Any = None,
    ) -> QConfigAny:
        """The qconfig of one graph node: the winning rule's qconfig (None = keep float).

        module_path:  for a call_module node, the module's qualified name; for any other node, the
                      module whose forward made it ("" at the root); for get_attr, the attribute's owner.
        object_types: candidate object types, the preferred first. PyTorch AO's choices, for parity:
                      call_module (type(module),), or (FusedType, FirstChildType) for a fused module,
                      or (QatType, FloatType) under QAT; call_function (node.target,);
                      call_method (type of the enclosing module, node.target); get_attr (type(owner),).
        call_index:   how many calls of this object type the same module made before this one; only
                      module_name_object_type_order rules use it (None: they do not apply).
        counted_in:   the module whose calls call_index counts; defaults to module_path. For a
                      call_module node pass the parent's path: PyTorch AO counts a submodule call in its parent.
        node:         the fx node itself (of a GraphModule); set_mpath rules need it and do not apply without it.

        Results are cached per arguments until the next set_* call.

        >>> import torch
        >>> from fxq.config import default_qconfig
        >>> m = QConfigMapping().set_module_name_object_type_order("", torch.add, 1, default_qconfig)
        >>> [m.qconfig_for("", (torch.add,), i) is None for i in range(3)]
        [True, False, True]
        """
        query = NodeQuery(module_path, tuple(object_types), call_index,
                          module_path if counted_in is None else counted_in, self._rules["mpath"].selecting(node))
        if query not in self._cache:
            self._cache[query] = self._resolve(query)
        return self._cache[query]

    def _resolve(self, query: NodeQuery) -> QConfigAny:
        for rules in self._order:
            qconfig = rules.lookup(query)
            if qconfig is not UNSET:
                return qconfig
        return None

    # ---- legacy dicts ----

    def to_dict(self) -> dict[str, Any]:
        """The legacy qconfig_dict: {"": global, "object_type": [(type, qconfig)], ...} (every key present)."""
        legacy = {key: self._rules[key].legacy() for key in QCONFIG_DICT_KEYS}
        if self._rules["mpath"].entries:  # fxq's own key, only when used, so PyTorch AO-shaped dicts stay equal
            legacy["mpath"] = self._rules["mpath"].legacy()
        return legacy

    @classmethod
    def from_dict(cls, qconfig_dict: Mapping[str, Any]) -> "QConfigMapping":
        """Build a mapping from a legacy qconfig_dict; unknown keys raise a ValueError naming the valid ones.

        >>> from fxq.config import default_qconfig
        >>> QConfigMapping.from_dict({"": default_qconfig, "module_name": [("fc", None)]}).module_name_qconfigs
        mappingproxy({'fc': None})
        """
        unknown = [key for key in qconfig_dict if key not in QCONFIG_DICT_KEYS + ("mpath",)]
        if unknown:
            valid = ", ".join(repr(key) for key in QCONFIG_DICT_KEYS)
            raise ValueError(f"qconfig_dict has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {valid}")
        mapping = cls()
        if "" in qconfig_dict:
            mapping.set_global(qconfig_dict[""])
        for key, length in _ENTRY_LENGTH.items():
            for position, entry in enumerate(qconfig_dict.get(key, ())):
                if not isinstance(entry, (tuple, list)) or len(entry) != length:
                    raise ValueError(
                        f'qconfig_dict["{key}"][{position}] is {entry!r}; expected a tuple of {length} items'
                    )
                getattr(mapping, _SETTER[key])(*entry)
        return mapping

    @classmethod
    def coerce(cls, obj: Any) -> "QConfigMapping":
        """A QConfigMapping from None (empty: everything float), a legacy dict, or a mapping (returned as is).

        A foreign mapping with PyTorch AO's API (to_dict) is converted through its legacy dict.
        """
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        if type(obj).__name__ == "QConfigMapping" and hasattr(obj, "to_dict"):
            return cls.from_dict(obj.to_dict())
        hint = ("; for one qconfig everywhere write fxq.QConfigMapping().set_global(qconfig)"
                if hasattr(obj, "activation") and hasattr(obj, "weight") else "")
        raise TypeError(f"qconfig_mapping: expected a QConfigMapping, a legacy qconfig_dict or None, got "
                        f"{type(obj).__name__}{hint}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QConfigMapping):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        lines = [f"QConfigMapping(global={self.global_qconfig}"]
        for key in QCONFIG_DICT_KEYS[1:] + ("mpath",):
            for entry in self._rules[key].legacy():
                *rule_key, qconfig = entry
                lines.append(f"  {key} {', '.join(_name(part) for part in rule_key)}: {qconfig}")
        return "\n".join(lines) + ")"


_SETTER = {
    "mpath": "set_mpath",
    "object_type": "set_object_type",
    "module_name_regex": "set_module_name_regex",
    "module_name": "set_module_name",
    "module_name_object_type_order": "set_module_name_object_type_order",
}


def _name(part: Any) -> str:
    """Deterministic text for a rule key: qualified names for classes and functions, repr otherwise."""
    if isinstance(part, str) or isinstance(part, int):
        return repr(part)
    module = getattr(part, "__module__", None) or ""
    # Builtins such as torch.add report a __qualname__ on a private class; __name__ reads as written.
    name = getattr(part, "__qualname__" if isinstance(part, type) else "__name__", None)
    return f"{module}.{name}" if name else repr(part)
