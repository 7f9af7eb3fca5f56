"""Building blocks for lowering rewrites: find the quantized inputs and output qparams around a reference op.

In the reference graph a quantized op reads ``dequantize(q)`` inputs and writes into one
``quantize_per_tensor(out, scale, zero_point, dtype)``. A rewrite reads those, builds the quantized op, and
only then touches the graph (it decides first, so a failed match leaves the graph as it was).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import fx, nn

from fxq.passes.context import attribute_value


@dataclass(frozen=True)
class OutputQParams:
    node: fx.Node  # the quantize_per_tensor node to replace
    scale: float
    zero_point: int
    dtype: torch.dtype
    scale_node: fx.Node  # get_attr nodes of the buffers holding them, for kernels that take them as arguments
    zero_point_node: fx.Node

    @property
    def qparam_nodes(self) -> tuple:
        return (self.scale_node, self.zero_point_node)


class Lowering:
    """What a lowering rewrite may use: the GraphModule, its modules, and graph helpers."""

    def __init__(self, gm: fx.GraphModule, modules: dict[str, nn.Module], state: Any = None):
        self.gm, self.modules, self.state = gm, modules, state
        self._names: dict[str, int] = {}

    def mode(self, node: fx.Node) -> Optional[str]:
        """The node's quantization mode (fxq.graph.modes), None when it stays float."""
        return self.state.modes.get(node.name) if self.state is not None else None

    def qconfig(self, node: fx.Node) -> Any:
        return self.state.qconfigs.get(node.name) if self.state is not None else None

    @staticmethod
    def quantized_source(arg: Any) -> Optional[fx.Node]:
        """``q`` if ``arg`` is ``dequantize(q)``, else None."""
        if isinstance(arg, fx.Node) and arg.op == "call_method" and arg.target == "dequantize":
            return arg.args[0]
        return None

    def quantized_sources(self, args: list) -> Optional[list]:
        sources = [self.quantized_source(a) for a in args]
        return None if any(s is None for s in sources) else sources

    def output(self, last: fx.Node) -> Optional[OutputQParams]:
        """The single ``quantize_per_tensor`` that ``last`` feeds, with its qparams (held in buffers)."""
        if len(last.users) != 1:
            return None
        (user,) = last.users
        if user.op != "call_function" or user.target is not torch.quantize_per_tensor:
            return None
        _, scale_node, zero_point_node, dtype = user.args
        scale, zero_point = self.attribute(scale_node), self.attribute(zero_point_node)
        if scale is None or zero_point is None:
            return None
        return OutputQParams(user, float(scale), int(zero_point), dtype, scale_node, zero_point_node)

    def attribute(self, node: Any) -> Optional[torch.Tensor]:
        """The tensor behind a ``get_attr`` node (None for anything else)."""
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return None
        return attribute_value(self.gm, node.target)

    def set_module(self, path: str, module: nn.Module) -> None:
        parent, _, name = path.rpartition(".")
        setattr(self.modules[parent] if parent else self.gm, name, module)
        self.modules[path] = module

    def add_module(self, prefix: str, module: nn.Module) -> str:
        index = self._names.get(prefix, 0)
        while hasattr(self.gm, f"{prefix}_{index}"):
            index += 1
        self._names[prefix] = index + 1
        name = f"{prefix}_{index}"
        self.gm.add_submodule(name, module)
        self.modules[name] = module
        return name

    @staticmethod
    def replace_output(out: OutputQParams, new: fx.Node) -> None:
        """Everything that read the quantize node now reads ``new`` (which already yields the quantized value)."""
        # the quantize node's scope and value, not its quantizer tags: ``new`` is an op, not a quantizer
        new.meta.update({k: v for k, v in out.node.meta.items() if k not in new.meta and not k.startswith("fxq_qtag")})
        out.node.replace_all_uses_with(new)

    def call_before(self, out: OutputQParams, op: str, target: Any, args: tuple, kwargs: dict = None) -> fx.Node:
        with self.gm.graph.inserting_before(out.node):
            return self.gm.graph.create_node(op, target, args, kwargs or {})
