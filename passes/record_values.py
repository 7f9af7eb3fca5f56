"""Run the traced float model once on the example inputs and record what each node produces.

Requires: a freshly traced GraphModule and ``ctx.example_inputs``.
Guarantees: ``node.meta["fxq_value"]`` is a :class:`Value` (tensor dtype and shape, or the Python type; for a
tuple or list also its items) for every node; example inputs that do not fit the model raise a ValueError naming
the node that failed.
Position: first in prepare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import fx

from fxq.passes.context import PassContext
from fxq.tracer import scope_of

VALUE_KEY = "fxq_value"


@dataclass(frozen=True)
class Value:
    """What a node produced on the example inputs."""

    type_name: str
    dtype: Optional[torch.dtype] = None
    shape: Optional[tuple] = None
    items: Optional[tuple] = None  # the Values inside a tuple / list (a custom module's (output, (h, c)))

    @property
    def is_float_tensor(self) -> bool:
        return self.dtype is not None and self.dtype.is_floating_point


def value_of(node: fx.Node) -> Value:
    return node.meta.get(VALUE_KEY) or Value("unknown")


def is_float_tensor(arg: Any) -> bool:
    return isinstance(arg, fx.Node) and value_of(arg).is_float_tensor


class _Recorder(fx.Interpreter):
    failed_node: Optional[fx.Node] = None

    def run_node(self, node: fx.Node) -> Any:
        self.failed_node = node
        result = super().run_node(node)
        node.meta[VALUE_KEY] = _describe(result)
        return result


def _misfit(node: fx.Node, error: Exception) -> ValueError:
    scope = scope_of(node)
    reason = str(error).split("\n\nWhile executing")[0]  # drop the interpreter's own note
    return ValueError(
        f"example_inputs do not fit the model: node '{node.name}' ({node.op} {_target(node)}) in module "
        f"'{scope.path or '<root>'}' raised {type(error).__name__}: {reason}. Pass example_inputs as a "
        f"tuple of tensors that the model's forward accepts, e.g. (torch.randn(1, 3, 224, 224),)")


def _target(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _describe(result: Any) -> Value:
    if isinstance(result, torch.Tensor):
        return Value("Tensor", result.dtype, tuple(result.shape))
    if isinstance(result, (tuple, list)):
        return Value(type(result).__name__, items=tuple(_describe(item) for item in result))
    return Value(type(result).__name__)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    inputs = tuple(ctx.example_inputs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n for n in placeholders if not n.args]  # a placeholder with args has a default value
    if not len(required) <= len(inputs) <= len(placeholders):
        names = ", ".join(n.target for n in placeholders)
        raise ValueError(f"example_inputs has {len(inputs)} item(s) but the model's forward takes "
                         f"({names}); pass one example per argument, as a tuple")
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as error:
        raise _misfit(recorder.failed_node, error) from error
    ctx.count("nodes recorded", len(gm.graph.nodes))
    return gm
