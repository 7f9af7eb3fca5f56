"""Make the converted model take and return quantized tensors where ``input/output_quantized_idxs`` say.

Input ``i``: the ``quantize_per_tensor(x_i, ...)`` after the placeholder goes away (its readers read the
placeholder, which now holds the quantized tensor); anything that read the float input reads
``x_i.dequantize()``. Output ``i``: ``dequantize(q)`` is returned as ``q``.
Requires: the lowered graph and the observers of observe_io. Position: after lower, before cleanup.

Before / after (input 0 and output 0 quantized)::

    x -> quantize_per_tensor -> linear(q) -> dequantize -> out      x (quantized) -> linear(q) -> out
"""
from __future__ import annotations

from torch import fx

from fxq.passes.boundary import output_quantize, quantized_source
from fxq.passes.context import PassContext


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    config = ctx.state.prepare_config
    if config is None or not (config.input_quantized_indexes or config.output_quantized_indexes):
        return gm
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for index in config.input_quantized_indexes:
        _take_quantized(gm, placeholders[index])
        ctx.count("quantized inputs")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    value = output.args[0]
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    for index in config.output_quantized_indexes:
        source = quantized_source(values[index])
        if source is None:
            raise ValueError(f"output_quantized_idxs: output {index} of the converted model is not quantized (its "
                             f"observer saw no data); calibrate before convert_fx")
        values[index] = source
        ctx.count("quantized outputs")
    output.args = (type(value)(values) if isinstance(value, (tuple, list)) else values[0],)
    return gm


def _take_quantized(gm: fx.GraphModule, placeholder: fx.Node) -> None:
    quantize = output_quantize(placeholder)
    if quantize is None:
        raise ValueError(f"input_quantized_idxs: input '{placeholder.target}' is not quantized in the converted "
                         f"model (its observer saw no data); calibrate before convert_fx")
    float_users = [u for u in placeholder.users if u is not quantize]
    quantize.replace_all_uses_with(placeholder)
    if float_users:
        with gm.graph.inserting_after(placeholder):
            dequantized = gm.graph.call_method("dequantize", (placeholder,))
        for user in float_users:
            user.replace_input_with(placeholder, dequantized)
