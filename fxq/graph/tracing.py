"""Which tracer makes prepare's graph: fxq's symbolic tracer, torch.export, or the graph the user gave.

``prepare_custom_config={"tracer": ...}`` chooses:

* ``"auto"`` (the default): fxq's symbolic tracer; when it fails (transformers 5 models, data-dependent Python),
  torch.export in non-strict mode with the batch dimension dynamic. One log line (logger ``fxq``) says which ran.
* ``"fx"``: only fxq's tracer (its :class:`~fxq.graph.tracer.TraceError` names the module and the fix).
* ``"export"``: only torch.export.

A GraphModule (symbolically traced or exported) is taken as it is; so is a ``torch.export.ExportedProgram``, through
its ``.module()``.

    >>> import torch
    >>> from fxq.config import PrepareCustomConfig
    >>> gm, tracer = trace_model(torch.nn.Linear(2, 2).eval(), PrepareCustomConfig(), (torch.randn(1, 2),))
    >>> tracer
    'fx'
"""
from __future__ import annotations

import logging
from typing import Any

from torch import fx, nn

from fxq.graph.exported import adopt_exported, export_module, is_exported
from fxq.graph.leaves import trace_for_prepare
from fxq.graph.tracer import TraceError

log = logging.getLogger("fxq")


class TracingError(TraceError):
    """Neither tracer could make a graph of the model: the message has both causes and the fix for each.

    A :class:`~fxq.graph.tracer.TraceError` (``except fxq.TraceError`` still catches it), with the symbolic tracer's
    ``module_path``, ``module_type``, ``source`` and ``reason`` when that one ran, and ``export_error``."""

    def __init__(self, message: str, fx_error: Any, export_error: BaseException):
        RuntimeError.__init__(self, message)
        self.module_path = getattr(fx_error, "module_path", "")
        self.module_type = getattr(fx_error, "module_type", "")
        self.source = getattr(fx_error, "source", "")
        self.reason = getattr(fx_error, "reason", "")
        self.export_error = export_error


def trace_model(model: nn.Module, config: Any, example_inputs: tuple) -> tuple:
    """(GraphModule, tracer name: "fx", "export" or "given") for ``model`` (a copy the caller owns)."""
    if is_exported(model):  # scopes and module classes go on the plain GraphModule adopt_exported makes
        _check_config_for_export(config, "the model is an exported graph")
        return trace_for_prepare(adopt_exported(model), config), "export"
    if isinstance(model, fx.GraphModule):
        return trace_for_prepare(model, config), "given"  # taken as it is
    strategy = getattr(config, "tracer", "auto")
    if strategy == "export":
        return _export(model, config, example_inputs, fx_error=None), "export"
    try:
        gm = trace_for_prepare(model, config)
    except TraceError as fx_error:
        if strategy == "fx" or _module_keys(config):
            raise  # leaves and custom modules are fx's to honour: its error names the next leaf to add
        log.info("fxq: symbolic tracing failed (%s); tracing %s with torch.export instead",
                 fx_error.reason, type(model).__name__)
        return _export(model, config, example_inputs, fx_error), "export"
    log.info("fxq: traced %s with fxq's symbolic tracer", type(model).__name__)
    return gm, "fx"


def _export(model: nn.Module, config: Any, example_inputs: tuple, fx_error: Any) -> fx.GraphModule:
    _check_config_for_export(config, "prepare_custom_config={'tracer': 'export'}")
    try:
        gm = export_module(model, example_inputs)
        log.info("fxq: traced %s with torch.export (non-strict, batch dimension dynamic)", type(model).__name__)
    except Exception as dynamic_error:
        gm = _export_static(model, example_inputs, fx_error, dynamic_error)
    return trace_for_prepare(adopt_exported(gm), config)  # scopes from nn_module_stack


def _export_static(model: nn.Module, example_inputs: tuple, fx_error: Any, dynamic_error: BaseException):
    """A forward that fixes its batch size (a reshape to a constant) exports only with static shapes: the quantized
    model then runs at the example's batch size alone, which the log says."""
    try:
        gm = export_module(model, example_inputs, dynamic_batch=False)
    except Exception as export_error:
        raise TracingError(_both_failed(model, fx_error, export_error), fx_error, export_error) from export_error
    reason = (str(dynamic_error).strip().splitlines() or [""])[0]
    log.warning("fxq: %s exports only with static shapes (a dynamic batch dimension failed: %s); the quantized model "
                "runs at the example inputs' shapes only", type(model).__name__, reason)
    return gm


_MODULE_KEYS = (("standalone_module_names", "standalone_module_name"),
                ("standalone_module_classes", "standalone_module_class"),
                ("float_to_observed_mapping", "float_to_observed_custom_module_class"),
                ("non_traceable_module_names", "non_traceable_module_name"),
                ("non_traceable_module_classes", "non_traceable_module_class"),
                ("non_traceable_module_mpaths", "non_traceable_module_mpath"))


def _module_keys(config: Any) -> list:
    return [key for attribute, key in _MODULE_KEYS if getattr(config, attribute, None)]


def _check_config_for_export(config: Any, why: str) -> None:
    """Leaves, custom and standalone modules are module calls; torch.export traces through every module, so an
    aten graph cannot honour them: say so rather than quantize something else than asked."""
    keys = _module_keys(config)
    if keys:
        raise NotImplementedError(
            f"{why}, but prepare_custom_config sets {', '.join(keys)}: those keep modules as calls, and a "
            "torch.export graph has none (export traces through every module). Fix: trace with fxq's tracer, "
            "prepare_custom_config={'tracer': 'fx', ...}, making leaves of what does not trace "
            "('non_traceable_module_name'), or drop those keys to quantize the exported graph")


def _both_failed(model: nn.Module, fx_error: Any, export_error: BaseException) -> str:
    name = type(model).__name__
    first_line = (str(export_error).strip().splitlines() or [""])[0]
    export_part = (f"torch.export (non-strict, batch dimension dynamic) failed: {type(export_error).__name__}: "
                   f"{first_line}\n  fix: make the forward exportable (torch.export's error above names the line; "
                   "data-dependent control flow needs torch.cond or a fixed shape), or pass example_inputs whose "
                   "shapes the model accepts at any batch size")
    if fx_error is None:
        return (f"cannot trace {name}: {export_part}\n  or trace with fxq's tracer: "
                "prepare_custom_config={'tracer': 'fx'}")
    return f"cannot trace {name} with either tracer.\n{fx_error}\n{export_part}"


__all__ = ["TracingError", "trace_model"]
