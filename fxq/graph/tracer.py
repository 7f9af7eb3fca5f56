"""Symbolic tracing with fxq's leaf rules, recording each node's module scope.

Every node gets ``node.meta["fxq_scope"] = Scope(path, type_name)``: the qualified name and class of the module
whose forward produced it. For a ``call_module`` node that is the called module itself; for function, method and
attribute nodes it is the innermost module being traced when the node was created (``""`` and the root class at
the top level). Passes and mpath queries select nodes by that scope.

The GraphModule keeps only the modules its graph calls; every module traced through (a Sequential, a user block)
and every container on the way to a called module (a ModuleList) is left as a plain ``nn.Module``. Their classes
are recorded as a :class:`ModuleClasses` on the GraphModule (:func:`module_classes`), so mpath's ``[cls:...]`` can
still test those scopes. The record survives ``copy.deepcopy`` and ``torch.save`` (see :func:`record_module_classes`).
Node scopes do not survive ``torch.save``: torch.load re-traces the saved code and drops node meta, so function
nodes of a loaded model fall to the root scope; module calls keep their paths (their targets) and, through the
record, the classes of the scopes around them.

Example::

    >>> import torch, fxq
    >>> gm = fxq.graph.tracer.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    >>> [scope_of(n).path for n in gm.graph.nodes]
    ['', '0', '1', '']
"""
from __future__ import annotations

import linecache
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import fx, nn

from fxq.graph.lazy_code import graph_module

SCOPE_KEY = "fxq_scope"
MODULE_CLASSES_ATTRIBUTE = "_fxq_module_classes"
_PRESERVED_ON_DEEPCOPY = "_user_preserved_attributes"  # torch.fx.graph_module's key in GraphModule.meta


@dataclass(frozen=True)
class Scope:
    """Where a node came from: the module path (``"encoder.layers.3.attn"``) and that module's class name."""

    path: str
    type_name: str


def scope_of(node: fx.Node) -> Scope:
    """The scope recorded by the tracer, or the root scope for nodes that passes created without one."""
    return node.meta.get(SCOPE_KEY) or Scope("", "")


def qualified_name(obj: Any) -> str:
    """``torch.nn.modules.linear.Linear`` -> ``torch.nn.Linear`` where the short public path resolves to it."""
    module = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    if module.startswith("torch.nn.modules") and getattr(nn, name, None) is obj:
        return f"torch.nn.{name}"
    return f"{module}.{name}" if module else name


class ModuleClasses(dict):
    """Module path -> class of the modules a GraphModule holds only as plain ``nn.Module`` placeholders.

    A value is the class itself, or its qualified name (``str``) after ``torch.save`` when the class cannot be
    pickled by reference (defined inside a function): pickling the record must never make saving a model fail.

    >>> import torch
    >>> gm = trace(torch.nn.Sequential(torch.nn.Sequential(torch.nn.ReLU())))
    >>> module_classes(gm)
    {'0': <class 'torch.nn.modules.container.Sequential'>}
    """

    def __reduce__(self) -> tuple:
        return ModuleClasses, ({path: _picklable(cls) for path, cls in self.items()},)

    def __deepcopy__(self, memo: dict) -> "ModuleClasses":
        return ModuleClasses(self)  # classes are shared, as deepcopy shares them anywhere else


def _picklable(cls: Union[type, str]) -> Union[type, str]:
    """``cls`` when pickle can store it by reference (importable under its own name), else its qualified name."""
    if isinstance(cls, str):
        return cls
    found: Any = sys.modules.get(getattr(cls, "__module__", "") or "")
    for attribute in getattr(cls, "__qualname__", "<locals>").split("."):
        found = getattr(found, attribute, None)
    return cls if found is cls else qualified_name(cls)


def record_module_classes(gm: fx.GraphModule, classes: dict) -> None:
    """Keep ``classes`` (path -> class) on ``gm``: as a plain attribute, which ``torch.save`` pickles with the
    module, and listed in ``gm.meta``'s preserved attributes, which GraphModule's ``__deepcopy__`` restores."""
    record = classes if isinstance(classes, ModuleClasses) else ModuleClasses(classes)
    setattr(gm, MODULE_CLASSES_ATTRIBUTE, record)
    meta = getattr(gm, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault(_PRESERVED_ON_DEEPCOPY, {})[MODULE_CLASSES_ATTRIBUTE] = record


def preserve_attributes(gm: fx.GraphModule, source: nn.Module, names: Any) -> None:
    """Copy the attributes ``names`` that ``source`` has onto ``gm`` (``preserved_attributes`` of the custom
    configs), listed in ``gm.meta`` so that ``copy.deepcopy`` of ``gm`` keeps them too."""
    meta = getattr(gm, "meta", None)
    for name in names:
        if hasattr(source, name):
            setattr(gm, name, getattr(source, name))
            if isinstance(meta, dict):
                meta.setdefault(_PRESERVED_ON_DEEPCOPY, {})[name] = getattr(source, name)


def module_classes(gm: nn.Module) -> Optional[ModuleClasses]:
    """The recorded classes of ``gm``'s traced-through modules, or None for a module without a record.

    ``torch.load`` restores the attribute but not ``gm.meta`` (torch.fx rebuilds the module), so a plain
    ``copy.deepcopy`` of a loaded model drops the record; ``fxq.graph.module_copy.copy_module`` (prepare and convert) keeps it.
    """
    record = getattr(gm, MODULE_CLASSES_ATTRIBUTE, None)
    return record if isinstance(record, ModuleClasses) else None


class TraceError(RuntimeError):
    """A model (or one of its submodules) cannot be symbolically traced.

    Attributes: ``module_path``, ``module_type``, ``source`` ("file:line: code") and ``reason``.
    """

    def __init__(self, module_path: str, module_type: str, source: str, reason: str):
        self.module_path, self.module_type, self.source, self.reason = module_path, module_type, source, reason
        where = f"module '{module_path}' ({module_type})" if module_path else f"the root module ({module_type})"
        name_hint = (
            f"prepare_custom_config={{'non_traceable_module_name': ['{module_path}']}}"
            if module_path
            else "tracing only the traceable submodules (see the README section on non-traceable code)"
        )
        super().__init__(
            f"cannot trace {where} at {source}: {reason}\n"
            f"  fix: treat it as a leaf with {name_hint}, or with "
            f"prepare_custom_config={{'non_traceable_module_class': [{module_type}]}}"
        )


# Module classes users taught fxq as ops (fxq.patterns.register_op): they are quantized whole, so never traced into.
REGISTERED_LEAF_CLASSES: set = set()


def _is_builtin_leaf(module: nn.Module) -> bool:
    """torch.nn's own layers are leaves; its containers (Sequential, ModuleList, ModuleDict) are traced through."""
    owner = type(module).__module__
    builtin = owner.startswith("torch.nn") and not owner.startswith("torch.nn.modules.container")
    return builtin or owner.startswith("fxq.") or type(module) in REGISTERED_LEAF_CLASSES


def is_user_leaf(module: nn.Module) -> bool:
    """A module the graph calls but that is not one of torch.nn's or fxq's: a non-traceable or custom module."""
    return not _is_builtin_leaf(module) and not isinstance(module, fx.GraphModule)


class Tracer(fx.Tracer):
    """torch.fx tracer that keeps leaves as leaves and stamps every node with its module scope.

    ``leaf_names``: module paths never traced through; ``leaf_classes``: classes never traced through.
    ``module_classes``: after ``trace``, path -> class of every module traced through and of every container
    on the path to a called module (the modules the GraphModule will hold only as placeholders).
    """

    def __init__(self, leaf_names: Iterable[str] = (), leaf_classes: Iterable[type] = (), **options: Any):
        super().__init__(**options)  # options: torch.fx.Tracer's (autowrap_functions, param_shapes_constant, ...)
        self.leaf_names = frozenset(leaf_names)
        self.leaf_classes = tuple(leaf_classes)
        self._scopes: list[Scope] = []
        self._failed_scope: Optional[Scope] = None
        self.module_classes: dict[str, type] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_classes):
            return True
        # a user tracer class mixed in (see trace()) keeps its own leaf rules
        return _is_builtin_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        path = self.path_of_module(m)
        self._scopes.append(Scope(path, qualified_name(type(m))))
        self._record_containers(path)

        def entered(*inner_args: Any, **inner_kwargs: Any) -> Any:  # called only when m is traced through
            self.module_classes.setdefault(path, type(m))
            return forward(*inner_args, **inner_kwargs)

        try:
            return super().call_module(m, entered, args, kwargs)
        except Exception:
            # remember the innermost module that failed: the stack unwinds before trace() sees the error
            self._failed_scope = self._failed_scope or self._scopes[-1]
            raise
        finally:
            self._scopes.pop()

    def _record_containers(self, path: str) -> None:
        """The modules above ``path`` are scopes of its nodes, even those never called (a ModuleList iterated by
        its parent's forward)."""
        parent = path.rpartition(".")[0]
        if not parent or parent in self.module_classes:
            return  # recorded with all of its own parents
        module, prefix = self.root, ""
        for name in parent.split("."):
            module = getattr(module, name, None)
            if module is None:  # a path a mixed-in tracer made up: nothing to record
                return
            prefix = f"{prefix}.{name}" if prefix else name
            self.module_classes.setdefault(prefix, type(module))

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta[SCOPE_KEY] = self._scopes[-1] if self._scopes else self._root_scope
        return node

    def trace(self, root: nn.Module, concrete_args: Optional[dict] = None) -> fx.Graph:
        self._root_scope = Scope("", qualified_name(type(root)))
        self._scopes, self._failed_scope = [], None
        # tracing a GraphModule again: its placeholders say nothing, the classes recorded by the first trace do
        self.module_classes = dict(module_classes(root) or {})
        try:
            return super().trace(root, concrete_args)
        except TraceError:
            raise
        except Exception as error:  # any failure inside user code while tracing
            scope = self._failed_scope or self._root_scope
            raise TraceError(scope.path, scope.type_name, _user_source_line(error), _reason(error)) from error


def trace(model: nn.Module, leaf_names: Iterable[str] = (), leaf_classes: Iterable[type] = (),
          tracer_class: Optional[type] = None, tracer_options: Optional[dict] = None,
          lazy_code: bool = False) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule with scopes recorded; raises :class:`TraceError` when it cannot.

    ``tracer_class``: a ``torch.fx.Tracer`` subclass of the user's (HF's, or one with its own leaf rules); fxq's
    scope recording is mixed into it. ``tracer_options``: its constructor's keyword arguments, plus
    ``concrete_args`` for ``trace()``. ``lazy_code``: defer generating the module's Python code until it is
    used (prepare regenerates it after its passes; ``fxq.graph.lazy_code.make_eager`` does that).
    """
    options = dict(tracer_options or {})
    concrete_args = options.pop("concrete_args", None)
    cls = Tracer
    if tracer_class is not None and not issubclass(Tracer, tracer_class):
        cls = type(f"Fxq{tracer_class.__name__}", (Tracer, tracer_class), {})
    tracer = cls(leaf_names, leaf_classes, **options)
    graph = tracer.trace(model, concrete_args=concrete_args)
    gm = graph_module(tracer.root, graph, type(model).__name__, lazy=lazy_code)
    record_module_classes(gm, tracer.module_classes)
    return gm


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _user_source_line(error: BaseException) -> str:
    """The innermost frame of the traceback that is not torch's own code, as 'file:line: code'."""
    torch_root = torch.__file__.rsplit("/", 1)[0]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(torch_root)]
    frames = [f for f in frames if not f.filename.endswith("fxq/graph/tracer.py")]
    if not frames:
        return "<unknown source line>"
    frame = frames[-1]
    code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f"{frame.filename}:{frame.lineno}: {code}"


__all__ = ["ModuleClasses", "Scope", "SCOPE_KEY", "Tracer", "TraceError", "is_user_leaf", "module_classes",
           "qualified_name", "record_module_classes", "scope_of", "trace"]
