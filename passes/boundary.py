"""Helpers for the passes that quantize at a boundary fxq does not trace into: custom modules, standalone
modules, and the model's own inputs and outputs (``input_quantized_idxs`` / ``output_quantized_idxs``).

Prepare side: make sure a value is read through an observer (reusing one already there). Convert side, on the
lowered graph: hand a leaf ``q`` instead of ``dequantize(q)``, and let a leaf's quantized output replace the
``quantize_per_tensor`` that followed it (or, when no quantize follows, be dequantized for its readers).
Not a pass: passes import it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from fxq.observers import ObserverBase
from fxq.passes.leaf_values import map_flat_args
from fxq.passes.record_values import is_float_tensor

OBSERVER_PREFIX = "activation_post_process_"
QTAG_KEY = "fxq_qtag"


def is_observer(node: Any, modules: dict) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and isinstance(modules.get(node.target), ObserverBase))


def add_observer(gm: fx.GraphModule, modules: dict, value: fx.Node, constructor: Any, tag: str) -> fx.Node:
    """A new observer module called on ``value`` right after it (nothing reads it yet)."""
    index = len(modules)
    while f"{OBSERVER_PREFIX}{index}" in modules:
        index += 1
    name = f"{OBSERVER_PREFIX}{index}"
    gm.add_submodule(name, constructor())
    modules[name] = gm.get_submodule(name)
    with gm.graph.inserting_after(value):
        node = gm.graph.call_module(name, (value,))
    node.meta.update({k: v for k, v in value.meta.items() if k in ("fxq_scope", "fxq_value")})
    node.meta[QTAG_KEY] = tag
    return node


def observe_input(gm: fx.GraphModule, modules: dict, user: fx.Node, value: Any, constructor: Any) -> bool:
    """Make ``user`` read the float tensor ``value`` through an observer; False when it is not a float tensor."""
    observer = observed_value(gm, modules, value, constructor, avoid=user)
    if observer is not None and observer is not value:
        user.replace_input_with(value, observer)
    return observer is not None


def observed_value(gm: fx.GraphModule, modules: dict, value: Any, constructor: Any,
                   avoid: Optional[fx.Node] = None) -> Optional[fx.Node]:
    """The observer node to read the float tensor ``value`` through (one already on it is reused; ``value``
    itself when it is an observer); None when ``value`` is not a float tensor. Rewires no reader."""
    if is_observer(value, modules):
        return value
    if not is_float_tensor(value):
        return None
    existing = next((u for u in value.users if is_observer(u, modules) and u is not avoid), None)
    return existing or add_observer(gm, modules, value, constructor, "activation/input")


def observe_output(gm: fx.GraphModule, modules: dict, node: fx.Node, constructor: Any) -> Optional[fx.Node]:
    """Every reader of ``node`` reads it through one observer (an existing one is reused and re-tagged); returns
    that observer, None when ``node`` is not a float tensor."""
    if not is_float_tensor(node):
        return None
    observer = next((u for u in node.users if is_observer(u, modules)), None)
    observer = observer or add_observer(gm, modules, node, constructor, "activation/output")
    observer.meta[QTAG_KEY] = "activation/output"
    node.replace_all_uses_with(observer, delete_user_cb=lambda user: user is not observer)
    return observer


def quantized_source(arg: Any) -> Optional[fx.Node]:
    """``q`` for ``dequantize(q)``, else None."""
    if isinstance(arg, fx.Node) and arg.op == "call_method" and arg.target == "dequantize":
        return arg.args[0]
    return None


def feed_quantized(node: fx.Node, positions: set, what: str) -> None:
    """Arguments at ``positions`` become the quantized tensors behind their ``dequantize``."""
    for position, arg in enumerate(node.args):
        if position in positions:
            node.replace_input_with(arg, _quantized_arg(node, position, arg, what))


def feed_quantized_leaves(node: fx.Node, positions: set, what: str) -> None:
    """Like feed_quantized, with positions counted flat through nested tuple / list arguments (leaf_values)."""
    node.args = map_flat_args(
        node.args, lambda position, arg: _quantized_arg(node, position, arg, what) if position in positions else arg)


def _quantized_arg(node: fx.Node, position: int, arg: Any, what: str) -> fx.Node:
    source = quantized_source(arg)
    if source is None:
        raise ValueError(f"{what}: argument {position} ({arg}) of '{node.name}' is not quantized (its observer saw "
                         f"no data, or the value is not a float tensor); calibrate the model before convert_fx, or "
                         f"leave the index out of input_quantized_idxs")
    return source


def dequantize_for_readers(gm: fx.GraphModule, node: fx.Node) -> None:
    """Readers of ``node``, which now yields a quantized tensor, read ``node.dequantize()``."""
    readers = list(node.users)
    if not readers:
        return
    with gm.graph.inserting_after(node):
        dequantized = gm.graph.call_method("dequantize", (node,))
    for reader in readers:
        reader.replace_input_with(node, dequantized)


def output_quantize(node: fx.Node) -> Optional[fx.Node]:
    """The ``quantize_per_tensor`` that reads ``node`` (after to_reference), if any."""
    return next((u for u in node.users
                 if u.op == "call_function" and u.target in (torch.quantize_per_tensor, torch.quantize_per_channel)),
                None)


def return_quantized(node: fx.Node) -> bool:
    """``node`` already yields the quantized value: readers of the quantize after it read ``node`` instead."""
    quantize = output_quantize(node)
    if quantize is None:
        return False
    quantize.replace_all_uses_with(node)
    return True
