"""Fold SmoothQuant factors: divide the producer's output channels, multiply the linears' weight columns.

Per SmoothingObserver R (from insert_smoothing_observers) behind producer P's output observer O:
``s = max|X|^alpha / max|W|^(1 - alpha)`` per channel (fxq.equalization.smoothing; W over every linear reading
R, so q, k and v share one factor; alpha searched per producer when the config says ``"search"``).
P's weight and bias are divided by ``s`` (P a norm / linear module, or one behind channel-keeping views and eval
dropouts, fxq.equalization.smoothing.producer_path; other producers get a ``div`` in front of O) and each
linear's weight columns multiplied by it (new Parameters),
O is rebuilt as if it had watched the smoothed values (fxq.equalization.requantize), and any other user of R
(a post-norm residual add, the model output) reads ``O * s`` (a float ``mul``), so the model computes what it
computed before. The factor is kept as a buffer ``<producer>_smoothing_scale``.
Requires: a calibrated graph from insert_smoothing_observers. Guarantees: no SmoothingObserver left.
Position: first in convert, before equalize and to_reference (both read the observers it rebuilds).

Before / after::

    norm -> obs -> record -> {query, key, value, add}
    norm' -> obs' -> {query', key', value'};  obs' -> mul(s) -> add
"""
from __future__ import annotations

import torch
from torch import fx, nn

from fxq.equalization import graph as eqg
from fxq.equalization import requantize
from fxq.equalization.smoothing import (ALPHA_GRID, SmoothingObserver, choose_alpha, producer_module, producer_path,
                                       scale_consumer, scale_producer, smoothing_scale)
from fxq.passes.context import PassContext, delete_unused_submodules, modules_of, register_new_buffer


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    records = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], SmoothingObserver)]
    if not records:
        return gm
    calls = eqg.call_counts(gm)
    for node in records:
        record, observer = modules[node.target], node.args[0]
        consumers = [u for u in node.users if u.op == "call_module" and calls[u.target] == 1 and u.args[0] is node
                     and isinstance(eqg.inner_module(modules[u.target]), nn.Linear)]
        if not record.has_data() or not consumers:
            ctx.warnings.append(f"smoothing skipped for '{observer.args[0].name}': its record saw no data")
        elif _fold(gm, node, consumers, modules, calls):
            ctx.count("producers smoothed")
        else:
            ctx.count("left alone (smoothing did not lower the int8 error)")
        node.replace_all_uses_with(observer)
        gm.graph.erase_node(node)
    delete_unused_submodules(gm)
    return gm


def _fold(gm: fx.GraphModule, node: fx.Node, consumers: list, modules: dict, calls) -> bool:
    """Smooth one value if that lowers the int8 error on the record's rows; False when it was left alone."""
    record, observer = modules[node.target], node.args[0]
    producer = observer.args[0]
    linears = [eqg.inner_module(modules[c.target]) for c in consumers]
    x_absmax = record.absmax()
    candidates = ALPHA_GRID if record.alpha == "search" else (float(record.alpha),)
    alpha = choose_alpha(record.sample.reshape(-1, x_absmax.numel()), x_absmax, [m.weight for m in linears],
                         candidates)
    if alpha is None:
        return False
    w_absmax = torch.stack([m.weight.detach().abs().amax(dim=0) for m in linears]).amax(dim=0)
    scale = smoothing_scale(x_absmax, w_absmax, alpha)
    name = register_new_buffer(gm, f"{producer.name}_smoothing_scale", scale)
    path = producer_path(producer, modules, calls, scale.numel())
    if path:  # a norm / linear, perhaps behind views: fold the division into its weights
        scale_producer(producer_module(modules[path[-1].target]), scale)
        for value, on_path in zip(path, [observer] + path[:-1]):
            _restore(gm, value, [u for u in value.users if u is not on_path], value, name)
    else:  # a GELU, an input: divide in front of the observer; its other users keep reading it as it was
        _divide_before(gm, producer, observer, name)
    for linear in linears:
        scale_consumer(linear, scale)
    rebuilt = requantize.rescaled_observer(modules[observer.target], record, 1.0 / scale)
    setattr(gm, observer.target, rebuilt)
    modules[observer.target] = rebuilt
    _restore(gm, observer, [u for u in node.users if u not in consumers], node, name)
    return True


def _divide_before(gm: fx.GraphModule, producer: fx.Node, observer: fx.Node, scale_name: str) -> None:
    with gm.graph.inserting_before(observer):
        factor = gm.graph.get_attr(scale_name)
        divided = gm.graph.call_function(torch.div, (producer, factor))
    divided.meta.update({k: v for k, v in producer.meta.items() if k in ("fxq_scope", "fxq_value")})
    observer.replace_input_with(producer, divided)


def _restore(gm: fx.GraphModule, value: fx.Node, users: list, replaced: fx.Node, scale_name: str) -> None:
    """``users`` read ``value * scale`` instead of ``replaced``: the unsmoothed values, in float."""
    if not users:
        return
    with gm.graph.inserting_after(value):
        factor = gm.graph.get_attr(scale_name)
    with gm.graph.inserting_after(factor):
        restored = gm.graph.call_function(torch.mul, (value, factor))
    restored.meta.update({k: v for k, v in value.meta.items() if k in ("fxq_scope", "fxq_value")})
    for user in users:
        user.replace_input_with(replaced, restored)
