"""Warn, with the reason, when the QConfigMapping asks for quantization but prepare quantizes nothing.

A prepare that inserts no observer gives a model that converts to itself: without a warning the user only finds
out from the latency. The reasons, checked in this order: no op got a qconfig (the mapping's keys name nothing in
the model), or the ops that got one are not in fxq's tables (torch.export's aten ops included: the op families of
patterns/ops.py name their aten spellings).
Requires: qconfigs assigned and observers inserted. Guarantees: the graph is unchanged.
Position: last in prepare.
"""
from __future__ import annotations

from typing import Optional

from torch import fx

from fxq.graph.modes import STATIC
from fxq.observers import ObserverBase
from fxq.passes.context import PassContext, modules_of

_CALLS = ("call_module", "call_function", "call_method")


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if ctx.qconfig_mapping is None or not _asks_for_quantization(ctx.qconfig_mapping):
        return gm
    modules = modules_of(gm)
    if any(isinstance(module, ObserverBase) for module in modules.values()):
        return gm
    reason = _reason(gm, ctx)
    if reason is not None:
        ctx.warnings.append(f"prepare_fx inserted no observer, so convert_fx will quantize nothing: {reason}")
    return gm


def _asks_for_quantization(mapping) -> bool:
    legacy = mapping.to_dict()
    if legacy.get("") is not None:
        return True
    return any(entry[-1] is not None for key, entries in legacy.items() if key for entry in entries)


def _reason(gm: fx.GraphModule, ctx: PassContext) -> Optional[str]:
    calls = [node for node in gm.graph.nodes if node.op in _CALLS]
    with_qconfig = [node for node in calls if ctx.state.modes.get(node.name) is not None]
    if not with_qconfig:
        return (f"no op in the graph has a qconfig: the QConfigMapping's rules select none of its {len(calls)} ops; "
                "check the set_object_type / set_module_name / set_mpath keys against the model (or use set_global)")
    if any(mode not in (None, STATIC) for mode in ctx.state.modes.values()):
        return None  # dynamic / weight-only layers quantize their weights at convert without activation observers
    names = ", ".join(f"'{node.name}'" for node in with_qconfig[:5])
    return (f"{len(with_qconfig)} ops have a qconfig ({names}{', ...' if len(with_qconfig) > 5 else ''}) but "
            "fxq quantizes none of them; teach it the op with fxq.patterns.register_op")
