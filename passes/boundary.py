"""Helpers for the passes that quantize at a boundary fxq does not trace into: custom modules, standalone
modules, and the model's own inputs and outputs (``input_quantized_idxs`` / ``output_quantized_idxs``).

Prepare side: make sure a value is read through an observer (reusing one already there). Convert side, on the
lowered graph: hand a leaf ``q`` instead of ``dequantize(q)``, and let a leaf's quantized output replace the
``quantize_per_tensor`` that followed it. Not a pass: passes import it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from fxq.observers import ObserverBase
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
    if is_observer(value, modules):
        return True
    if not is_float_tensor(value):
        return False
    existing = next((u for u in value.users if is_observer(u, modules) and u is not user), None)
    observer = existing or add_observer(gm, modules, value, constructor, "activation/input")
    user.replace_input_with(value, observer)
    return True


def observe_output(gm: fx.GraphModule, modules: dict, node: fx.Node, constructor: Any) -> bool:
    """Every reader of ``node`` reads it through one observer (an existing one is reused and re-tagged)."""
    if not is_float_tensor(node):
        return False
    observer = next((u for u in node.users if is_observer(u, modules)), None)
    observer = observer or add_observer(gm, modules, node, constructor, "activation/output")
    observer.meta[QTAG_KEY] = "activation/output"
    node.replace_all_uses_with(observer, delete_user_cb=lambda user: user is not observer)
    return True


def quantized_source(arg: Any) -> Optional[fx.Node]:
    """``q`` for ``dequantize(q)``, else None."""
    if isinstance(arg, fx.Node) and arg.op == "call_method" and arg.target == "dequantize":
        return arg.args[0]
    return None


def feed_quantized(node: fx.Node, positions: Any, what: str) -> None:
    """Arguments at ``positions`` (all tensor arguments for None) become the quantized tensors behind them."""
    for position, arg in enumerate(node.args):
        if positions is not None and position not in positions:
            continue
        source = quantized_source(arg)
        if source is None:
            if positions is None and not isinstance(arg, fx.Node):
                continue
            raise ValueError(f"{what}: argument {position} ({arg}) of '{node.name}' is not quantized (its observer "
                             f"saw no data, or the value is not a float tensor); calibrate the model before "
                             f"convert_fx, or leave the index out of input_quantized_idxs")
        node.replace_input_with(arg, source)


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
