"""Freeze every fake-quant, then turn QAT modules into reference modules (batch norm folded, weight qparams read
from the weight fake-quant), so nothing moves at convert and the int8 model computes what the fake-quant model
computed in eval mode.

PyTorch AO runs the weight fake-quant once more at convert, which moves its scale (pytorch/pytorch#73941), and
computes fresh qparams with ``calculate_qparams`` (at 4 bits not the ones training used, pytorch/ao PR 4824):
here convert reads the ``scale`` / ``zero_point`` the last forward used, on a copy, so the prepared model keeps
training afterwards as it was.
Requires: a model from prepare_qat_fx (a no-op on prepare_fx models). Guarantees: no QAT module left; every
fake-quant's observer disabled. Position: first in convert (to_reference then sees reference modules).

Before / after::

    conv = self.conv(x)    # qat.ConvBnReLU2d (weight_fake_quant, bn)
    conv = self.conv(x)    # fused.ConvReLU2d(reference.Conv2d with bn folded, ReLU)
"""
from __future__ import annotations

from torch import fx

from fxq.observers.fake_quantize import FakeQuantizeBase
from fxq.passes.context import PassContext, modules_of
from fxq.patterns.qat import QAT_MODULE_TYPES


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    disabled = []
    for path, module in modules.items():
        if isinstance(module, FakeQuantizeBase):
            module.disable_observer()
            if not int(module.fake_quant_enabled[0]) and module.has_data():
                disabled.append(path)
    if disabled:
        ctx.warnings.append(f"fake quantization is disabled on {', '.join(disabled[:5])}"
                            f"{' ...' if len(disabled) > 5 else ''}: convert quantizes there anyway; call "
                            f"prepared.enable_fake_quant() before evaluating the fake-quant model")
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], QAT_MODULE_TYPES):
            continue
        reference = modules[node.target].to_reference()
        parent, _, name = node.target.rpartition(".")
        setattr(modules[parent] if parent else gm, name, reference)
        modules[node.target] = reference
        ctx.count(f"{type(modules[node.target]).__name__} from QAT")
    return gm
