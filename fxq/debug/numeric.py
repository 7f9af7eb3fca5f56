"""Where does the quantization error come from? Per-layer SQNR between a float and a quantized model, and a
layer sensitivity ranking: the job of PyTorch AO's numeric suite, each as one call.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from tabulate import tabulate
from torch import fx, nn

from fxq.graph.node_meta import target_name
from fxq.debug.provenance import provenance
from fxq.debug.sensitivity import Sensitivity, sensitivity  # re-exported: the numeric suite's calls live here
from fxq.graph.tracer import scope_of

__all__ = ["Comparison", "LayerError", "Sensitivity", "compare", "sensitivity"]
_SKIPPED_OPS = ("placeholder", "get_attr", "output")


@dataclass(frozen=True)
class LayerError:
    """The SQNR (dB) of one node's quantized output against the float model's, over all inputs."""

    scope: str       # module path of the node ("" at the root)
    node: str        # node name in the float graph
    op: str          # e.g. "torch.nn.Conv2d" or "operator.add"
    sqnr_db: float


class Comparison(list):
    """A list of :class:`LayerError`, worst (lowest SQNR) first; ``str()`` is a table."""

    def table(self, limit: Optional[int] = None) -> str:
        rows = [(e.scope or "<root>", e.node, e.op, f"{e.sqnr_db:.1f}") for e in self[:limit]]
        return tabulate(rows, headers=("layer", "node", "op", "SQNR dB"), tablefmt="simple", disable_numparse=True)

    def __str__(self) -> str:
        return self.table()


def compare(float_model: nn.Module, quantized_model: fx.GraphModule, inputs: Iterable[Any]) -> Comparison:
    """Per-layer SQNR of ``quantized_model`` (from convert_fx) against ``float_model``, worst first.

    ``inputs`` is an iterable of batches; a batch is a tensor or a tuple of the forward's arguments.

    How float and quantized activations are paired: ``float_model`` is traced and fused the way prepare_fx does
    it, so its graph has the observed graph's op nodes under the same names (a conv-bn-relu is one fused
    ``conv`` node, compared as the float relu(bn(conv(x)))). Convert records, for each node it makes, the op
    whose output it holds (fxq.debug.provenance; kept on the model, so it survives ``torch.save``): the quantized
    ``add_relu`` that replaced ``add`` -> ``relu`` holds ``relu``'s output, a ``linear_quantized_0`` module
    holds ``F.linear``'s. Each float op is paired with the *last* node in the quantized graph holding its
    output (its dequantized value when it ran in float and was re-quantized after). Float ops with no
    quantized counterpart (``add`` inside ``add_relu``, ops convert removed) and pairs whose shapes differ
    are left out. A quantized model without that record (edited after convert) is matched by node name,
    then by base name (``add`` -> ``add_1``) in graph order. Each row names the float node and its scope.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> data = [torch.randn(16, 8) for _ in range(4)]
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (data[0],))
    >>> _ = fxq.calibrate(prepared, data, progress=False)
    >>> errors = fxq.compare(model, fxq.convert_fx(prepared), data)
    >>> sorted(e.node for e in errors)
    ['_0', '_2']
    >>> print(errors)  # doctest: +SKIP
    """
    reference = _fused_float_graph(float_model)
    pairs = _match(reference, quantized_model)
    plain_qparams = _plain_qparams(quantized_model, set(pairs))
    signal: dict = {}
    noise: dict = {}
    for batch in inputs:
        args = batch if isinstance(batch, tuple) else (batch,)
        float_values = _values(reference, args, set(pairs.values()))
        quantized_values = _values(quantized_model, args, set(pairs))
        for quantized_name, float_name in pairs.items():
            expected, actual = float_values.get(float_name), quantized_values.get(quantized_name)
            if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)):
                continue
            actual = actual.dequantize() if actual.is_quantized else actual
            if actual.dtype == torch.uint8 and quantized_name in plain_qparams:  # the plain lowering's raw codes
                scale, zero_point = plain_qparams[quantized_name]
                actual = (actual.float() - zero_point) * scale
            if actual.shape != expected.shape or not expected.is_floating_point():
                continue
            signal[float_name] = signal.get(float_name, 0.0) + float(expected.double().pow(2).sum())
            noise[float_name] = noise.get(float_name, 0.0) + float((expected.double() - actual.double()).pow(2).sum())
    nodes = {node.name: node for node in reference.graph.nodes}
    result = Comparison(_layer_error(nodes[name], signal[name], noise[name], reference) for name in signal)
    result.sort(key=lambda e: (e.sqnr_db, e.node))
    return result


def _plain_qparams(gm: fx.GraphModule, names: set) -> dict[str, tuple]:
    """Node name -> (scale, zero point) of the uint8 tensors the plain lowering passes between its kernels, read
    from whatever reads or writes them (a dequantize, a kernel's input or output qparams). Without them compare
    took the raw codes for float values (-30 dB on every layer)."""
    from fxq.nn.plain import ops
    modules = dict(gm.named_modules())

    def number(value):
        return float(gm.get_buffer(value.target)) if isinstance(value, fx.Node) and value.op == "get_attr" \
            else float(value)

    found = {}
    for node in gm.graph.nodes:
        if node.name not in names:
            continue
        module = modules.get(node.target) if node.op == "call_module" else None
        if getattr(module, "output_scale", None) is not None:
            found[node.name] = (module.output_scale, module.output_zero_point)
        elif node.op == "call_function" and node.target is ops.quantize_per_tensor:
            found[node.name] = (number(node.args[1]), number(node.args[2]))
        for user in node.users:
            user_module = modules.get(user.target) if user.op == "call_module" else None
            if user.op == "call_function" and user.target is ops.dequantize_per_tensor and user.args[0] is node:
                found.setdefault(node.name, (number(user.args[1]), number(user.args[2])))
            elif hasattr(user_module, "input_scale") and user.args and user.args[0] is node:
                found.setdefault(node.name, (user_module.input_scale, user_module.input_zero_point))
    return found


def _layer_error(node: fx.Node, signal: float, noise: float, gm: fx.GraphModule) -> LayerError:
    sqnr = float("inf") if noise == 0 else 10 * torch.log10(torch.tensor(signal / max(noise, 1e-300))).item()
    op = type(gm.get_submodule(node.target)).__name__ if node.op == "call_module" else target_name(node)
    return LayerError(scope_of(node).path, node.name, op, sqnr)


def _fused_float_graph(model: nn.Module) -> fx.GraphModule:
    from fxq.passes.flows import fuse_model  # late: flows imports the pipeline, which imports fxq.debug
    return fuse_model(model.eval() if model.training else model)


def _match(reference: fx.GraphModule, quantized: fx.GraphModule) -> dict[str, str]:
    """Quantized node name -> float node name, for nodes both graphs compute (see :func:`compare`)."""
    float_names = {n.name for n in reference.graph.nodes if n.op not in _SKIPPED_OPS}
    origins = provenance(quantized)
    if not origins:
        return _match_by_name(reference, quantized)
    holder: dict[str, str] = {}  # float op -> the last quantized node holding its output
    for node in quantized.graph.nodes:
        origin = origins.get(node.name, (None, None))[0]
        if node.op not in _SKIPPED_OPS and origin in float_names:
            holder[origin] = node.name
    return {quantized_name: float_name for float_name, quantized_name in holder.items()}


def _match_by_name(reference: fx.GraphModule, quantized: fx.GraphModule) -> dict[str, str]:
    float_nodes = [n for n in reference.graph.nodes if n.op not in _SKIPPED_OPS]
    float_names = {n.name for n in float_nodes}
    quantized_nodes = [n for n in quantized.graph.nodes if n.op not in _SKIPPED_OPS]
    quantized_names = {n.name for n in quantized_nodes}
    pairs = {n.name: n.name for n in quantized_nodes if n.name in float_names}
    # float nodes the lowering replaced: their base name is free in the quantized graph
    waiting: dict[str, list[str]] = {}
    for node in float_nodes:
        if node.name not in quantized_names:
            waiting.setdefault(_base(node.name), []).append(node.name)
    for node in quantized_nodes:
        if node.name not in pairs and waiting.get(_base(node.name)):
            pairs[node.name] = waiting[_base(node.name)].pop(0)
    return pairs


def _base(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _values(gm: fx.GraphModule, args: tuple, wanted: set) -> dict:
    values: dict = {}

    class _Capture(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            result = super().run_node(node)
            if node.name in wanted:
                values[node.name] = result
            return result

    with torch.no_grad():
        _Capture(gm).run(*args)
    return values

