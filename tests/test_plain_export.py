"""A model of fxq ops and plain modules exports (strict and not) and compiles to one graph, with the same numbers."""
import gc

import pytest
import torch

from fxq.nn import plain
from fxq.nn.plain import traced
from plain_helpers import reference_of


class _QuantizedBlock(torch.nn.Module):
    """quantize -> conv+relu (uint8) -> linear+hardtanh (float): the shape of a converted model."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.05))
        self.register_buffer("zero_point", torch.tensor(64))
        self.conv = plain.Conv2d.from_reference(reference_of(torch.nn.Conv2d(3, 16, 3, padding=1)), 0.05, 64, 0.05,
                                                64, "relu")
        self.linear = plain.Linear.from_reference(reference_of(torch.nn.Linear(16, 8)), 0.05, 64, None, 0,
                                                  "hardtanh", (-1, 1))

    def forward(self, x):
        q = torch.ops.fxq.quantize_per_tensor(x, self.scale, self.zero_point, 0, 127, torch.uint8)
        return self.linear(self.conv(q).flatten(2).transpose(1, 2))


@pytest.mark.parametrize("strict", [False, True])
def test_export_keeps_one_op_per_module(strict):
    model, x = _QuantizedBlock(), torch.randn(2, 3, 4, 4)
    exported = torch.export.export(model, (x,), strict=strict)
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert targets[0] == "fxq.quantize_per_tensor.default"
    assert "fxq.plain_conv.default" in targets and targets[-1] == "fxq.plain_linear.default"
    assert torch.equal(exported.module()(x), model(x))


def test_compile_makes_one_graph():
    model, x = _QuantizedBlock(), torch.randn(2, 3, 4, 4)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), model(x))


def test_run_time_pack_follows_the_weight():
    weight = torch.randint(-127, 128, (4, 8), dtype=torch.int8)
    packs = []
    first = traced.packed_for(weight, (), lambda w=weight: packs.append(1) or torch.ops.onednn.qlinear_prepack(w, None))
    assert traced.packed_for(weight, (), lambda: pytest.fail("packed twice")) is first
    weight.neg_()  # the version counter moves: pack again
    traced.packed_for(weight, (), lambda w=weight: packs.append(2) or torch.ops.onednn.qlinear_prepack(w, None))
    assert packs == [1, 2]
    identity = id(weight)
    del weight
    gc.collect()
    assert identity not in traced._PACKS  # a freed weight takes its pack with it


def test_modules_without_a_traced_op_say_so():
    ref = reference_of(torch.nn.Linear(8, 4))
    residual = plain.LinearBinary.from_reference(ref, 0.05, 60, None)
    with pytest.raises(Exception, match="cannot be traced by torch.export"):
        torch.export.export(residual, (torch.zeros(2, 8, dtype=torch.uint8), torch.zeros(2, 4)), strict=False)


@pytest.mark.parametrize("per_token", [False, True])
def test_dynamic_linear_exports(per_token):
    dynamic, x = plain.DynamicLinear.from_float(torch.nn.Linear(8, 4), per_token=per_token), torch.randn(3, 8)
    exported = torch.export.export(dynamic, (x,), strict=False)
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert "fxq.plain_linear_tensor_qparams.default" in targets
    assert torch.equal(exported.module()(x), dynamic(x))
