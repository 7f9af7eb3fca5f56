"""Symbolic tracing with fxq's leaf rules, recording each node's module scope.

Every node gets ``node.meta["fxq_scope"] = Scope(path, type_name)``: the qualified name and class of the module
whose forward produced it. For a ``call_module`` node that is the called module itself; for function, method and
attribute nodes it is the innermost module being traced when the node was created (``""`` and the root class at
the top level). Passes and mpath queries select nodes by that scope.

Example::

    >>> import torch, fxq
    >>> gm = fxq.tracer.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    >>> [scope_of(n).path for n in gm.graph.nodes]
    ['', '0', '1', '']
"""
from __future__ import annotations

import linecache
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch import fx, nn

SCOPE_KEY = "fxq_scope"


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
    """

    def __init__(self, leaf_names: Iterable[str] = (), leaf_classes: Iterable[type] = (), **options: Any):
        super().__init__(**options)  # options: torch.fx.Tracer's (autowrap_functions, param_shapes_constant, ...)
        self.leaf_names = frozenset(leaf_names)
        self.leaf_classes = tuple(leaf_classes)
        self._scopes: list[Scope] = []
        self._failed_scope: Optional[Scope] = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_classes):
            return True
        # a user tracer class mixed in (see trace()) keeps its own leaf rules
        return _is_builtin_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        path = self.path_of_module(m)
        self._scopes.append(Scope(path, qualified_name(type(m))))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # remember the innermost module that failed: the stack unwinds before trace() sees the error
            self._failed_scope = self._failed_scope or self._scopes[-1]
            raise
        finally:
            self._scopes.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta[SCOPE_KEY] = self._scopes[-1] if self._scopes else self._root_scope
        return node

    def trace(self, root: nn.Module, concrete_args: Optional[dict] = None) -> fx.Graph:
        self._root_scope = Scope("", qualified_name(type(root)))
        self._scopes, self._failed_scope = [], None
        try:
            return super().trace(root, concrete_args)
        except TraceError:
            raise
        except Exception as error:  # any failure inside user code while tracing
            scope = self._failed_scope or self._root_scope
            raise TraceError(scope.path, scope.type_name, _user_source_line(error), _reason(error)) from error


def trace(model: nn.Module, leaf_names: Iterable[str] = (), leaf_classes: Iterable[type] = (),
          tracer_class: Optional[type] = None, tracer_options: Optional[dict] = None) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule with scopes recorded; raises :class:`TraceError` when it cannot.

    ``tracer_class``: a ``torch.fx.Tracer`` subclass of the user's (HF's, or one with its own leaf rules); fxq's
    scope recording is mixed into it. ``tracer_options``: its constructor's keyword arguments, plus
    ``concrete_args`` for ``trace()``.
    """
    options = dict(tracer_options or {})
    concrete_args = options.pop("concrete_args", None)
    cls = Tracer
    if tracer_class is not None and not issubclass(Tracer, tracer_class):
        cls = type(f"Fxq{tracer_class.__name__}", (Tracer, tracer_class), {})
    tracer = cls(leaf_names, leaf_classes, **options)
    graph = tracer.trace(model, concrete_args=concrete_args)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _user_source_line(error: BaseException) -> str:
    """The innermost frame of the traceback that is not torch's own code, as 'file:line: code'."""
    torch_root = torch.__file__.rsplit("/", 1)[0]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(torch_root)]
    frames = [f for f in frames if not f.filename.endswith("fxq/tracer.py")]
    if not frames:
        return "<unknown source line>"
    frame = frames[-1]
    code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f"{frame.filename}:{frame.lineno}: {code}"


__all__ = ["Scope", "SCOPE_KEY", "Tracer", "TraceError", "is_user_leaf", "qualified_name", "scope_of", "trace"]
