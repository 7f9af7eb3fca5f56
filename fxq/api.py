"""prepare_fx, convert_fx, convert_to_reference_fx and fuse_fx: normalise configs, copy, trace, run the passes.

The signatures are PyTorch AO's quantize_fx's, so switching is one import line::

    import fxq
    prepared = fxq.prepare_fx(model.eval(), fxq.get_default_qconfig_mapping("x86"), (torch.randn(1, 3, 32, 32),))
    for batch in calibration_batches:
        prepared(batch)
    quantized = fxq.convert_fx(prepared)
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import torch
from torch import fx, nn

from fxq import node_meta, provenance
from fxq.config import ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig, QConfigMapping
from fxq.equalization import apply_equalization_config
from fxq.gc_pause import collector_paused
from fxq.lazy_code import make_eager
from fxq.leaves import trace_for_prepare
from fxq.module_copy import copy_module
from fxq.passes import pipeline
from fxq.passes.context import PassContext
from fxq.registry import check_configs
from fxq.state import FxqState, clear_state, get_state, set_state
from fxq.tracer import preserve_attributes

ConfigLike = Union[dict, None, Any]


@collector_paused()
def prepare_fx(model: nn.Module, qconfig_mapping: ConfigLike, example_inputs: tuple,
               prepare_custom_config: ConfigLike = None, _equalization_config: ConfigLike = None,
               backend_config: Any = None, debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Trace a copy of ``model`` and insert observers where ``qconfig_mapping`` asks for int8.

    ``model`` is never modified. ``example_inputs`` is a tuple of the forward's arguments; the model runs on it
    once to learn shapes and dtypes. ``debug_dump_dir`` (or ``FXQ_DUMP_DIR``) writes the graph after each pass.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    >>> _ = prepared(torch.randn(8, 4))      # calibrate
    >>> quantized = fxq.convert_fx(prepared)
    >>> quantized(torch.randn(2, 4)).shape
    torch.Size([2, 4])
    """
    _reject_unsupported(None, backend_config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare_fx expects an nn.Module, got {type(model).__name__}")
    if get_state(model) is not None:
        raise ValueError("prepare_fx got a model that prepare_fx already returned (it holds fxq's observers); "
                         "calibrate it and call fxq.convert_fx on it, or pass the original float model to prepare_fx")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of the forward's arguments, got "
                        f"{type(example_inputs).__name__}; write example_inputs=(x,) for one input")
    mapping = QConfigMapping.coerce(qconfig_mapping)
    model, equalization_mapping = apply_equalization_config(model, _equalization_config)  # CLE returns a copy
    prepare_config = PrepareCustomConfig.coerce(prepare_custom_config)
    check_configs(prepare_config)
    gm = _trace_copy(model, prepare_config)
    state = FxqState(prepare_config=prepare_config)
    ctx = PassContext(qconfig_mapping=mapping, prepare_config=prepare_config, example_inputs=example_inputs,
                      state=state, equalization_mapping=equalization_mapping)
    ctx.warnings.extend(_unknown_module_names(mapping, model))
    gm = pipeline.run_passes(gm, pipeline.PREPARE, ctx, debug_dump_dir, "prepare")
    set_state(gm, state)
    node_meta.keep(gm)
    _emit_warnings(ctx)
    return gm


@collector_paused()
def convert_fx(graph_module: fx.GraphModule, convert_custom_config: ConfigLike = None,
               _remove_qconfig: bool = True, qconfig_mapping: ConfigLike = None, backend_config: Any = None,
               debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Turn a calibrated model from :func:`prepare_fx` into an int8 model running quantized kernels.

    The prepared model is left as it was, so it can be converted again (the result is bit-identical).
    """
    return _convert(graph_module, convert_custom_config, pipeline.CONVERT, debug_dump_dir, backend_config)


@collector_paused()
def convert_to_reference_fx(graph_module: fx.GraphModule, convert_custom_config: ConfigLike = None,
                            _remove_qconfig: bool = True, qconfig_mapping: ConfigLike = None,
                            backend_config: Any = None, debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """The reference representation: ``quantize_per_tensor -> dequantize -> float op -> quantize_per_tensor``,
    with weighted modules replaced by reference modules (float ops on quantize-dequantized weights)."""
    return _convert(graph_module, convert_custom_config, pipeline.REFERENCE_CONVERT, debug_dump_dir, backend_config)


@collector_paused()
def fuse_fx(model: nn.Module, fuse_custom_config: ConfigLike = None, backend_config: Any = None) -> fx.GraphModule:
    """Trace a copy of ``model`` (eval mode) and fuse conv/linear with batch norm and relu into float modules.

    ``{"fold_linear_chains": True}`` also folds linear -> linear chains (see passes/fold_linear_chains.py).

    >>> import torch, fxq
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.ReLU()).eval()
    >>> type(fxq.fuse_fx(m).get_submodule("0")).__name__
    'ConvReLU2d'
    """
    _reject_unsupported(None, backend_config)
    config = FuseCustomConfig.coerce(fuse_custom_config)
    gm = _trace_copy(model, PrepareCustomConfig().set_preserved_attributes(config.preserved_attributes))
    from fxq.passes import fold_linear_chains, fuse
    ctx = PassContext()
    if config.fold_linear_chains:
        gm = fold_linear_chains.run(gm, ctx)
    gm = make_eager(fuse.run(gm, ctx))
    _emit_warnings(ctx)
    return gm


def _convert(graph_module: fx.GraphModule, convert_custom_config: ConfigLike, passes: list,
             debug_dump_dir: Optional[str], backend_config: Any) -> fx.GraphModule:
    _reject_unsupported(None, backend_config)
    state = get_state(graph_module)
    if state is None and getattr(graph_module, provenance.ATTRIBUTE, None) is not None:
        raise ValueError("convert_fx got a model that convert_fx already returned; it is quantized already. To "
                         "convert again, call convert_fx on the prepared (calibrated) model, which it leaves as it was")
    if state is None:
        raise ValueError(
            f"convert_fx expects the model returned by fxq.prepare_fx (then calibrated); got a "
            f"{type(graph_module).__name__} without fxq's observers. Call fxq.prepare_fx(model, qconfig_mapping, "
            f"example_inputs) first")
    config = ConvertCustomConfig.coerce(convert_custom_config)
    check_configs(convert_config=config)
    node_meta.restore(graph_module)  # a prepared model loaded with torch.load lost its node scopes
    gm = copy_module(graph_module)
    ctx = PassContext(convert_config=config, state=state)
    gm = pipeline.run_passes(gm, passes, ctx, debug_dump_dir, "convert")
    # the attributes prepare was asked to keep stay on the converted model too (PyTorch AO drops them here)
    kept = getattr(state.prepare_config, "preserved_attributes", [])
    preserve_attributes(gm, graph_module, [*kept, *config.preserved_attributes])
    clear_state(gm)
    node_meta.keep(gm)
    _emit_warnings(ctx)
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


def _trace_copy(model: nn.Module, prepare_config: PrepareCustomConfig) -> fx.GraphModule:
    model = copy_module(model)
    gm = trace_for_prepare(model, prepare_config)  # leaf rules, auto leaf; a GraphModule is not traced again
    preserve_attributes(gm, model, prepare_config.preserved_attributes)
    gm.training = model.training
    return gm


SUPPORTED_TORCH = ((2, 3), (2, 13))  # oldest and newest torch (major, minor) fxq is tested with
_newer_torch_warned = []


def check_torch_version(version: str) -> None:
    """Raise on a torch older than fxq supports; warn once on one newer than it was tested with.

    >>> check_torch_version("2.13.0+cpu")
    """
    major_minor = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    (oldest, newest), supported = SUPPORTED_TORCH, "torch {}.{} to {}.{}".format(*SUPPORTED_TORCH[0], *SUPPORTED_TORCH[1])
    if major_minor < oldest:
        raise RuntimeError(f"fxq supports {supported}; this is torch {version}. Upgrade it: "
                           f"pip install 'torch>={oldest[0]}.{oldest[1]}'")
    if major_minor > newest and not _newer_torch_warned:
        _newer_torch_warned.append(version)
        warnings.warn(f"fxq is tested with {supported}; torch {version} is newer. If a quantized kernel or "
                      "torch.fx changed, convert_fx may fail: please report it with the torch version", stacklevel=4)


def _reject_unsupported(equalization_config: Any, backend_config: Any) -> None:
    check_torch_version(torch.__version__)
    if backend_config is not None:
        raise NotImplementedError("backend_config: fxq does not take PyTorch AO BackendConfig objects; register ops "
                                  "with fxq.patterns instead, or leave backend_config=None")


_WARNINGS_SHOWN = 10  # a 4000-node model with no calibration would otherwise print one line per observer


def _emit_warnings(ctx: PassContext) -> None:
    if ctx.warnings:
        shown = ctx.warnings[:_WARNINGS_SHOWN]
        rest = len(ctx.warnings) - len(shown)
        more = f"; ... and {rest} more (debug_dump_dir=... writes them all to warnings.txt)" if rest else ""
        warnings.warn("fxq: " + "; ".join(shown) + more, stacklevel=3)
