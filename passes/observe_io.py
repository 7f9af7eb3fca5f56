"""Observe the model's own inputs and outputs that ``input_quantized_idxs`` / ``output_quantized_idxs`` name.

With ``PrepareCustomConfig().set_input_quantized_indexes([0])`` the converted model takes its first input
already quantized, and with ``set_output_quantized_indexes([0])`` it returns its first output quantized (as a
standalone module or a model embedded in a quantized pipeline does). The prepared model still takes and returns
float; these observers learn the qparams the boundary quantization uses.
Requires: qconfigs and ordinary observers (reused when already there). Position: last in prepare.
"""
from __future__ import annotations

from torch import fx

from fxq.passes.boundary import is_observer, observe_input
from fxq.passes.context import PassContext, modules_of


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    config = ctx.prepare_config
    if config is None or not (config.input_quantized_indexes or config.output_quantized_indexes):
        return gm
    modules = modules_of(gm)
    activation = _activation(ctx)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for index in config.input_quantized_indexes:
        _check_index(index, len(placeholders), "input_quantized_idxs", "inputs")
        readers = [u for u in placeholders[index].users if not is_observer(u, modules)]  # observers: already one
        for user in readers:
            observe_input(gm, modules, user, placeholders[index], activation)
        if not readers and not placeholders[index].users:
            raise ValueError(f"input_quantized_idxs: input {index} is never read; leave it out")
        ctx.count("quantized inputs")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = _outputs(output)
    for index in config.output_quantized_indexes:
        _check_index(index, len(values), "output_quantized_idxs", "outputs")
        if not observe_input(gm, modules, output, values[index], activation):
            raise ValueError(f"output_quantized_idxs: output {index} ({values[index]}) is not a float tensor, so it "
                             f"cannot be returned quantized; leave {index} out of output_quantized_idxs")
        ctx.count("quantized outputs")
    return gm


def _outputs(output: fx.Node) -> list:
    value = output.args[0]
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _check_index(index: int, count: int, key: str, what: str) -> None:
    if not 0 <= index < count:
        raise ValueError(f"{key} has index {index} but the model has {count} {what}; use indexes 0..{count - 1}")


def _activation(ctx: PassContext):
    qconfig = ctx.qconfig_mapping.global_qconfig
    if qconfig is None:
        raise ValueError("input_quantized_idxs / output_quantized_idxs need qparams for the model's boundary, taken "
                         "from the global qconfig, which is None; set QConfigMapping().set_global(qconfig)")
    return qconfig.activation
