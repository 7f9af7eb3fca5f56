"""The QAT switches where users look for them: methods on the prepared model (with mpath queries), free functions
for ``model.apply``, ``find_quantizers(...)`` collections; and the prepared model through deepcopy, torch.save and
state_dict round trips (pytorch/pytorch#120983: torch.ao's prepared GraphModule has no switches of its own)."""
import copy

import pytest
import torch
from torch import nn

import fxq
from conftest import saved_and_loaded


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models train faster on one thread


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


def prepared_net():
    model = Net().train()
    return fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(4, 1, 8, 8),))


def switches(prepared, flag):
    return {name: int(getattr(m, flag)[0]) for name, m in prepared.named_modules()
            if isinstance(m, fxq.FakeQuantizeBase)}


def test_methods_switch_every_quantizer_weights_included():
    """pytorch/pytorch#120983: prepared.disable_observer() instead of prepared.apply(torch.ao...disable_observer)."""
    prepared = prepared_net()
    assert isinstance(prepared, fxq.QATGraphModule)
    assert prepared.disable_observer() is prepared
    observers = switches(prepared, "observer_enabled")
    assert "conv.weight_fake_quant" in observers and "fc.weight_fake_quant" in observers
    assert set(observers.values()) == {0}
    prepared.disable_fake_quant()
    x = torch.randn(2, 1, 8, 8)
    float_path = prepared(x)
    prepared.enable_fake_quant()
    assert not torch.equal(prepared(x), float_path)
    prepared.enable_observer()
    assert set(switches(prepared, "observer_enabled").values()) == {1}


def test_query_selects_activation_quantizers_or_one_layers_weight():
    prepared = prepared_net()
    prepared.disable_observer("**/[qtag:activation]")
    observers = switches(prepared, "observer_enabled")
    assert observers["conv.weight_fake_quant"] == 1 and observers["fc.weight_fake_quant"] == 1
    assert all(v == 0 for k, v in observers.items() if k.startswith("activation_post_process"))
    prepared.enable_observer().disable_fake_quant("conv")  # a layer: its weight quantizer
    fake_quant = switches(prepared, "fake_quant_enabled")
    assert fake_quant["conv.weight_fake_quant"] == 0 and fake_quant["fc.weight_fake_quant"] == 1


def test_free_functions_and_collections():
    prepared = prepared_net()
    prepared.apply(fxq.disable_observer)
    assert set(switches(prepared, "observer_enabled").values()) == {0}
    prepared.apply(fxq.enable_observer)
    collection = fxq.find_quantizers(prepared, "**/[qtag:activation/output]")
    assert collection.disable_fake_quant() is collection
    fake_quant = switches(prepared, "fake_quant_enabled")
    outputs = {m.target for m in collection.nodes}
    assert outputs and all(fake_quant[name] == 0 for name in outputs)
    assert fake_quant["conv.weight_fake_quant"] == 1


@pytest.mark.parametrize("round_trip", [copy.deepcopy, saved_and_loaded], ids=["deepcopy", "torch.save"])
def test_prepared_model_keeps_its_class_and_state(round_trip):
    prepared = prepared_net()
    prepared(torch.randn(8, 1, 8, 8))
    prepared.eval().disable_observer()
    x = torch.randn(2, 1, 8, 8)
    again = round_trip(prepared)
    assert isinstance(again, fxq.QATGraphModule)
    again.eval()
    torch.testing.assert_close(again(x), prepared(x))
    again.enable_observer()  # its switches work on its own quantizers
    assert set(switches(again, "observer_enabled").values()) == {1}
    assert set(switches(prepared, "observer_enabled").values()) == {0}
    torch.testing.assert_close(fxq.convert_fx(again)(x), fxq.convert_fx(prepared)(x))


def test_state_dict_restores_learned_scales_and_statistics():
    trained = prepared_net()
    for _ in range(3):
        trained(torch.randn(8, 1, 8, 8) * 2)
    fresh = prepared_net()
    fresh.load_state_dict(trained.state_dict())
    for (name, a), (_, b) in zip(trained.named_modules(), fresh.named_modules()):
        if isinstance(a, fxq.FakeQuantizeBase):
            assert torch.equal(a.scale, b.scale), name
            assert torch.equal(a.activation_post_process.min_val, b.activation_post_process.min_val), name
    trained.eval().disable_observer()
    fresh.eval().disable_observer()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(fresh(x), trained(x))


def test_per_tensor_checkpoint_into_per_channel_quantizer_names_it():
    """A checkpoint whose quantizer shapes disagree fails naming the quantizer."""
    per_channel = prepared_net()
    per_channel(torch.randn(4, 1, 8, 8))
    per_tensor = fxq.prepare_qat_fx(Net().train(), fxq.get_default_qat_qconfig_mapping("qnnpack"),
                                    (torch.randn(4, 1, 8, 8),))
    with pytest.raises(RuntimeError, match=r"conv\.weight_fake_quant"):
        per_tensor.load_state_dict(per_channel.state_dict())


def test_float_checkpoint_into_qat_model_reinitialises_quantizers_with_one_warning():
    """Quantizer state missing from a checkpoint re-initialises from statistics; one warning names them."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).train()
    prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(2, 4),))
    prepared(torch.randn(16, 4) * 50)  # statistics the checkpoint must replace
    float_checkpoint = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).state_dict()
    with pytest.warns(UserWarning, match=r"no state for 5 quantizer\(s\) \(0\.weight_fake_quant") as caught:
        prepared.load_state_dict(float_checkpoint)
    assert len([w for w in caught if "quantizer" in str(w.message)]) == 1
    assert torch.equal(prepared.get_submodule("0").weight, float_checkpoint["0.weight"])
    x = torch.randn(16, 4)
    prepared(x)  # re-initialised from this batch, not averaged with the x50 one
    observer = prepared.activation_post_process_0.activation_post_process
    assert float(observer.max_val) == float(x.max()) and float(observer.min_val) == float(x.min())
    with pytest.raises(RuntimeError, match="unexpected keys"):
        prepared.load_state_dict({**float_checkpoint, "extra.weight": torch.zeros(1)})
