"""torch.export's graphs as a second way in: export a model, recognise an exported one, adopt it for prepare.

``torch.export.export(model, args).module()`` is an aten-level GraphModule: ``aten.linear(x, w, b)`` on weights read
with ``get_attr``, the module tree kept only as plain ``nn.Module`` holders of the parameters, the classes and
paths of the modules in each node's ``nn_module_stack``, and the model's input and output structure (a dict, a
transformers ModelOutput) in the graph's pytree code generator, which fxq's passes leave in place. The op families
of ``fxq.patterns.ops`` name the aten spellings, so the same tables quantize it.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    >>> gm = export_module(model, (torch.randn(2, 4),))
    >>> is_exported(gm), [n.target for n in gm.graph.nodes if n.op == "call_function"]
    (True, [<OpOverload(op='aten.linear', overload='default')>, <OpOverload(op='aten.relu', overload='default')>])
"""
from __future__ import annotations

import importlib
from typing import Any, Optional, Union

import torch
from torch import fx, nn

TRACER_KEY = "fxq_tracer"  # gm.meta key: "fx" or "export", the tracer that produced the graph prepare ran on


def is_exported_program(model: Any) -> bool:
    """True for a ``torch.export.ExportedProgram`` (prepare_fx takes it and quantizes its ``.module()``)."""
    exported_program = getattr(getattr(torch, "export", None), "ExportedProgram", None)
    return exported_program is not None and isinstance(model, exported_program)


def is_exported(gm: nn.Module) -> bool:
    """True for an aten-level GraphModule: one whose calls are aten ops (torch.export's ``.module()``)."""
    if not isinstance(gm, fx.GraphModule):
        return False
    return any(node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
               for node in gm.graph.nodes)


def export_module(model: nn.Module, example_inputs: tuple, dynamic_batch: bool = True) -> fx.GraphModule:
    """``torch.export.export`` in non-strict mode, by default with the batch dimension (dim 0 of every tensor input)
    dynamic, so the quantized model runs at other batch sizes; returns the exported program's module.

    A batch dimension of size 1 cannot be dynamic (export specialises it), so the inputs are repeated to batch 2
    for tracing when they come with batch 1.
    """
    if not dynamic_batch:
        return torch.export.export(model, tuple(example_inputs), strict=False).module()
    args = tuple(_batch_of_two(value) for value in example_inputs)
    batch = torch.export.Dim("batch")
    shapes = tuple(_dynamic_batch(value, batch) for value in args)
    return torch.export.export(model, args, dynamic_shapes=shapes, strict=False).module()


def _batch_of_two(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1:
        return value.expand(2, *value.shape[1:]).clone()
    return value


def _dynamic_batch(value: Any, batch: Any) -> Any:
    """A tensor's dynamic-shape spec: dim 0 is the batch. Non-tensors (ints, None) are static."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return {0: batch}
    return None


def adopt_exported(gm: fx.GraphModule) -> fx.GraphModule:
    """A plain GraphModule with the exported graph, for fxq's passes.

    ``.module()`` returns a module that cannot be pickled (its hooks and the guard module are local functions), so
    ``torch.save`` of the quantized model would fail: the graph moves to a plain GraphModule holding the same
    attributes, with its pytree code generator (the input and output structure). The guard call is dropped with
    the input-constraint hook; the aten ops check shapes themselves when they run. The result is in eval mode:
    export records eval-mode batch norm and dropout in the graph.
    """
    if type(gm) is fx.GraphModule:
        return gm  # adopted already
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and not node.users and node.target == "_guards_fn":
            graph.erase_node(node)
    # torch.load re-traces the saved code with the graph's tracer class: export's needs arguments it cannot give
    graph._tracer_cls, graph._tracer_extras = None, {}
    plain = fx.GraphModule(gm, graph, type(gm).__name__)
    plain.meta.update(getattr(gm, "meta", {}))
    for module in plain.modules():
        module.training = False
    return plain


def class_named(name: Union[str, type]) -> Optional[type]:
    """The class a ``nn_module_stack`` entry names ("torch.nn.modules.linear.Linear"), or None when it does not
    import (a class defined inside a function)."""
    if isinstance(name, type):
        return name
    module_name, _, attribute_path = str(name).rpartition(".")
    while module_name:
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attribute_path = f"{head}.{attribute_path}"
            continue
        for attribute in attribute_path.split("."):
            found = getattr(found, attribute, None)
        return found if isinstance(found, type) else None
    return None


__all__ = ["TRACER_KEY", "adopt_exported", "class_named", "export_module", "is_exported", "is_exported_program"]
