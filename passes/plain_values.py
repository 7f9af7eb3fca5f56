"""Spell the lowered graph's values as plain tensors: no quantized tensor is made anywhere in forward.

Requires: the graph after lower (with the plain table), the boundary passes and cleanup. Guarantees:
- ``torch.quantize_per_tensor(x, s, z, dtype)`` -> ``fxq::quantize_per_tensor(x, s, z, qmin, qmax, dtype)``, a
  plain uint8 / int8 tensor; ``q.dequantize()`` of such a value -> ``fxq::dequantize_per_tensor(q, s, z)``;
- a weight's ``dequantize(quantize_per_channel(w, ...))`` -> float fake quantization of ``w`` (same numbers);
- at the custom-module boundary (and for ``output_quantized_idxs``) the uint8 value is wrapped as the quantized
  tensor those readers were written for, and a quantized tensor they return is unwrapped for plain kernels:
  the one documented place a quantized tensor remains.
Position: after cleanup (which already removed redundant dequantize/quantize pairs), before plain_fuse.

Before / after::

    q = quantize_per_tensor(x, s, z, quint8); y = self.fc(q); out = y.dequantize()
    q = fxq.quantize_per_tensor(x, s, z, 0, 255, uint8); y = self.fc(q); out = fxq.dequantize_per_tensor(y, s2, z2)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import fx, nn

from fxq.nn import plain
from fxq.nn.plain.boundary import from_quantized_tensor, to_quantized_tensor
from fxq.passes.context import PassContext, attribute_value, modules_of, register_new_buffer
from fxq.patterns.plain_lowering import PLAIN_QPARAMS

_PLAIN_DTYPE = {torch.quint8: (torch.uint8, 0, 255), torch.qint8: (torch.int8, -128, 127)}
_SHAPE_READS = ("size", "dim", "numel")


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if ctx.lowering != "plain":
        return gm
    values = _Values(gm)
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if _is_call(node, torch.quantize_per_tensor) and node.args[3] in _PLAIN_DTYPE:
            values.quantize(node)
            ctx.count("plain quantize nodes")
        elif node.op == "call_method" and node.target == "dequantize" and _is_call(node.args[0],
                                                                                   torch.quantize_per_channel):
            values.fake_quantize_weight(node)
        elif node.op == "call_method" and node.target == "dequantize" and values.qparams(node.args[0]) is not None:
            values.dequantize(node)
        elif node.op == "call_module" and plain.reads_uint8(modules[node.target]):
            values.unwrap_quantized_inputs(node, modules[node.target])
    for node in list(gm.graph.nodes):
        values.wrap_for_quantized_readers(node, modules)
    return gm


def _is_call(node, target) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is target


class _Values:
    """The uint8 values of the graph and the scale / zero-point buffers that describe them."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.attrs: dict = {}  # fx.Node yielding a plain value -> (scale get_attr, zero-point get_attr)
        self.created: set = set()  # nodes this pass made, which read plain values on purpose

    def qparams(self, node) -> Optional[tuple]:
        """(scale, zero point) get_attr nodes of a plain value, None for anything else."""
        if not isinstance(node, fx.Node):
            return None
        if node not in self.attrs and PLAIN_QPARAMS in node.meta:
            scale, zero_point = node.meta[PLAIN_QPARAMS]
            self.attrs[node] = self._constants(node, scale, zero_point)
        return self.attrs.get(node)

    def _constants(self, node: fx.Node, scale: float, zero_point: int) -> tuple:
        names = (register_new_buffer(self.gm, f"{node.name}_scale", torch.tensor(scale)),
                 register_new_buffer(self.gm, f"{node.name}_zero_point", torch.tensor(zero_point)))
        with self.gm.graph.inserting_after(node):
            return tuple(self.gm.graph.get_attr(name) for name in names)

    def quantize(self, node: fx.Node) -> None:
        x, scale, zero_point, dtype = node.args
        plain_dtype, low, high = _PLAIN_DTYPE[dtype]
        scale, zero_point = (self._as_attr(node, v, kind) for v, kind in ((scale, "scale"), (zero_point, "zero_point")))
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_function(plain.ops.QUANTIZE,
                                              (x, scale, zero_point, low, high, plain_dtype))
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        self.attrs[new] = (scale, zero_point)

    def _as_attr(self, node: fx.Node, value, kind: str) -> fx.Node:
        """A qparam as a get_attr node (the op takes 0-dim tensors): passed through, or a new buffer."""
        if isinstance(value, fx.Node):
            return value
        name = register_new_buffer(self.gm, f"{node.name}_{kind}", torch.tensor(value))
        with self.gm.graph.inserting_before(node):
            return self.gm.graph.get_attr(name)

    def _own_copies(self, attrs: tuple, before: fx.Node) -> tuple:
        """get_attr nodes of the same buffers for one reader: torch.load rebuilds the graph with one get_attr per
        use, and node metadata is restored only onto a graph of the same nodes (fxq.graph.node_meta)."""
        with self.gm.graph.inserting_before(before):
            return tuple(self.gm.graph.get_attr(attr.target) for attr in attrs)

    def dequantize(self, node: fx.Node) -> None:
        source = node.args[0]
        scale, zero_point = self._own_copies(self.qparams(source), node)
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_function(plain.ops.DEQUANTIZE, (source, scale, zero_point))
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        self.created.add(new)

    def fake_quantize_weight(self, node: fx.Node) -> None:
        """dequantize(quantize_per_channel(w, scale, zero_point, axis, qint8)) of a weight the lowering left
        float: the same numbers by fake quantization, which makes no quantized tensor."""
        weight, scale, zero_point, axis, dtype = node.args[0].args
        _, low, high = _PLAIN_DTYPE[dtype]
        scale_t, zero_point_t = attribute_value(self.gm, scale.target), attribute_value(self.gm, zero_point.target)
        name = register_new_buffer(self.gm, f"{node.name}_zero_point_int", zero_point_t.to(torch.int32))
        scale_name = register_new_buffer(self.gm, f"{node.name}_scale_float", scale_t.float())
        with self.gm.graph.inserting_before(node):
            args = (weight, self.gm.graph.get_attr(scale_name), self.gm.graph.get_attr(name), axis, low, high)
            new = self.gm.graph.call_function(torch.fake_quantize_per_channel_affine, args)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)

    def unwrap_quantized_inputs(self, node: fx.Node, module: nn.Module) -> None:
        """A plain kernel reading a quantized tensor (a custom module's output, a quantized model input) reads
        its integers in the kernel's input scale and zero point."""
        source = node.args[0]
        if not isinstance(source, fx.Node) or self.qparams(source) is not None:
            return
        names = (register_new_buffer(self.gm, f"{node.name}_input_scale", torch.tensor(module.input_scale)),
                 register_new_buffer(self.gm, f"{node.name}_input_zero_point", torch.tensor(module.input_zero_point)))
        with self.gm.graph.inserting_before(node):
            qparams = tuple(self.gm.graph.get_attr(name) for name in names)
            integers = self.gm.graph.call_function(from_quantized_tensor, (source, *qparams))
        node.replace_input_with(source, integers)

    def wrap_for_quantized_readers(self, node: fx.Node, modules: dict) -> None:
        """Readers of a plain value that do not take one (custom modules, quantized outputs) get the quantized
        tensor they were written for."""
        attrs = self.qparams(node)
        if attrs is None:
            return
        for user in list(node.users):
            if user in self.created or _takes_plain(user, modules) or user.op == "get_attr":
                continue
            with self.gm.graph.inserting_before(user):
                wrapped = self.gm.graph.call_function(to_quantized_tensor, (node, *self._own_copies(attrs, user)))
            user.replace_input_with(node, wrapped)


def _takes_plain(user: fx.Node, modules: dict) -> bool:
    if PLAIN_QPARAMS in user.meta:  # in-domain ops and kernels of the plain table
        return True
    if user.op == "call_module" and plain.reads_uint8(modules[user.target]):
        return True
    if user.op == "call_method" and user.target in _SHAPE_READS:
        return True
    return user.op == "call_function" and user.target is getattr
