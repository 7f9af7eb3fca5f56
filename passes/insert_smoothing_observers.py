"""Insert SmoothQuant records behind each observer that feeds quantized linears (fxq.SmoothQuant).

For a value P (a norm or linear output, a GELU, a model input, ...) whose one observer O feeds at least one
Linear module with a qconfig, a SmoothingObserver R goes between O and all of O's users: it records what O saw,
per channel, a sample of rows, and what rebuilding O for the smoothed values needs
(fxq.equalization.requantize). The smooth pass decides and folds the factors at convert time. Values observed by
a shared or non-rebuildable observer, or feeding no linear, are left alone (CNNs: convs are not linears, so
only a classifier head can get a record, and convert drops it when smoothing does not lower its int8 error).
Requires: insert_observers. Guarantees: SmoothingObserver nodes only; quantization observers untouched.
Position: right after insert_observers, before insert_equalization_observers (an input-weight equalized layer
behind a smoothed norm is then skipped: its input observer is no longer its direct argument).

Before / after::

    norm -> obs -> {query, key, value, add}
    norm -> obs -> smoothing_record -> {query, key, value, add}
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

from torch import fx, nn

from fxq import mpath
from fxq.equalization import graph as eqg
from fxq.equalization import requantize
from fxq.equalization.smoothing import SmoothingObserver, is_producer
from fxq.passes.context import PassContext, free_name, modules_of
from fxq.passes.record_values import value_of


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    config = getattr(ctx, "smoothing", None)
    if config is None:
        return gm
    modules = modules_of(gm)
    calls = eqg.call_counts(gm)
    chosen = _chosen_names(gm, config)
    for observer in list(gm.graph.nodes):
        node = observer.args[0] if eqg.is_observer(observer, modules) and observer.args else None
        if not isinstance(node, fx.Node) or (chosen is not None and node.name not in chosen):
            continue
        if not _rebuildable(observer, node, modules, calls):
            continue
        if not linear_consumers(observer, _width(node), modules, calls, ctx):
            continue
        record = SmoothingObserver(alpha=config.alpha)
        requantize.configure_recording(record, modules[observer.target])
        name = free_name(gm, f"{node.name}_smoothing_record")
        gm.add_submodule(name, record)
        modules[name] = record
        with gm.graph.inserting_after(observer):
            inserted = gm.graph.call_module(name, (observer,))
        inserted.meta.update({k: v for k, v in observer.meta.items() if k in ("fxq_scope", "fxq_value")})
        observer.replace_all_uses_with(inserted, delete_user_cb=lambda user: user is not inserted)
        ctx.count("producers smoothed")
    return gm


def _chosen_names(gm: fx.GraphModule, config) -> Optional[set]:
    """Names of the producer nodes the config's queries allow (None: every producer)."""
    def names(queries) -> set:
        return {node.name for query in queries for node in mpath.search(query, gm)}
    if not config.select and not config.exclude:
        return None
    allowed = names(config.select) if config.select else {node.name for node in gm.graph.nodes}
    return allowed - names(config.exclude)


def _rebuildable(observer: fx.Node, node: fx.Node, modules: dict, calls: Counter) -> bool:
    """The observer is the producer's only one, called once, of a type convert can rebuild for smoothed values;
    a norm / linear producer must be called once too (its weights get the factor)."""
    observers = [user for user in node.users if eqg.is_observer(user, modules)]
    if len(observers) != 1 or calls[observer.target] != 1 or (is_producer(node, modules) and calls[node.target] != 1):
        return False
    return requantize.rebuild_kind(modules[observer.target]) is not None


def linear_consumers(value: fx.Node, width: Optional[int], modules: dict, calls: Counter, ctx: PassContext) -> list:
    """Users of ``value`` that are Linear modules (fused ones too) called once, quantized, reading its ``width``
    channels."""
    found = []
    for user in value.users:
        if user.op != "call_module" or calls[user.target] != 1 or not user.args or user.args[0] is not value:
            continue
        layer = eqg.inner_module(modules[user.target])
        if isinstance(layer, nn.Linear) and layer.in_features == width and ctx.state.qconfigs.get(user.name):
            found.append(user)
    return found


def _width(value: fx.Node) -> Optional[int]:
    shape = value_of(value).shape
    return int(shape[-1]) if shape else None
