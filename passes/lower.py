"""Lower reference patterns to quantized kernels, row by row from patterns/lowering.py.

Requires: the reference graph (to_reference). Guarantees: every op whose rewrite accepted it reads quantized
tensors and yields a quantized tensor; the rest stay ``dequantize -> float op -> quantize`` and still compute
the right thing. Leaves dead quantize/dequantize nodes for cleanup.
Position: after to_reference, before cleanup.

Before / after::

    q0 = quantize_per_tensor(x, 0.02, 128, quint8); d0 = q0.dequantize(); y = linear(d0)  # reference Linear
    q1 = quantize_per_tensor(y, 0.05, 64, quint8)
    ->  q0 = quantize_per_tensor(x, 0.02, 128, quint8); q1 = linear(q0)                    # quantized Linear
"""
from __future__ import annotations

import contextlib

import torch
from torch import fx

from fxq.nn.quantized._packing import packing_for
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.lowering import LOWERING
from fxq.patterns.plain_lowering import PLAIN_LOWERING
from fxq.patterns.rewrites import Lowering


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    lowering = Lowering(gm, modules_of(gm), ctx.state)
    table = PLAIN_LOWERING if ctx.lowering == "plain" else LOWERING
    lowered = 0
    for node in list(gm.graph.nodes):
        if node.op not in ("call_module", "call_function", "call_method") or not node.users:
            continue
        engine = ctx.state.engines.get(node.name) if ctx.state is not None else None
        engine = engine if engine in torch.backends.quantized.supported_engines else None  # "plain": no packing
        with packing_for(engine) if engine else contextlib.nullcontext():  # the cost model's per-layer choice
            for match in table.matches(node, lowering.modules):
                if match.rule.action(lowering, match):
                    ctx.count(f"lowered {match.rule.name}")
                    lowered += 1
                    break
    if not lowered:
        _warn_nothing_lowered(gm, ctx)
    return gm


def _warn_nothing_lowered(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Quantize nodes but no int8 op: the model pays for rounding and runs every op in float."""
    if ctx.state is None or ctx.state.custom_modules or ctx.state.standalone:
        return  # those modules take the quantized tensors after this pass
    quantizes = [n.name for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.quantize_per_tensor]
    if not quantizes:
        return
    grouped = [name for name, module in gm.named_modules() if getattr(module, "group_size", None) is not None]
    if grouped:  # the layers are quantized, in the only form their per-group scales allow
        ctx.warnings.append(f"convert_fx lowered no op to an int8 kernel: the grouped-weight layers "
                            f"({', '.join(grouped[:3])}) run as weight-only Linears in float, so the {len(quantizes)} "
                            f"quantize nodes around them only round; give them a float activation "
                            f"(PlaceholderObserver.with_args(dtype=torch.float32)) to skip the rounding")
        return
    ctx.warnings.append(f"convert_fx lowered no op to an int8 kernel: {len(quantizes)} quantize nodes "
                        f"({', '.join(quantizes[:3])}) feed only float ops; no row of fxq.patterns.lowering "
                        "matched (fxq.patterns.register_op(op, lower=...) adds one)")
