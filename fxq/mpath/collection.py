"""Search results: NodeCollection (graph nodes or modules) and QuantizerCollection (observer nodes).

Order is deterministic: graph order for a GraphModule (the order of ``gm.graph.nodes``), ``named_modules()``
order for a module tree. Set operations ``| & -`` keep that order. ``users()`` / ``producers()`` step along the
data flow, optionally through observers (and quantize/dequantize) and shape-only ops.

>>> import torch, fxq
>>> gm = fxq.graph.tracer.trace(torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 4)))
>>> fxq.mpath.search("[cls:torch.nn.LayerNorm]", gm).users().filter("[cls:torch.nn.Linear]")
NodeCollection([<0: 1: Linear>])
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Union

import torch
from torch import fx, nn

from fxq.mpath.index import QTAG_KEY, GraphIndex
from fxq.mpath.program import compile_query

__all__ = ["Match", "NodeCollection", "QuantizerCollection"]

_SHAPE_METHODS = frozenset(("view", "reshape", "permute", "transpose", "flatten", "squeeze", "unsqueeze",
                            "contiguous", "expand", "size"))
_SHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze)
_QUANTIZE_FUNCTIONS = (torch.quantize_per_tensor, torch.quantize_per_channel)


class Match:
    """One result: ``name`` (node name, or module path for a module tree), ``node`` (None for modules),
    ``module`` (looked up when read, so it reflects ``initialize``), ``path`` (dotted, for display)."""

    __slots__ = ("name", "node", "root")

    def __init__(self, name: str, node: Optional[fx.Node], root: nn.Module):
        self.name, self.node, self.root = name, node, root

    @property
    def module(self) -> Optional[nn.Module]:
        if self.node is None:
            return self.root.get_submodule(self.name)
        return self.root.get_submodule(self.node.target) if self.node.op == "call_module" else None

    @property
    def path(self) -> str:
        if self.node is None or self.node.op == "call_module":
            return self.name if self.node is None else self.node.target
        scope = self.node.meta.get("fxq_scope")
        return f"{scope.path}.{self.node.name}" if scope is not None and scope.path else self.node.name

    @property
    def kind(self) -> str:
        module = self.module
        if module is not None:
            return type(module).__name__
        target = self.node.target
        return target if isinstance(target, str) else getattr(target, "__name__", str(target))

    def __repr__(self) -> str:
        return f"<{self.path}: {self.kind}>"


class NodeCollection:
    """Matched nodes (or modules) of one searched model, in graph order."""

    def __init__(self, index: Any, found: list):
        self.index = index
        self._items = found  # nodes (module paths for a module tree) in graph order; Match objects built on demand
        self._match_objects: Optional[tuple] = None

    @property
    def _matches(self) -> tuple:
        if self._match_objects is None:
            self._match_objects = tuple(self._wrap(item) for item in self._items)
        return self._match_objects

    def _wrap(self, item: Any) -> Match:
        if isinstance(item, fx.Node):
            return Match(item.name, item, self.index.root)
        return Match(item, None, self.index.root)

    def _new(self, found: list) -> "NodeCollection":
        return type(self)(self.index, found)

    # ---- sequence ----
    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Match]:
        return iter(self._matches)

    def __getitem__(self, item: Union[int, slice]) -> Any:
        if isinstance(item, slice):
            return self._new(self._items[item])
        return self._matches[item]

    def __contains__(self, item: Any) -> bool:
        return any(item in (m.name, m.node) or (m.node is None and item is m.module) for m in self._matches)

    @property
    def names(self) -> list[str]:
        return [item.name if isinstance(item, fx.Node) else item for item in self._items]

    @property
    def nodes(self) -> list[fx.Node]:
        return [item for item in self._items if isinstance(item, fx.Node)]

    @property
    def modules(self) -> list[Optional[nn.Module]]:
        return [m.module for m in self._matches]

    def __repr__(self) -> str:
        inner = ", ".join(f"<{i}: {m.path}: {m.kind}>" for i, m in enumerate(self._matches))
        return f"{type(self).__name__}([{inner}])"

    # ---- set operations (graph order kept) ----
    def _combine(self, other: "NodeCollection", keep) -> "NodeCollection":
        if not isinstance(other, NodeCollection):
            return NotImplemented
        if other.index.root is not self.index.root:
            raise ValueError("set operations need two collections searched in the same model")
        mine, theirs = set(self._items), set(other._items)
        kept = [item for item in mine | theirs if keep(item in mine, item in theirs)]
        return self._new(sorted(kept, key=self.index.positions.__getitem__))

    def __or__(self, other):
        return self._combine(other, lambda a, b: a or b)

    def __and__(self, other):
        return self._combine(other, lambda a, b: a and b)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a and not b)

    # ---- refinement and data flow ----
    def filter(self, query: str) -> "NodeCollection":
        """Keep the matches whose path ends with ``query`` (a leading ``/`` anchors it at the root instead)."""
        program = compile_query(query, anywhere=True)
        return self._new(self.index.match(program, only=self._items))

    def users(self, observers: bool = False, shape_ops: bool = False) -> "NodeCollection":
        """The nodes that consume the matched nodes; with ``observers``/``shape_ops`` step through those."""
        return self._flow(lambda node: list(node.users), observers, shape_ops)

    def producers(self, observers: bool = False, shape_ops: bool = False) -> "NodeCollection":
        """The nodes the matched nodes read; with ``observers``/``shape_ops`` step back through those."""
        return self._flow(lambda node: list(node.all_input_nodes), observers, shape_ops)

    def _flow(self, step, observers: bool, shape_ops: bool) -> "NodeCollection":
        if not isinstance(self.index, GraphIndex):
            raise TypeError("users()/producers() follow a graph's data flow: search a GraphModule "
                            "(fxq.graph.tracer.trace(model) or a prepared/converted model), not a plain module tree")
        seen, result, frontier = set(), set(), self.nodes
        while frontier:
            for node in step(frontier.pop()):
                if node in seen:
                    continue
                seen.add(node)
                through = (observers and _is_observer(node)) or (shape_ops and _is_shape_op(node))
                (frontier.append if through else result.add)(node)
        return self._new(sorted(result, key=self.index.positions.__getitem__))


class QuantizerCollection(NodeCollection):
    """Observer nodes (``fxq.find_quantizers``); ``initialize`` swaps in new observers at those points."""

    def initialize(self, observer: Any, shared: bool = False, **kwargs: Any) -> "QuantizerCollection":
        """Replace the observer module of every match by ``observer(**kwargs)``.

        Each observer module gets its own new instance (nodes that already shared one module, such as the
        input and output of a max pool, keep sharing); ``shared=True`` uses one instance for all. Returns self.

        >>> # fxq.find_quantizers(prepared, "**/[qtag:activation/output]").initialize(
        >>> #     fxq.observers.HistogramObserver, dtype=torch.quint8)
        """
        gm, replaced, one = self.index.root, {}, observer(**kwargs) if shared else None
        for match in self._matches:
            target = match.node.target
            if target not in replaced:
                replaced[target] = one if shared else observer(**kwargs)
                _set_submodule(gm, target, replaced[target])
                self.index.modules[target] = replaced[target]
        return self


    # ---- QAT switches (fake-quant modules only; plain observers have nothing to switch) ----
    def _switch(self, method: str) -> "QuantizerCollection":
        for module in {id(m): m for m in self.modules if hasattr(m, "fake_quant_enabled")}.values():
            getattr(module, method)()
        return self

    def enable_fake_quant(self) -> "QuantizerCollection":
        """Fake-quantize again at every matched quantizer. Returns self."""
        return self._switch("enable_fake_quant")

    def disable_fake_quant(self) -> "QuantizerCollection":
        """Let values through unquantized at every matched quantizer (statistics still update). Returns self."""
        return self._switch("disable_fake_quant")

    def enable_observer(self) -> "QuantizerCollection":
        """Update statistics and qparams again at every matched quantizer. Returns self."""
        return self._switch("enable_observer")

    def disable_observer(self) -> "QuantizerCollection":
        """Freeze the qparams of every matched quantizer. Returns self.

        >>> # fxq.find_quantizers(prepared, "**/[qtag:activation/output]").disable_observer()
        """
        return self._switch("disable_observer")


def _set_submodule(gm: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _is_observer(node: fx.Node) -> bool:
    if QTAG_KEY in node.meta:
        return True
    if node.op == "call_method":
        return node.target == "dequantize"
    return node.op == "call_function" and node.target in _QUANTIZE_FUNCTIONS


def _is_shape_op(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return node.op == "call_function" and node.target in _SHAPE_FUNCTIONS
