"""The three flows behind the public API — prepare, convert, fuse — on a copy of the model: normalise the configs,
trace, run the pass lists of :mod:`fxq.passes.pipeline`, keep fxq's state and node metadata on the result.

``fxq.api`` checks the user's arguments and calls these; passes that handle a submodule on its own (standalone
modules) and the debugging helpers call them too, so nothing below the API imports it.

    >>> import torch
    >>> from fxq.passes import flows
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    >>> prepared = flows.prepare(model, {"": None}, (torch.randn(1, 4),))
    >>> type(flows.convert(prepared).get_submodule("0")).__name__   # nothing was asked for: stays float
    'Linear'
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

from torch import fx, nn

from fxq.config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig, QConfigMapping
from fxq.config.lowering import resolve_lowering
from fxq.config.registry import check_configs
from fxq.debug import provenance
from fxq.equalization import apply_equalization_config
from fxq.equalization.smoothing import SmoothQuant
from fxq.graph import node_meta
from fxq.graph.gc_pause import collector_paused
from fxq.graph.lazy_code import make_eager
from fxq.graph.exported import TRACER_KEY
from fxq.graph.tracing import trace_model
from fxq.graph.module_copy import copy_module, own_parameters
from fxq.graph.qat_module import as_qat_module
from fxq.graph.state import FxqState, clear_state, get_state, set_state
from fxq.graph.tracer import preserve_attributes
from fxq.passes import fold_linear_chains, fuse, pipeline
from fxq.passes.context import PassContext


def _check_graph_unchanged(graph_module: fx.GraphModule, state) -> None:
    """torch.load rebuilds a GraphModule by tracing its code again. A symbolically traced graph comes back node for
    node (renamed at most, which get_state maps back); a torch.export graph does not (its pytree plumbing and size
    reads trace differently), and its qconfigs would then match nothing: say so instead of quantizing nothing."""
    expected, found = len(state.node_names or ()), len(graph_module.graph.nodes)
    if expected and expected != found:
        raise ValueError(
            f"convert_fx: this prepared model's graph is not the one prepare_fx made ({found} nodes, prepare_fx left "
            f"{expected}); torch.load traces a saved GraphModule's code again, which changes a torch.export graph, so "
            "its qconfigs match no node. Save prepared.state_dict() instead, prepare the float model again with the "
            "same call, load_state_dict() into it and convert that (the observers' statistics travel in the "
            "state_dict).")


@collector_paused()
def prepare(model: nn.Module, qconfig_mapping: Any, example_inputs: tuple, prepare_custom_config: Any = None,
            equalization_config: Any = None, debug_dump_dir: Optional[str] = None, qat: bool = False) -> fx.GraphModule:
    """Trace a copy of ``model`` and run the prepare passes; the observed GraphModule carries fxq's state.

    ``qat``: fuse keeping batch norm trainable, swap weighted layers for QAT modules, and return a
    :class:`~fxq.graph.qat_module.QATGraphModule` (its switches as methods)."""
    mapping = QConfigMapping.coerce(qconfig_mapping)
    model, equalization_mapping = apply_equalization_config(model, equalization_config)  # CLE returns a copy
    prepare_config = PrepareCustomConfig.coerce(prepare_custom_config)
    check_configs(prepare_config)
    gm, tracer = trace_copy(model, prepare_config, example_inputs)
    if qat and tracer == "export":
        raise NotImplementedError("prepare_qat_fx on a torch.export graph: QAT needs module-level batch norm and "
                                  "weights, which an aten-level graph does not have; pass the nn.Module with "
                                  "prepare_custom_config={'tracer': 'fx'} (leaves for the parts that do not trace)")
    if qat:  # training steps write into the parameters: the copy's must not share the user's storage
        own_parameters(gm)
    state = FxqState(prepare_config=prepare_config)
    ctx = PassContext(qconfig_mapping=mapping, prepare_config=prepare_config, example_inputs=example_inputs,
                      state=state, equalization_mapping=equalization_mapping, qat=qat,
                      smoothing=equalization_config if isinstance(equalization_config, SmoothQuant) else None,
                      tracer=tracer)
    ctx.warnings.extend(_unknown_module_names(mapping, model))
    gm = pipeline.run_passes(gm, pipeline.PREPARE, ctx, debug_dump_dir, "prepare")
    gm.meta[TRACER_KEY] = tracer
    set_state(gm, state)
    node_meta.keep(gm)
    emit_warnings(ctx)
    return as_qat_module(gm) if qat else gm


@collector_paused()
def convert(graph_module: fx.GraphModule, convert_custom_config: Any = None,
            passes: Sequence[pipeline.Pass] = pipeline.CONVERT, debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Run ``passes`` (the convert list, or the reference one) on a copy of a prepared model."""
    state = get_state(graph_module)
    if state is None and getattr(graph_module, provenance.ATTRIBUTE, None) is not None:
        raise ValueError("convert_fx got a model that convert_fx already returned; it is quantized already. To "
                         "convert again, call convert_fx on the prepared (calibrated) model, which it leaves as it was")
    if state is None:
        raise ValueError(
            f"convert_fx expects the model returned by fxq.prepare_fx (then calibrated); got a "
            f"{type(graph_module).__name__} without fxq's observers. Call fxq.prepare_fx(model, qconfig_mapping, "
            f"example_inputs) first")
    _check_graph_unchanged(graph_module, state)
    config = ConvertCustomConfig.coerce(convert_custom_config)
    check_configs(convert_config=config)
    node_meta.restore(graph_module)  # a prepared model loaded with torch.load lost its node scopes
    gm = copy_module(graph_module)
    ctx = PassContext(convert_config=config, state=state, lowering=resolve_lowering(config.lowering))
    gm = pipeline.run_passes(gm, passes, ctx, debug_dump_dir, "convert")
    # the attributes prepare was asked to keep stay on the converted model too (PyTorch AO drops them here)
    kept = getattr(state.prepare_config, "preserved_attributes", [])
    preserve_attributes(gm, graph_module, [*kept, *config.preserved_attributes])
    clear_state(gm)
    node_meta.keep(gm)
    emit_warnings(ctx)
    return gm


@collector_paused()
def fuse_model(model: nn.Module, fuse_custom_config: Any = None) -> fx.GraphModule:
    """Trace a copy of ``model`` and fuse it (and fold linear chains when the config asks)."""
    config = FuseCustomConfig.coerce(fuse_custom_config)
    symbolic = PrepareCustomConfig().set_preserved_attributes(config.preserved_attributes).set_tracer_strategy("fx")
    gm, _ = trace_copy(model, symbolic)
    ctx = PassContext()
    if config.fold_linear_chains:
        gm = fold_linear_chains.run(gm, ctx)
    gm = make_eager(fuse.run(gm, ctx))
    emit_warnings(ctx)
    return gm


def _unknown_module_names(mapping: QConfigMapping, model: nn.Module) -> list:
    """set_module_name keys naming no submodule: a typo there silently leaves the intended layer as it was."""
    keys = list(mapping.module_name_qconfigs) + [key[0] for key in mapping.module_name_object_type_order_qconfigs]
    if not keys:
        return []
    names = {name for name, _ in model.named_modules()}
    return [f"QConfigMapping.set_module_name('{key}', ...) names no module of the model (its modules include "
            f"{', '.join(sorted(names - {''})[:5]) or 'none'}); check the path"
            for key in dict.fromkeys(keys) if key not in names]


def trace_copy(model: nn.Module, prepare_config: PrepareCustomConfig, example_inputs: tuple = ()) -> tuple:
    """(GraphModule, tracer name) of a copy of ``model``, traced as the config's ``tracer`` key says (see
    fxq.graph.tracing) with its leaf rules; preserved attributes and the training flag follow."""
    model = copy_module(model)
    gm, tracer = trace_model(model, prepare_config, example_inputs)
    preserve_attributes(gm, model, prepare_config.preserved_attributes)
    if tracer != "export":  # an exported graph is in eval mode whatever its holder module says
        gm.training = model.training
    return gm, tracer


_WARNINGS_SHOWN = 10  # a 4000-node model with no calibration would otherwise print one line per observer


def emit_warnings(ctx: PassContext) -> None:
    """One UserWarning with what the passes reported (the first few, and a count)."""
    if ctx.warnings:
        shown = ctx.warnings[:_WARNINGS_SHOWN]
        rest = len(ctx.warnings) - len(shown)
        more = f"; ... and {rest} more (debug_dump_dir=... writes them all to warnings.txt)" if rest else ""
        warnings.warn("fxq: " + "; ".join(shown) + more, stacklevel=4)
