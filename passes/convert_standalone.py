"""Convert standalone modules with the convert flow (fxq.passes.flows) and wire their quantized inputs and outputs.

Inputs at the child's ``input_quantized_idxs`` receive the quantized tensor (not its dequantize); when the child
returns quantized (``output_quantized_idxs``), the ``quantize_per_tensor`` after it goes away.
Requires: the lowered graph and ``ctx.state.standalone`` (prepare_standalone). Position: after lower, before cleanup.
"""
from __future__ import annotations

from torch import fx

from fxq.passes.boundary import feed_quantized, return_quantized
from fxq.passes.context import PassContext, modules_of
from fxq.graph.state import set_state


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if not ctx.state.standalone:
        return gm
    from fxq.passes.flows import convert  # the child runs the whole convert flow; late: flows imports the pipeline
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.name not in ctx.state.standalone:
            continue
        inputs, outputs, child_state = ctx.state.standalone[node.name]
        set_state(modules[node.target], child_state)
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, convert(modules[node.target], ctx.convert_config))
        feed_quantized(node, set(inputs), f"standalone module '{node.target}'")
        if outputs:
            return_quantized(node)
        ctx.count("standalone modules converted")
    return gm
