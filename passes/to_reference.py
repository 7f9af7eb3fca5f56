"""Turn a calibrated observed graph into the reference representation.

Every activation observer becomes ``quantize_per_tensor(x, scale, zero_point, dtype) -> dequantize``; weighted
modules whose input and output are quantized become reference modules (float op on a quantize-dequantized
weight); functional weights get ``quantize_per_channel -> dequantize``. Observers that saw no data are removed
with a warning, which leaves the op they observed in float instead of emitting garbage scales.
Requires: an observed graph (insert_observers) after calibration. Guarantees: no observer left.
Position: first in convert; convert_to_reference_fx stops after it.

Before / after::

    x -> obs0 -> linear -> obs1 -> out
    x -> quantize_per_tensor -> dequantize -> linear(reference) -> quantize_per_tensor -> dequantize -> out
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.graph.modes import DYNAMIC, DYNAMIC_FP16, STATIC, WEIGHT_ONLY
from fxq.nn import reference, reference_recurrent
from fxq.nn.quantized import weight_only
from fxq.observers import ObserverBase
from fxq.observers.fake_quantize import FakeQuantizeBase, is_narrow_range
from fxq.observers.weight_grids import is_grouped
from fxq.passes.context import (PassContext, attribute_value, delete_unused_submodules, free_name,
                                modules_of)
from fxq.patterns.fusion import FUSED_CONSTITUENTS
from fxq.patterns.ops import LINEAR_FUNCTIONS, aten

_REFERENCE = {nn.Linear: reference.Linear, nn.Conv1d: reference.Conv1d, nn.Conv2d: reference.Conv2d,
              nn.Conv3d: reference.Conv3d, nn.Embedding: reference.Embedding,
              nn.ConvTranspose1d: reference.ConvTranspose1d, nn.ConvTranspose2d: reference.ConvTranspose2d,
              nn.ConvTranspose3d: reference.ConvTranspose3d}
_RECURRENT = {nn.LSTM: reference_recurrent.LSTM, nn.GRU: reference_recurrent.GRU}  # dynamic mode only
_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    _one_module_per_call(gm, ctx, modules)
    observers = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], ObserverBase)]
    _swap_weighted_modules(gm, ctx, modules, observers)
    _quantize_functional_weights(gm, ctx)
    qparams_cache: dict = {}
    _warn_when_uncalibrated(ctx, [modules[node.target] for node in observers])
    for node in observers:
        observer = modules[node.target]
        if not _usable(observer):
            _bypass(node, ctx, observer)
            continue
        with gm.graph.inserting_after(node):
            quantized = _quantize_node(gm, node, observer, qparams_cache)
        with gm.graph.inserting_after(quantized):
            dequantized = gm.graph.call_method("dequantize", (quantized,))
        for new in (quantized, dequantized):
            new.meta.update(node.meta)
        if isinstance(observer, FakeQuantizeBase) and is_narrow_range(observer) and not observer.is_per_channel:
            _clamp_to_quant_range(gm, quantized, dequantized, qparams_cache[node.target], observer)
        node.replace_all_uses_with(dequantized)
        gm.graph.erase_node(node)
        ctx.count("quantize/dequantize pairs")
    delete_unused_submodules(gm)
    return gm


def _one_module_per_call(gm: fx.GraphModule, ctx: PassContext, modules: dict) -> None:
    """A module called from several places gets its own name per quantized call: each call has its own
    input/output qparams, so each becomes its own reference (then quantized) module; they share the float
    weight. Without this, lowering the first call would swap the module under the second one too. Where some calls
    stay float (a qconfig of None, the cost model), every quantized call gets a new name, so that the float calls
    keep the float module."""
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    for target, nodes in calls.items():
        quantized = [node for node in nodes if ctx.state.modes.get(node.name) is not None]
        if len(nodes) < 2 or not quantized:
            continue
        first_keeps_name = len(quantized) == len(nodes)
        for node in quantized[1:] if first_keeps_name else quantized:
            base, index = target.replace(".", "_") + "_call", 1
            while f"{base}{index}" in modules:
                index += 1
            gm.add_submodule(f"{base}{index}", modules[target])
            modules[f"{base}{index}"] = modules[target]
            node.target = f"{base}{index}"
            ctx.count("modules called from several places split per call")


def _warn_when_uncalibrated(ctx: PassContext, observers: list) -> None:
    """One warning saying what to do when no observer can quantize anything (per-observer ones follow)."""
    modes = set(ctx.state.modes.values())
    if not observers and STATIC in modes and not ctx.state.custom_modules and not ctx.state.standalone:
        ctx.warnings.append("the prepared model has no observer, so convert_fx quantizes nothing (prepare_fx's "
                            "warning said why)")
    int8 = [observer for observer in observers if observer.dtype in (torch.quint8, torch.qint8)]
    if int8 and not any(observer.has_data() for observer in int8):
        ctx.warnings.append(f"none of the {len(int8)} observers has seen a batch, so nothing is quantized: "
                            "run the prepared model on representative inputs (prepared(x)) before convert_fx")


def _usable(observer: ObserverBase) -> bool:
    return observer.dtype in (torch.quint8, torch.qint8) and observer.has_data()


def _bypass(node: fx.Node, ctx: PassContext, observer: ObserverBase) -> None:
    if observer.dtype in (torch.quint8, torch.qint8):
        ctx.warnings.append(f"observer '{node.target}' on '{node.args[0]}' saw no data during calibration")
        ctx.count("observers without data (left float)")
    node.replace_all_uses_with(node.args[0])
    node.graph.erase_node(node)


def _quantize_node(gm: fx.GraphModule, node: fx.Node, observer: ObserverBase, cache: dict) -> fx.Node:
    """quantize_per_tensor / quantize_per_channel of the observed value, qparams held in buffers.

    Buffers (not constants in the code) so that a converted model's state_dict carries its activation qparams.
    """
    if node.target not in cache:  # a fake-quant converts with the qparams its forward used, not fresh ones
        cache[node.target] = getattr(observer, "frozen_qparams", observer.calculate_qparams)()
    return _quantize(gm, node.args[0], observer, cache[node.target], node)


def _quantize(gm: fx.GraphModule, value: fx.Node, observer: ObserverBase, qparams: tuple, site: fx.Node) -> fx.Node:
    scale, zero_point = qparams
    scale_node = _register_tensor(gm, f"{value.name}_scale", scale.detach().float(), site)
    zero_point_node = _register_tensor(gm, f"{value.name}_zero_point", zero_point.detach().long(), site)
    if observer.qscheme in _PER_CHANNEL:
        args = (value, scale_node, zero_point_node, observer.ch_axis, observer.dtype)
        return gm.graph.call_function(torch.quantize_per_channel, args)
    args = (value, scale_node, zero_point_node, observer.dtype)
    return gm.graph.call_function(torch.quantize_per_tensor, args)


def _clamp_to_quant_range(gm: fx.GraphModule, quantized: fx.Node, dequantized: fx.Node, qparams: tuple,
                          quantizer: FakeQuantizeBase) -> None:
    """A fake-quant clamps to [quant_min, quant_max] (0..127 under reduce_range, 0..15 at 4 bits) where the int8
    tensor would hold 0..255: clamp the quantized tensor too, so the converted model saturates where training did
    (the outputs of PyTorch AO's QAT and converted models disagree there: pytorch/pytorch#88800, #108639)."""
    scale, zero_point = float(qparams[0]), int(qparams[1])
    bounds = [(quantizer.quant_min - zero_point) * scale, (quantizer.quant_max - zero_point) * scale]
    # buffers, not numbers in the code: a state_dict loaded into another converted model brings its bounds along
    low, high = (_register_tensor(gm, f"{quantized.name}_clamp_{side}", torch.tensor(bound, dtype=torch.float64),
                                  dequantized) for side, bound in zip(("min", "max"), bounds))
    with gm.graph.inserting_before(dequantized):
        low, high = (gm.graph.call_method("item", (bound,)) for bound in (low, high))
        clamped = gm.graph.call_function(torch.clamp, (quantized, low, high))
    clamped.meta.update({k: v for k, v in quantized.meta.items() if not k.startswith("fxq_qtag")})
    dequantized.replace_input_with(quantized, clamped)


def _register_tensor(gm: fx.GraphModule, name: str, tensor: torch.Tensor, user_site: fx.Node) -> fx.Node:
    name = free_name(gm, name)
    gm.register_buffer(name, tensor.reshape(-1) if tensor.numel() > 1 else tensor.reshape(()))
    with gm.graph.inserting_before(user_site):  # before the observer node, so it is defined before its use
        return gm.graph.get_attr(name)


def weight_qparams(observer: ObserverBase, weight: torch.Tensor) -> dict:
    """Run a fresh weight observer on ``weight`` and return the qparams dict reference modules take."""
    observer(weight.detach())
    scale, zero_point = observer.calculate_qparams()
    qparams = {"qscheme": observer.qscheme, "dtype": observer.dtype, "scale": scale, "zero_point": zero_point,
               "quant_min": observer.quant_min, "quant_max": observer.quant_max}
    if observer.qscheme in _PER_CHANNEL:
        qparams["axis"] = observer.ch_axis
    return qparams


def _swap_weighted_modules(gm: fx.GraphModule, ctx: PassContext, modules: dict, observers: list) -> None:
    """Weighted modules that will run with int8 weights become reference modules: static ones read and written
    through observers, and every dynamic / weight-only one (their activations are not observed)."""
    observed = set(observers)
    for node in gm.graph.nodes:
        mode = ctx.state.modes.get(node.name)
        if node.op != "call_module" or mode in (None, DYNAMIC_FP16):
            continue
        if mode == STATIC and not _is_observed_op(node, observed, modules, ctx.state.chain_ends):
            continue
        module = modules[node.target]
        inner = module[0] if type(module) in FUSED_CONSTITUENTS else module
        qconfig = ctx.state.qconfigs.get(node.name)
        if type(inner) in _RECURRENT and mode == DYNAMIC:
            ref = _RECURRENT[type(inner)].from_float(inner, qconfig.weight)
        elif type(inner) in _REFERENCE:
            ref = _reference_module(node, inner, qconfig, mode)
        else:
            continue
        # a weight-only Linear is no Linear for the fused kinds to check; nn.Sequential runs it and the ReLU alike
        fused_type = nn.Sequential if isinstance(ref, weight_only.Linear) else type(module)
        new = fused_type(ref, module[1]) if inner is not module else ref
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, new)
        ctx.count("reference modules")


def _reference_module(node: fx.Node, inner: nn.Module, qconfig, mode: str) -> nn.Module:
    """The reference module of ``inner``; a weight-only Linear for grouped weights (no kernel takes their scales)."""
    quantizer = qconfig.weight()
    if is_grouped(quantizer):
        if type(inner) is not nn.Linear:
            raise NotImplementedError(f"layer '{node.target}' ({type(inner).__name__}): grouped weights convert for "
                                      f"Linear layers only; give it granularity='channel' "
                                      f"(fxq.config.spec.INT4_PER_CHANNEL_WEIGHT)")
        quantizer.check_weight(inner.weight, node.target)
        dtype = torch.float32 if mode == STATIC else qconfig.activation().dtype
        return weight_only.Linear.from_grouped(inner, quantizer, dtype)
    qparams = weight_qparams(quantizer, inner.weight)
    if hasattr(quantizer, "grid_weight"):  # binary: the integers are sign(w), not round(w / scale)
        inner = copy.copy(inner)
        inner._parameters = {**inner._parameters, "weight": nn.Parameter(quantizer.grid_weight(inner.weight))}
    return _REFERENCE[type(inner)].from_float(inner, qparams)


def _quantize_functional_weights(gm: fx.GraphModule, ctx: PassContext) -> None:
    """F.linear in a dynamic / weight-only mode: its weight attribute goes through quantize -> dequantize.
    F.embedding / aten.embedding on a weight attribute in weight-only mode: a reference Embedding module call, which
    lowers as nn.Embedding's does."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _EMBEDDING_WEIGHT:
            _embedding_module(gm, node, ctx)
        if node.op != "call_function" or node.target not in LINEAR_FUNCTIONS or len(node.args) < 2:
            continue
        weight = node.args[1]
        if ctx.state.modes.get(node.name) not in (DYNAMIC, WEIGHT_ONLY) or weight.op != "get_attr":
            continue
        observer = ctx.state.qconfigs[node.name].weight()
        if is_grouped(observer) or hasattr(observer, "grid_weight"):
            raise NotImplementedError(f"F.linear '{node.name}': grouped and binary weights convert for nn.Linear "
                                      f"modules only; make it an nn.Linear or give it granularity='channel'")
        observer(attribute_value(gm, weight.target).detach())
        with gm.graph.inserting_before(node):
            quantized = _quantize(gm, weight, observer, observer.calculate_qparams(), node)
            dequantized = gm.graph.call_method("dequantize", (quantized,))
        node.replace_input_with(weight, dequantized)
        ctx.count("functional weights quantized")


# the embedding functions and the position of their weight: F.embedding(indices, weight), aten.embedding(weight, indices)
_EMBEDDING_WEIGHT = {F.embedding: 1, aten.embedding.default: 0}


def _embedding_module(gm: fx.GraphModule, node: fx.Node, ctx: PassContext) -> None:
    weight_index = _EMBEDDING_WEIGHT[node.target]
    weight = node.args[weight_index] if len(node.args) > 1 else None
    if ctx.state.modes.get(node.name) != WEIGHT_ONLY or not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return
    table = attribute_value(gm, weight.target)
    float_module = nn.Embedding(*table.shape, _weight=table.detach(), _freeze=True)
    qconfig = ctx.state.qconfigs[node.name]
    module = reference.Embedding.from_float(float_module, weight_qparams(qconfig.weight(), table))
    name = free_name(gm, f"{node.name}_embedding")
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, (node.args[1 - weight_index],))
    call.meta.update(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    ctx.state.modes[call.name], ctx.state.qconfigs[call.name] = WEIGHT_ONLY, qconfig
    ctx.count("functional embeddings made reference modules")


def _is_observed_op(node: fx.Node, observed: set, modules: dict, chain_ends: dict) -> bool:
    """Input and output (of the whole chain, for conv -> relu6) go through observers that saw data."""
    def usable(value) -> bool:
        return value in observed and _usable(modules[value.target])
    last = node
    while last.name != chain_ends.get(node.name, node.name) and len(last.users) == 1:
        (last,) = last.users
    return bool(node.args) and usable(node.args[0]) and any(usable(user) for user in last.users)
