"""The pass manager: lints once at the end by default and after every pass when asked; hands back plain
GraphModules whose code matches the final graph."""
import copy

import pytest
import torch
from torch import nn

import fxq
from fxq.passes import pipeline


def _breaks_the_graph(gm, ctx):  # the pass manager names a pass by its module: this file
    output = next(node for node in gm.graph.nodes if node.op == "output")
    with gm.graph.inserting_before(output):
        missing = gm.graph.create_node("call_module", "no_such_module", (output.args[0],))  # lint: the target does not exist
    output.args = (missing,)
    return gm


@pytest.mark.parametrize("check_each_pass", [True, False])
def test_a_pass_that_breaks_the_graph_is_caught(monkeypatch, check_each_pass):
    monkeypatch.setenv("FXQ_CHECK_PASSES", "1" if check_each_pass else "0")
    monkeypatch.setattr(pipeline, "PREPARE", [*pipeline.PREPARE, _breaks_the_graph])
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    expected = "pass 'test_pipeline_check' failed" if check_each_pass else "FXQ_CHECK_PASSES=1"
    with pytest.raises(pipeline.PassError, match=expected):
        fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))


def test_prepare_and_fuse_return_plain_graph_modules_with_current_code():
    lazy = pytest.importorskip("torch.fx._lazy_graph_module", reason="this torch has no lazy GraphModule")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(2, 4),))
    fused = fxq.fuse_fx(model)
    for gm in (prepared, fused, copy.deepcopy(prepared)):
        assert not isinstance(gm, lazy._LazyGraphModule)
        assert type(gm).forward is not lazy._LazyGraphModule._lazy_forward
    assert "activation_post_process_0" in prepared.code  # generated after the observers went in
    prepared(torch.randn(3, 4))
    quantized = {"lowering": "quantized"}  # torch.jit.script takes the quantized-tensor modules only
    scripted = torch.jit.script(copy.deepcopy(fxq.convert_fx(prepared, convert_custom_config=quantized)))
    x = torch.randn(2, 4)
    assert torch.equal(scripted(x), fxq.convert_fx(prepared, convert_custom_config=quantized)(x))
