"""One plain record per graph node: what ``fxq.dump`` prints and ``fxq.to_networkx`` stores.

A record is a dict with the fixed keys of :data:`RECORD_KEYS` (schema version :data:`SCHEMA_VERSION`):

- ``index`` (int): position in the graph; ``name``, ``op``, ``target`` (str; callables by qualified name,
  never by address); ``scope`` / ``scope_type`` (str): the module path and class the node came from
  (``""`` at the root); for ``call_module`` nodes ``scope_type`` is the class of the module called now.
- ``inputs`` (list of str): names of the nodes it reads, in argument order, each once.
- ``dtype`` (str or None) and ``shape`` (list of int or None): its output on the example inputs.
- ``qconfig`` (str or None): ``QConfig.short()`` of the QConfig prepare assigned to the op. In a prepared graph
  it comes from the assignment (``gm._fxq_state``); in a converted graph from the provenance convert keeps
  (fxq.debug.provenance), so a lowered op (``add_relu``, ``linear_quantized_0``) shows the qconfig of the op it
  replaced. Observer, quantize and dequantize nodes have None: their ``quant`` says what they do. An op the
  cost model left in float reads ``float (cost model: int8 ... vs float ... ms)``.
- ``quant`` (dict or None), for observers, quantize calls and ops with a quantized output: ``dtype`` (str),
  ``min`` / ``max`` (float or None: the observed range), ``scale`` (float, or list of float per channel),
  ``zero_point`` (int, or list of int).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import fx

from fxq.debug.provenance import provenance
from fxq.graph import node_meta
from fxq.graph.node_meta import target_name
from fxq.graph.state import get_state
from fxq.graph.tracer import scope_of
from fxq.nn.quantized._base import QuantizedModule
from fxq.observers import ObserverBase
from fxq.passes.context import attribute_value

SCHEMA_VERSION = 1
RECORD_KEYS = ("index", "name", "op", "target", "scope", "scope_type", "inputs", "dtype", "shape", "qconfig",
               "quant")
_QUANTIZE_CALLS = (torch.quantize_per_tensor, torch.quantize_per_channel)


def node_records(gm: fx.GraphModule, example_inputs: Optional[tuple] = None,
                 qconfigs: Optional[dict] = None) -> list[dict]:
    """A record per node, in graph order. With ``example_inputs`` the graph runs once to learn the actual
    output dtypes and shapes (a converted graph's quint8 tensors); otherwise they come from prepare's record.
    ``qconfigs`` (node name -> QConfig) overrides the assignment read from ``gm``; the pipeline passes its own
    while prepare runs, before the state is on the GraphModule.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> gm = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.ones(1, 2),))
    >>> [r["name"] for r in node_records(gm)]
    ['input_1', 'activation_post_process_0', '_0', 'activation_post_process_1', 'output']
    """
    node_meta.restore(gm)  # a model loaded with torch.load: scopes back from what prepare / convert stored
    values = _run(gm, example_inputs) if example_inputs is not None else {}
    modules = dict(gm.named_modules())
    texts = _qconfig_texts(gm, qconfigs)
    records = []
    for index, node in enumerate(gm.graph.nodes):
        record = _record(index, node, modules, values)
        if not _is_plumbing(node, modules):  # observers, quantize, dequantize: their quant fields speak
            record["qconfig"] = texts.get(node.name)
        if "fxq_float_reason" in node.meta:
            record["qconfig"] = f"float ({node.meta['fxq_float_reason']})"
        records.append(record)
    return records


def _qconfig_texts(gm: fx.GraphModule, qconfigs: Optional[dict]) -> dict:
    """Node name -> QConfig.short() text: what convert kept, else the given or the prepared model's assignment."""
    kept = provenance(gm)
    if kept:
        return {name: qconfig for name, (_, qconfig) in kept.items() if qconfig is not None}
    if qconfigs is None:
        state = get_state(gm)
        qconfigs = state.qconfigs if state is not None else {}
    return {name: qconfig.short() for name, qconfig in qconfigs.items() if qconfig is not None}


def _is_plumbing(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), ObserverBase)
    return node.target in _QUANTIZE_CALLS or node.target is torch.dequantize or (
        node.op == "call_method" and node.target == "dequantize")


def _record(index: int, node: fx.Node, modules: dict, values: dict) -> dict:
    scope = scope_of(node)
    scope_type = scope.type_name
    if node.op == "call_module" and node.target in modules:
        scope_type = _class_name(type(modules[node.target]))
    dtype, shape = _value(node, values)
    return {"index": index, "name": node.name, "op": node.op, "target": target_name(node),
            "scope": scope.path, "scope_type": scope_type, "inputs": _inputs(node), "dtype": dtype, "shape": shape,
            "qconfig": None, "quant": _quant(node, modules)}


def _class_name(cls: type) -> str:
    short = f"torch.nn.{cls.__name__}"
    return short if cls.__module__.startswith("torch.nn.modules") else f"{cls.__module__}.{cls.__qualname__}"


def _inputs(node: fx.Node) -> list[str]:
    seen: list[str] = []
    for arg in node.all_input_nodes:
        if arg.name not in seen:
            seen.append(arg.name)
    return seen


def _run(gm: fx.GraphModule, example_inputs: tuple) -> dict:
    values: dict = {}

    class _Capture(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            values[node.name] = result = super().run_node(node)
            return result

    with torch.no_grad():
        _Capture(gm).run(*example_inputs)
    return values


def _value(node: fx.Node, values: dict) -> tuple[Optional[str], Optional[list]]:
    if node.name in values:
        value = values[node.name]
        if isinstance(value, torch.Tensor):
            return _dtype_name(value.dtype), list(value.shape)
        return None, None
    recorded = node.meta.get("fxq_value")
    if recorded is None or recorded.dtype is None:
        return None, None
    return _dtype_name(recorded.dtype), list(recorded.shape) if recorded.shape is not None else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _quant(node: fx.Node, modules: dict) -> Optional[dict]:
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, ObserverBase):
            return _observer_quant(module)
        if isinstance(module, QuantizedModule):
            return _quant_dict("quint8", None, None, module.scale, module.zero_point)
        return None
    if node.op != "call_function":
        return None
    if node.target in _QUANTIZE_CALLS:
        dtype = node.args[-1]
        return _quant_dict(_dtype_name(dtype), None, None, _constant(node.args[1], modules, node),
                           _constant(node.args[2], modules, node))
    attrs = {arg.target.rsplit("_", 1)[-1]: arg for arg in node.all_input_nodes
             if arg.op == "get_attr" and arg.target.endswith(("_scale", "_point"))}
    if "scale" in attrs and "point" in attrs:  # a quantized kernel taking its output qparams
        return _quant_dict("quint8", None, None, _constant(attrs["scale"], modules, node),
                           _constant(attrs["point"], modules, node))
    return None


def _observer_quant(observer: ObserverBase) -> dict:
    low, high = getattr(observer, "min_val", None), getattr(observer, "max_val", None)
    scale = zero_point = None
    if observer.has_data():
        scale, zero_point = observer.calculate_qparams()
    return _quant_dict(_dtype_name(observer.dtype), low, high, scale, zero_point)


def _constant(arg: Any, modules: dict, node: fx.Node) -> Any:
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        return attribute_value(node.graph.owning_module, arg.target)
    return arg


def _quant_dict(dtype: str, low: Any, high: Any, scale: Any, zero_point: Any) -> dict:
    return {"dtype": dtype, "min": _number(low, float), "max": _number(high, float),
            "scale": _number(scale, float), "zero_point": _number(zero_point, int)}


def _number(value: Any, kind: type) -> Any:
    """A Python number, a list of them (per channel), or None; floats rounded so dumps are stable text."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return None
        if value.numel() > 1:
            return [_round(kind(v)) for v in value.flatten().tolist()]
        value = value.item()
    if kind is float and abs(float(value)) == float("inf"):
        return None  # an observer that saw nothing still holds +-inf
    return _round(kind(value))


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value
