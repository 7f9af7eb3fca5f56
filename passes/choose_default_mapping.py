"""On a torch.export graph, replace an untouched x86 / fbgemm default mapping: with the transformer mapping
(fxq.get_transformer_qconfig_mapping()) on a transformer-like graph, with 8-bit activations and kernel-exact weights
(fxq.config.defaults.full_range_default) on any other.

The backend default follows PyTorch AO: it quantizes every op, including the residual stream, the layer norms'
outputs and the attention mask, which on transformers costs about 30 dB of SQNR against quantizing the linear
layers only, as the PyTorch AO export flow's x86 quantizer does (tools/export_acceptance.py). So "no extra
arguments" on an exported transformer means int8 linears with float outputs and everything else float. A graph is
transformer-like when a layer norm's output reaches a linear layer through shape-only ops (BERT, GPT-2, ViT,
ConvNeXt's blocks). Only an untouched default is replaced (``QConfigMapping.stock_default``): any setter, or
``get_default_qconfig_mapping(transformers="keep")``, keeps the mapping; symbolically traced graphs keep it too
(PyTorch AO's FX flow, which fxq is a drop-in for, quantizes them so). On other exported graphs (conv nets) the
default's 7-bit activations give way to 8-bit ones with 7-bit weights where this CPU's int8 kernels would saturate
8-bit x 8-bit products (its activations at full range, as the PyTorch AO export flow's x86 quantizer has them):
transformers' ResNet 34.5 -> 36.2 dB. The choice is logged once (logger ``fxq``), counted in the pass statistics
and written in the dump headers.

Requires: the fused graph (GPT-2's addmm is an aten.linear by then). Guarantees: ``ctx.qconfig_mapping`` is the
mapping assign_qconfig must use, and ``ctx.mapping_note`` says why when it was replaced.
Position: after fuse, before assign_qconfig.
"""
from __future__ import annotations

import logging

from torch import fx, nn

from fxq.config.defaults import full_range_default, get_transformer_qconfig_mapping
from fxq.nn.fused import LinearReLU
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.matcher import op_of
from fxq.patterns.ops import LAYER_NORM, LINEAR_FUNCTIONS, SHAPE_METHODS, SHARES_INPUT_QPARAMS

log = logging.getLogger("fxq")

_BACKENDS = ("x86", "fbgemm")  # their int8 linear returns float outputs (LinearFloatOutput)
_PASSES_THROUGH = set(SHARES_INPUT_QPARAMS) | set(SHAPE_METHODS)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    mapping = ctx.qconfig_mapping
    if ctx.tracer != "export" or ctx.qat or getattr(mapping, "stock_default", None) not in _BACKENDS:
        return gm
    modules = modules_of(gm)
    norm = next((node for node in gm.graph.nodes if op_of(node, modules) in LAYER_NORM
                 and _reaches_linear(node, modules)), None)
    if norm is not None:
        ctx.qconfig_mapping = get_transformer_qconfig_mapping()
        ctx.mapping_note = (f"get_transformer_qconfig_mapping() in place of the {mapping.stock_default} default: "
                            f"a layer norm ({norm.name}) feeds a linear layer")
        ctx.count("default mapping replaced by the transformer mapping")
    else:
        ctx.qconfig_mapping = full_range_default(mapping.stock_default)
        ctx.mapping_note = (f"the {mapping.stock_default} default with 8-bit activations and weights this CPU's int8 "
                            "kernels multiply exactly (fxq.config.defaults.full_range_default)")
        ctx.count("default mapping given 8-bit activations")
    log.info("fxq: %s; pass get_default_qconfig_mapping(transformers='keep') to keep the default",
             ctx.mapping_note)
    return gm


def _reaches_linear(node: fx.Node, modules: dict, depth: int = 4) -> bool:
    """Whether a user of ``node``, directly or through up to ``depth`` shape-only ops, is a linear layer."""
    for user in node.users:
        op = op_of(user, modules)
        if op in LINEAR_FUNCTIONS or op in (nn.Linear, LinearReLU):
            return True
        if depth and op in _PASSES_THROUGH and _reaches_linear(user, modules, depth - 1):
            return True
    return False
