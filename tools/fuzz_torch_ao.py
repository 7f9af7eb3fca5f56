"""torch.ao as the fuzzer's reference: its int8 output for a graph, and when comparing SQNR with it is fair.

Property 4 (SQNR vs float >= torch.ao's - 1 dB) is checked only where the comparison measures the same thing:

- torch.ao converts and runs the graph;
- fxq rounds to int8 no more often than torch.ao (``rounding_count``). fxq deliberately runs ops in int8 that
  torch.ao leaves in float (an ``x + x`` feeding a ReLU module, for one); each extra int8 value is one more
  rounding, so fxq's SQNR vs float can then trail torch.ao's while fxq does more of the model in int8;
- the graph has no scalar add/mul. Both fxq and torch.ao run ``x + c`` as ``quantized::add`` with a scalar, which
  rounds c to a multiple of x's scale; that constant error often dominates a small graph's SQNR, and which side
  it favours depends only on where c / scale falls (a Linear -> ``+ 0.25`` graph: fxq 32.9 dB, torch.ao 35.9 dB,
  with identical graphs and weights), so the comparison would measure luck.

``compare_with_torch_ao`` returns which case applies (one of ``COMPARISONS``) and torch.ao's output.
"""
from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import fx

from tools.fuzz_graphs import GraphSpec

COMPARED, TORCH_AO_FAILED, FXQ_ROUNDS_MORE = "compared", "torch.ao failed", "fxq rounds more"
SCALAR_ROUNDING = "scalar rounded to the input scale"
COMPARISONS = (COMPARED, TORCH_AO_FAILED, FXQ_ROUNDS_MORE, SCALAR_ROUNDING)


def qconfig_mapping(library, spec: GraphSpec):
    """``library``'s (fxq's or torch.ao.quantization's) x86 default mapping, with spec.float_modules left float."""
    mapping = library.get_default_qconfig_mapping("x86")
    for name in spec.float_modules:
        mapping = mapping.set_module_name(name, None)
    return mapping


def quantize_with_torch_ao(model, example: tuple, calibration: list) -> Optional[fx.GraphModule]:
    """torch.ao's converted copy of ``model`` (a FuzzNet), or None where torch.ao fails."""
    try:
        from torch.ao import quantization
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
        prepared = prepare_fx(copy.deepcopy(model), qconfig_mapping(quantization, model.spec), example)
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        return convert_fx(prepared)
    except Exception:  # torch.ao's failures are not fxq's: property 4 is not checked there
        return None


class _RoundingCounter(fx.Interpreter):
    """Counts the nodes that round to int8: a quantized output with qparams none of its quantized inputs has."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.roundings = 0

    def run_node(self, node: fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        result = super().run_node(node)
        if isinstance(result, torch.Tensor) and result.is_quantized and result.qscheme() == torch.per_tensor_affine:
            qparams = {(item.q_scale(), item.q_zero_point()) for item in _tensors((args, tuple(kwargs.values())))
                       if item.is_quantized and item.qscheme() == torch.per_tensor_affine}
            self.roundings += (result.q_scale(), result.q_zero_point()) not in qparams
        return result


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [item for element in value for item in _tensors(element)]
    return []


def rounding_count(model: fx.GraphModule, inputs: tuple) -> int:
    """How many values ``model`` rounds to int8 while running on ``inputs``."""
    counter = _RoundingCounter(model)
    with torch.no_grad():
        counter.run(*inputs)
    return counter.roundings


def compare_with_torch_ao(spec: GraphSpec, model: torch.nn.Module, data, fxq_converted: fx.GraphModule,
                          flat_output) -> Tuple[str, Optional[torch.Tensor]]:
    """(which COMPARISONS case applies, torch.ao's flat output on ``data.evaluation`` when it is COMPARED)."""
    if any(step.op in ("add_scalar", "mul_scalar") for step in spec.steps):
        return SCALAR_ROUNDING, None
    theirs = quantize_with_torch_ao(model, data.example, data.calibration)
    try:
        output = flat_output(theirs, data.evaluation) if theirs is not None else None
    except Exception:  # a torch.ao model that converts but does not run
        output = None
    if output is None:
        return TORCH_AO_FAILED, None
    if rounding_count(fxq_converted, data.evaluation) > rounding_count(theirs, data.evaluation):
        return FXQ_ROUNDS_MORE, None
    return COMPARED, output
