"""From a model to the GraphModule prepare works on: leaf rules, automatic leaf discovery, foreign graphs.

* Leaves are the non-traceable modules of the prepare config (by name, class or mpath query), the custom module
  classes (config and global registry) and the standalone modules; with ``auto_leaf`` also every submodule that
  fails to trace.
* A model that already is a ``GraphModule`` (from HF's tracer, ``symbolic_trace`` with ``concrete_args``, or
  edited by hand) is taken as it is: its graph is not traced again. Node scopes come from the ``nn_module_stack``
  metadata torch.fx tracers leave, or from the module path of ``call_module`` nodes; the classes of the modules the
  graph holds only as placeholders (the traced-through ones) come from the same metadata, for mpath's ``[cls:]``.

    >>> report = fxq.find_untraceable(model, (x,))                    # doctest: +SKIP
    >>> report.leaves                                                  # doctest: +SKIP
    ['blocks.1.gate']
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import fx, nn

from fxq.config.registry import registry
from fxq.graph.exported import class_named
from fxq.graph.tracer import SCOPE_KEY, Scope, TraceError, module_classes, qualified_name, record_module_classes, trace

__all__ = ["Untraceable", "UntraceableReport", "find_untraceable", "trace_for_prepare", "leaves_by_query",
           "adopt_graph_module"]


@dataclass(frozen=True)
class Untraceable:
    """One submodule that symbolic tracing fails on: where, why, and the user's source line."""

    path: str
    type_name: str
    error: str
    source: str


@dataclass
class UntraceableReport:
    """``modules``: the failing submodules, innermost first found; ``leaves``: their paths, the smallest set of
    leaves (innermost failing modules) that makes the whole model traceable; ``traceable``: False when even the
    root's own forward fails (then no set of leaves helps)."""

    modules: list = field(default_factory=list)
    traceable: bool = True

    @property
    def leaves(self) -> list[str]:
        return [entry.path for entry in self.modules]


def find_untraceable(model: nn.Module, example_inputs: Optional[tuple] = None, leaf_names: tuple = (),
                     leaf_classes: tuple = ()) -> UntraceableReport:
    """Trace ``model`` and, each time a submodule fails, make that innermost module a leaf and trace again.

    ``example_inputs`` is accepted for symmetry with prepare_fx (tracing does not run the model).

    >>> import torch, fxq
    >>> class Gate(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x if x.sum() > 0 else -x          # data-dependent: not traceable
    >>> Gate.__module__ = "my_models"  # as if written in the user's file (fxq's own modules are leaves)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), Gate())
    >>> fxq.find_untraceable(model).leaves
    ['1']
    """
    report = UntraceableReport()
    leaves = list(leaf_names)
    while True:
        try:
            trace(model, leaves, leaf_classes)
            return report
        except TraceError as error:
            if not error.module_path or error.module_path in leaves:
                report.traceable = False
                report.modules.append(Untraceable(error.module_path, error.module_type, error.reason, error.source))
                return report
            report.modules.append(Untraceable(error.module_path, error.module_type, error.reason, error.source))
            leaves.append(error.module_path)


def trace_for_prepare(model: nn.Module, config: Any) -> fx.GraphModule:
    """The GraphModule prepare runs its passes on (``model`` is already a copy the caller owns)."""
    if isinstance(model, fx.GraphModule):
        return adopt_graph_module(model)
    _warn_unknown_names(model, config.non_traceable_module_names, "non_traceable_module_name")
    _warn_unknown_names(model, list(config.standalone_module_names), "standalone_module_name")
    names = (list(config.non_traceable_module_names) + list(config.standalone_module_names)
             + leaves_by_query(model, getattr(config, "non_traceable_module_mpaths", ())))
    classes = (tuple(config.non_traceable_module_classes) + tuple(config.standalone_module_classes)
               + registry.leaf_classes(config))
    if config.auto_leaf:
        report = find_untraceable(model, None, tuple(names), classes)
        names += report.leaves if report.traceable else []
    return trace(model, names, classes, config.tracer_class, config.tracer_options, lazy_code=True)


def leaves_by_query(model: nn.Module, queries: Any) -> list[str]:
    """The module paths the ``non_traceable_module_mpath`` queries select in ``model``'s module tree.

    A query that selects nothing warns (like a module name that names nothing): the leaf it meant is still traced.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
    >>> leaves_by_query(model, ["*/[cls:torch.nn.ReLU]", "[cls:torch.nn.Linear]"])
    ['1.0', '0']
    """
    from fxq.mpath import search

    names: dict[str, None] = {}  # ordered, without repeats
    for query in queries:
        found = search(query, model).names
        if not found:
            warnings.warn(f"fxq: prepare_custom_config['non_traceable_module_mpath'] query {query!r} selects no "
                          f"submodule of {type(model).__name__}; check it with fxq.mpath.search(query, model)",
                          stacklevel=4)
        names.update(dict.fromkeys(found))
    return list(names)


def adopt_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """Give every node of a GraphModule fxq did not trace a scope, without tracing it again, and record the
    classes of its traced-through modules (see ``fxq.graph.tracer.module_classes``) where ``nn_module_stack`` names them.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    >>> gm = adopt_graph_module(torch.fx.symbolic_trace(model))
    >>> fxq.mpath.search("[cls:torch.nn.Sequential]/*", gm).names
    ['_0_0']
    """
    modules = dict(gm.named_modules())
    _record_stack_classes(gm, modules)
    root = _root_scope(gm)
    for node in gm.graph.nodes:
        if SCOPE_KEY in node.meta:
            continue
        if node.op == "call_module" and node.target in modules:
            node.meta[SCOPE_KEY] = Scope(node.target, qualified_name(type(modules[node.target])))
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, module_type = list(stack.values())[-1]
            path = path if path in modules else _strip_prefix(path, modules)
            module_class = class_named(module_type)  # export names classes by string
            if path or module_class is not None:
                node.meta[SCOPE_KEY] = Scope(path, qualified_name(module_class or module_type))
            else:  # export's placeholder entries for nodes it made outside any module (sym_size)
                node.meta[SCOPE_KEY] = root
        else:
            node.meta[SCOPE_KEY] = root
    return gm


def _root_scope(gm: fx.GraphModule) -> Scope:
    """The root's scope: the class ``nn_module_stack`` names for path "" (an exported graph's root is a plain
    GraphModule; the user's model class is what queries and dumps should show), else the GraphModule's own."""
    for node in gm.graph.nodes:
        for path, module_type in (node.meta.get("nn_module_stack") or {}).values():
            found = class_named(module_type) if path == "" else None
            if found is not None:
                return Scope("", qualified_name(found))
    return Scope("", qualified_name(type(gm)))


def _record_stack_classes(gm: fx.GraphModule, modules: dict) -> None:
    """Fill the class record from the (path, class) entries of the nodes' ``nn_module_stack``: only for paths the
    graph holds as plain placeholders (what the record is for), keeping whatever was recorded before."""
    classes = dict(module_classes(gm) or {})
    for node in gm.graph.nodes:
        for path, module_type in (node.meta.get("nn_module_stack") or {}).values():
            path = path if path in modules else _strip_prefix(path, modules)
            if path and path not in classes and type(modules[path]) is nn.Module:
                classes[path] = class_named(module_type) or str(module_type)
    if classes:
        record_module_classes(gm, classes)


def _strip_prefix(path: str, modules: dict) -> str:
    """Dynamo-style paths ("L['self'].encoder.layer") -> the module path that exists ("encoder.layer")."""
    parts = path.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in modules:
            return candidate
    return ""


def _warn_unknown_names(model: nn.Module, names: list, key: str) -> None:
    existing = [name for name, _ in model.named_modules() if name]
    for name in names:
        if name not in existing:
            close = difflib.get_close_matches(name, existing, n=3) or existing[:3]
            warnings.warn(f"fxq: prepare_custom_config[{key!r}] names '{name}', which matches no submodule of "
                          f"{type(model).__name__}; closest existing names: {', '.join(close) or '(none)'}",
                          stacklevel=4)
