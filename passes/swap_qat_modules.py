"""Swap float weighted modules (and QAT-fused chains) for their QAT modules, per patterns/qat.py.

Requires: qconfigs assigned (assign_qconfig); QAT fusion done.
Guarantees: every call_module whose qconfig is static and whose module type has a row in ``QAT_MODULES`` now
calls a QAT module that fake-quantizes its weight with ``qconfig.weight()`` (same Parameter objects, so an
optimizer built on the prepared model trains them); batch norms of fused chains live on inside it.
Position: after insert_observers (whose table matches the float chains), so the observers go where prepare_fx
puts them.

Before / after::

    conv = self.conv(x)    # intrinsic.ConvBnReLU2d(Conv2d, BatchNorm2d, ReLU)
    conv = self.conv(x)    # qat.ConvBnReLU2d with .weight_fake_quant and .bn
"""
from __future__ import annotations

from torch import fx

from fxq.graph.modes import STATIC
from fxq.observers.weight_grids import is_grouped
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.qat import QAT_MODULES


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if not ctx.qat:
        return gm
    modules = modules_of(gm)
    for node in gm.graph.nodes:
        if node.op != "call_module" or ctx.state.modes.get(node.name) != STATIC:
            continue
        module = modules[node.target]
        qat_type = QAT_MODULES.get(type(module))
        if qat_type is None:
            continue
        qconfig = ctx.state.qconfigs[node.name]
        replacement = qat_type.from_float(module, qconfig.weight)
        if is_grouped(replacement.weight_fake_quant):  # fail at prepare, naming the layer, not in the first step
            replacement.weight_fake_quant.check_weight(replacement.weight, node.target)
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, replacement)
        modules[node.target] = replacement
        ctx.count(f"swapped {type(module).__name__} -> qat.{qat_type.__name__}")
    return gm
