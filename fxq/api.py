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

from fxq.graph.exported import is_exported_program
from fxq.graph.state import get_state
from fxq.passes import flows, pipeline

ConfigLike = Union[dict, None, Any]


def prepare_fx(model: Union[nn.Module, Any], qconfig_mapping: ConfigLike, example_inputs: tuple,
               prepare_custom_config: ConfigLike = None, _equalization_config: ConfigLike = None,
               backend_config: Any = None, debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Trace a copy of ``model`` and insert observers where ``qconfig_mapping`` asks for int8.

    ``model`` is never modified. ``example_inputs`` is a tuple of the forward's arguments; the model runs on it
    once to learn shapes and dtypes. ``debug_dump_dir`` (or ``FXQ_DUMP_DIR``) writes the graph after each pass.

    ``model`` may also be a ``torch.export.ExportedProgram`` or its ``.module()``: the aten-level graph is quantized
    through the same tables. A model fxq's symbolic tracer cannot trace is exported (non-strict, batch dimension
    dynamic) on its own; ``prepare_custom_config={"tracer": "fx" | "export" | "auto"}`` chooses (fxq.graph.tracing).

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    >>> _ = prepared(torch.randn(8, 4))      # calibrate
    >>> quantized = fxq.convert_fx(prepared)
    >>> quantized(torch.randn(2, 4)).shape
    torch.Size([2, 4])
    """
    _reject_unsupported(None, backend_config)
    if is_exported_program(model):
        model = model.module()
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare_fx expects an nn.Module or a torch.export.ExportedProgram, "
                        f"got {type(model).__name__}")
    if get_state(model) is not None:
        raise ValueError("prepare_fx got a model that prepare_fx already returned (it holds fxq's observers); "
                         "calibrate it and call fxq.convert_fx on it, or pass the original float model to prepare_fx")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of the forward's arguments, got "
                        f"{type(example_inputs).__name__}; write example_inputs=(x,) for one input")
    return flows.prepare(model, qconfig_mapping, example_inputs, prepare_custom_config, _equalization_config,
                         debug_dump_dir)


def prepare_qat_fx(model: nn.Module, qconfig_mapping: ConfigLike, example_inputs: tuple,
                   prepare_custom_config: ConfigLike = None, backend_config: Any = None,
                   debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Prepare a copy of ``model`` (in training mode) for quantization-aware training.

    Conv / linear + batch norm (+ relu) fuse into QAT modules whose batch norm keeps training; weighted layers
    fake-quantize their weights with ``qconfig.weight()``; fake-quant modules (``qconfig.activation()``) go where
    prepare_fx puts observers. Train the result as the float model, then ``fxq.convert_fx`` it: convert freezes
    every quantizer first and uses the qparams training last used, so the int8 model computes what the
    fake-quant model computes in eval mode. The result has the switches as methods (``prepared.disable_observer()``,
    ``prepared.freeze_bn_stats()``, with an optional mpath query).

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).train()
    >>> prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(2, 1, 8, 8),))
    >>> loss = prepared(torch.randn(4, 1, 8, 8)).sum(); loss.backward()      # a training step
    >>> quantized = fxq.convert_fx(prepared.eval())
    >>> quantized(torch.randn(1, 1, 8, 8)).shape
    torch.Size([1, 4, 6, 6])
    """
    _reject_unsupported(None, backend_config)
    if is_exported_program(model):
        model = model.module()  # flows.prepare then says why QAT needs the nn.Module
    _check_arguments("prepare_qat_fx", model, example_inputs)
    return flows.prepare(model, qconfig_mapping, example_inputs, prepare_custom_config, None, debug_dump_dir,
                         qat=True)


def _check_arguments(caller: str, model: Any, example_inputs: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller} expects an nn.Module, got {type(model).__name__}")
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tuple of the forward's arguments, got "
                        f"{type(example_inputs).__name__}; write example_inputs=(x,) for one input")


def convert_fx(graph_module: fx.GraphModule, convert_custom_config: ConfigLike = None,
               _remove_qconfig: bool = True, qconfig_mapping: ConfigLike = None, backend_config: Any = None,
               debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """Turn a calibrated model from :func:`prepare_fx` into an int8 model running quantized kernels.

    The prepared model is left as it was, so it can be converted again (the result is bit-identical).
    """
    _reject_unsupported(None, backend_config)
    return flows.convert(graph_module, convert_custom_config, pipeline.CONVERT, debug_dump_dir)


def convert_to_reference_fx(graph_module: fx.GraphModule, convert_custom_config: ConfigLike = None,
                            _remove_qconfig: bool = True, qconfig_mapping: ConfigLike = None,
                            backend_config: Any = None, debug_dump_dir: Optional[str] = None) -> fx.GraphModule:
    """The reference representation: ``quantize_per_tensor -> dequantize -> float op -> quantize_per_tensor``,
    with weighted modules replaced by reference modules (float ops on quantize-dequantized weights)."""
    _reject_unsupported(None, backend_config)
    return flows.convert(graph_module, convert_custom_config, pipeline.REFERENCE_CONVERT, debug_dump_dir)


def fuse_fx(model: nn.Module, fuse_custom_config: ConfigLike = None, backend_config: Any = None) -> fx.GraphModule:
    """Trace a copy of ``model`` (eval mode) and fuse conv/linear with batch norm and relu into float modules.

    ``{"fold_linear_chains": True}`` also folds linear -> linear chains (see passes/fold_linear_chains.py).

    >>> import torch, fxq
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.ReLU()).eval()
    >>> type(fxq.fuse_fx(m).get_submodule("0")).__name__
    'ConvReLU2d'
    """
    _reject_unsupported(None, backend_config)
    return flows.fuse_model(model, fuse_custom_config)


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
