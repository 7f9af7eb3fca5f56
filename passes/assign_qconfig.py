"""Give every op node the qconfig the QConfigMapping selects for it (PyTorch AO's precedence, see fxq.config).

Requires: fused modules in place (a fused module is looked up by its fused type, then by its first part's type,
so ``set_object_type(nn.Linear, None)`` keeps a fused Linear+ReLU float too).
Guarantees: ``ctx.state.qconfigs[node.name]`` and ``ctx.state.modes[node.name]`` (fxq.graph.modes) are set for every
call node (None: keep float). A dynamic or weight-only qconfig on a weighted op those modes cannot run (a conv)
leaves it float with a warning naming it; on other ops (relu, add) it is ignored, as PyTorch AO does.
Position: after fuse, before insert_observers.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import torch
from torch import fx

from fxq.graph.modes import STATIC, quant_mode
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.fusion import FUSED_CONSTITUENTS
from fxq.patterns.layer_modules import ATEN_TARGET_KEY
from fxq.patterns.matcher import op_of
from fxq.patterns.modes import MODE_OPS, WEIGHTED_OPS
from fxq.graph.tracer import module_classes, scope_of
from fxq.patterns.ops import TORCH_SPELLING

_CALLS = ("call_module", "call_function", "call_method")


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    classes = module_classes(gm) or {}
    mapping = ctx.qconfig_mapping
    calls_so_far: Counter = Counter()
    unsupported: list = []
    for node in gm.graph.nodes:
        if node.op not in _CALLS:
            continue
        path, object_types, counted_in = _lookup_key(node, modules, classes)
        index = calls_so_far[(counted_in, object_types[0])]
        calls_so_far[(counted_in, object_types[0])] += 1
        qconfig = mapping.qconfig_for(path, object_types, index, counted_in=counted_in, node=node)
        mode = _mode(qconfig, node, path)
        if mode == STATIC and op_of(node, modules) in WEIGHTED_OPS:
            _check_weight_dtype(qconfig, node, path)
        if mode not in (None, STATIC) and op_of(node, modules) not in MODE_OPS[mode]:
            if op_of(node, modules) in WEIGHTED_OPS:
                unsupported.append(f"{node.name} ({path or '<root>'})")
            qconfig, mode = None, None
        ctx.state.qconfigs[node.name], ctx.state.modes[node.name] = qconfig, mode
        ctx.count(f"{mode} nodes" if mode else "float nodes")
    if unsupported:
        ctx.warnings.append(f"no dynamic/weight-only kernel for {', '.join(unsupported)}: left float; give them a "
                            f"static qconfig (fxq.get_default_qconfig()) to quantize them")
    return gm


def _lookup_key(node: fx.Node, modules: dict, classes: Optional[dict] = None) -> tuple:
    """(module path, candidate object types, module whose calls are counted) for one node.

    An aten op (torch.export's graph) is also looked up by its torch spelling (``F.layer_norm`` for
    ``aten.layer_norm``) and by the class of the module whose forward emitted it: ``set_object_type(nn.Linear, ...)``
    selects the ``aten.linear`` of every Linear, as it selects the Linear modules of a symbolically traced graph.
    A module call that was an aten call (passes/layer_modules.py) is looked up as that call was."""
    if node.op == "call_module" and ATEN_TARGET_KEY in node.meta:
        return _aten_key(node, node.meta[ATEN_TARGET_KEY], classes)
    if node.op == "call_module":
        module_type = type(modules[node.target])
        parts = FUSED_CONSTITUENTS.get(module_type, ())
        return node.target, (module_type,) + parts[:1], node.target.rpartition(".")[0]
    scope = scope_of(node)
    if node.op == "call_method":
        owner = type(modules[scope.path]) if scope.path in modules else type(None)
        return scope.path, (owner, node.target), scope.path
    if isinstance(node.target, torch._ops.OpOverload):
        return _aten_key(node, node.target, classes)
    return scope.path, (node.target,), scope.path


def _aten_key(node: fx.Node, target, classes: Optional[dict]) -> tuple:
    scope = scope_of(node)
    owner = (classes or {}).get(scope.path) if scope.path else None
    candidates = (target, TORCH_SPELLING.get(target), owner if isinstance(owner, type) else None)
    return scope.path, tuple(c for c in candidates if c is not None), scope.path


def _mode(qconfig, node: fx.Node, path: str):
    try:
        return quant_mode(qconfig)
    except ValueError as error:
        raise ValueError(f"the qconfig of node '{node.name}' (module '{path or '<root>'}'): {error}") from None


_weight_dtypes: dict = {}


def _check_weight_dtype(qconfig, node: fx.Node, path: str) -> None:
    """The int8 conv / linear kernels take torch.qint8 weights: say so at prepare, not deep inside convert."""
    key = id(qconfig.weight)
    if qconfig.weight is None:
        return
    if key not in _weight_dtypes:
        _weight_dtypes[key] = (qconfig.weight, qconfig.weight().dtype)  # keeps the constructor alive for its id
    dtype = _weight_dtypes[key][1]
    if dtype != torch.qint8:
        raise ValueError(f"the qconfig of node '{node.name}' (module '{path or '<root>'}') observes its weight as "
                         f"{dtype}, but the int8 conv / linear kernels take torch.qint8 weights; give the QConfig a "
                         "weight observer with dtype=torch.qint8 (e.g. fxq.observers.default_weight_observer)")
