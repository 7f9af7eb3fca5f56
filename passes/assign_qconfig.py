"""Give every op node the qconfig the QConfigMapping selects for it (torch.ao's precedence, see fxq.config).

Requires: fused modules in place (a fused module is looked up by its fused type, then by its first part's type,
so ``set_object_type(nn.Linear, None)`` keeps a fused Linear+ReLU float too).
Guarantees: ``ctx.state.qconfigs[node.name]`` is set for every call node (None: keep float). A qconfig for a
mode this pipeline does not run (dynamic, weight-only) raises a ValueError naming the node and the fix.
Position: after fuse, before insert_observers.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import fx

from fxq.passes.context import PassContext, modules_of
from fxq.patterns.fusion import FUSED_CONSTITUENTS
from fxq.tracer import scope_of

_CALLS = ("call_module", "call_function", "call_method")


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    mapping = ctx.qconfig_mapping
    calls_so_far: Counter = Counter()
    checked: dict = {}
    for node in gm.graph.nodes:
        if node.op not in _CALLS:
            continue
        path, object_types, counted_in = _lookup_key(node, modules)
        index = calls_so_far[(counted_in, object_types[0])]
        calls_so_far[(counted_in, object_types[0])] += 1
        qconfig = mapping.qconfig_for(path, object_types, index, counted_in=counted_in)
        if qconfig is not None and id(qconfig) not in checked:
            checked[id(qconfig)] = _check_static(qconfig, node, path)
        ctx.state.qconfigs[node.name] = qconfig
        ctx.count("quantizable" if qconfig is not None else "float by config")
    return gm


def _lookup_key(node: fx.Node, modules: dict) -> tuple:
    """(module path, candidate object types, module whose calls are counted) for one node."""
    if node.op == "call_module":
        module_type = type(modules[node.target])
        parts = FUSED_CONSTITUENTS.get(module_type, ())
        return node.target, (module_type,) + parts[:1], node.target.rpartition(".")[0]
    scope = scope_of(node)
    if node.op == "call_method":
        owner = type(modules[scope.path]) if scope.path in modules else type(None)
        return scope.path, (owner, node.target), scope.path
    return scope.path, (node.target,), scope.path


def _check_static(qconfig, node: fx.Node, path: str) -> bool:
    activation = qconfig.activation()
    if getattr(activation, "is_dynamic", False) or not _is_int8(getattr(activation, "dtype", None)):
        mode = "dynamic" if getattr(activation, "is_dynamic", False) else "weight-only/float16"
        raise ValueError(
            f"node '{node.name}' (module '{path or '<root>'}') has a {mode} qconfig, which fxq's static int8 "
            f"pipeline does not run yet (it would silently stay float). Keep it float explicitly with "
            f"QConfigMapping().set_module_name('{path}', None) / set_object_type(..., None), or give it a static "
            f"qconfig such as fxq.get_default_qconfig('x86')"
        )
    return True


def _is_int8(dtype) -> bool:
    return dtype in (torch.quint8, torch.qint8)
