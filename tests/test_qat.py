"""prepare_qat_fx -> train -> convert_fx: the converted model computes what the fake-quant model computes in eval
mode, batch norm trains and folds, the QAT complaints of issue 19 (each test names the torch issue it fixes)."""
import copy

import pytest
import torch
from torch import nn

import fxq
from fxq.nn import qat
from fxq.observers import FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver
from fxq.observers import MovingAveragePerChannelMinMaxObserver

# Converted QAT models are compared, within one rounding step, with the fake-quant model: the quantized-tensor
# lowering rounds where training did (the plain lowering fuses some roundings away).
pytestmark = pytest.mark.usefixtures("one_thread", "quantized_lowering")  # one thread: tiny models train faster


class ConvNet(nn.Module):
    """Conv2d + BN + ReLU, Conv2d + BN, flatten, Linear + BN1d, ReLU, Linear: every QAT module kind of a CNN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 12)
        self.bn3 = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = self.bn2(self.conv2(self.relu(self.bn(self.conv(x)))))
        x = self.bn3(self.fc(torch.flatten(x, 1)))
        return self.fc2(torch.relu(x))


class ConvBn1d3d(nn.Module):
    """Conv1d + BN + ReLU and Conv3d + BN, on their own inputs."""

    def __init__(self):
        super().__init__()
        self.conv1d, self.bn1d = nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4)
        self.conv3d, self.bn3d = nn.Conv3d(2, 4, 2), nn.BatchNorm3d(4)

    def forward(self, x1, x3):
        return torch.relu(self.bn1d(self.conv1d(x1))), self.bn3d(self.conv3d(x3))


def four_bit_mapping() -> fxq.QConfigMapping:
    """int4 per-channel weights, 4-bit unsigned activations (both in 8-bit dtypes)."""
    activation = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0,
                                                         quant_max=15, dtype=torch.quint8)
    weight = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8,
                                                     quant_max=7, dtype=torch.qint8,
                                                     qscheme=torch.per_channel_symmetric)
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation, weight))


def train(prepared, batches, steps=6, lr=0.05):
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)
    for inputs in batches[:steps]:
        loss = prepared(*inputs)
        loss = sum(out.pow(2).mean() for out in loss) if isinstance(loss, tuple) else loss.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prepared


def output_scale(prepared):
    """The scale of the quantizer on the model's output (the last fake-quant node)."""
    last = [n for n in prepared.graph.nodes if n.op == "call_module" and n.target.startswith("activation_post")][-1]
    return float(prepared.get_submodule(last.target).scale)


def assert_within_one_step(fake_quant_out, int8_out, step):
    gap = (fake_quant_out - int8_out).abs().max().item()
    assert gap <= step * 1.001, f"converted output differs by {gap / step:.2f} steps from the fake-quant model"


@pytest.mark.parametrize("mapping", [fxq.get_default_qat_qconfig_mapping("x86"), four_bit_mapping()],
                         ids=["int8-x86-default", "int4"])
def test_converted_model_equals_fake_quant_model_within_one_step(mapping):
    """pytorch/pytorch#88800, #108639, #95785: the fake-quant model (eval, observers frozen) and the converted
    model agree on every output to within one quantization step of the output, at 8 bits (reduce_range: the int8
    tensor is clamped to 0..127 as the fake-quant was) and at 4 bits."""
    batches = [(torch.randn(16, 1, 8, 8),) for _ in range(6)]
    prepared = train(fxq.prepare_qat_fx(ConvNet().train(), mapping, batches[0]), batches)
    prepared.eval().disable_observer()
    test = torch.randn(64, 1, 8, 8) * 1.5  # wider than training: saturation must agree too
    with torch.no_grad():
        expected = prepared(test)
    quantized = fxq.convert_fx(prepared)
    assert not any(isinstance(m, (qat.Linear, qat.Conv2d)) for m in quantized.modules())
    assert_within_one_step(expected, quantized(test), output_scale(prepared))


def test_a_state_dict_carries_the_narrow_clamps_into_another_converted_model():
    """4-bit activations clamp the int8 tensor to 0..15 steps: those bounds are buffers, so loading one converted
    model's state_dict into another (trained differently) gives the first one's outputs."""
    def converted(seed):
        torch.manual_seed(seed)
        batches = [(torch.randn(16, 1, 8, 8) * (1 + seed),) for _ in range(4)]
        prepared = train(fxq.prepare_qat_fx(ConvNet().train(), four_bit_mapping(), batches[0]), batches, steps=4)
        return fxq.convert_fx(prepared.eval().disable_observer())
    first, second, test = converted(0), converted(1), torch.randn(32, 1, 8, 8) * 3
    with torch.no_grad():
        expected = first(test)
        assert not torch.equal(second(test), expected)
        second.load_state_dict(first.state_dict())
        assert torch.equal(second(test), expected)


def test_conv1d_and_conv3d_with_batch_norm_convert_exactly():
    """Conv1d/Conv3d + BN (+ ReLU) train their batch norms and convert to int8 kernels, within one step."""
    model = ConvBn1d3d().train()
    batches = [(torch.randn(8, 2, 10), torch.randn(8, 2, 4, 4, 4)) for _ in range(4)]
    prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), batches[0])
    assert isinstance(prepared.conv1d, qat.ConvBnReLU1d) and isinstance(prepared.conv3d, qat.ConvBn3d)
    mean_before = prepared.conv3d.bn.running_mean.clone()
    train(prepared, batches)
    assert not torch.equal(prepared.conv3d.bn.running_mean, mean_before)  # BN statistics update in training
    prepared.eval().disable_observer()
    with torch.no_grad():
        expected = prepared(*batches[0])
    quantized = fxq.convert_fx(prepared)
    assert type(quantized.conv1d).__name__ == "ConvReLU1d" and type(quantized.conv3d).__name__ == "Conv3d"
    assert type(quantized.conv1d).__module__ == "fxq.nn.quantized.conv"
    for want, got, node in zip(expected, quantized(*batches[0]), ("activation_post_process_1",
                                                                   "activation_post_process_3")):
        assert_within_one_step(want, got, float(prepared.get_submodule(node).scale))


def test_convert_reads_the_weight_qparams_training_used_and_moves_nothing():
    """pytorch/pytorch#73941 (convert runs the weight fake-quant once more and moves its scale) and pytorch/ao PR
    4824 (at 4 bits calculate_qparams differs from the fused kernel's qparams): convert uses the kernel's scale
    buffer, and the prepared model's quantizers are untouched."""
    batches = [(torch.randn(16, 1, 8, 8),) for _ in range(3)]
    prepared = train(fxq.prepare_qat_fx(ConvNet().train(), four_bit_mapping(), batches[0]), batches)
    with torch.no_grad():
        prepared.fc2.weight.mul_(3.0)  # weights moved after the last forward: the frozen scale must still win
    weight_quantizer = prepared.fc2.weight_fake_quant
    trained_scale = weight_quantizer.scale.clone()
    state_before = {k: v.clone() for k, v in prepared.state_dict().items()}
    quantized = fxq.convert_fx(prepared)
    fc2 = quantized.get_submodule("fc2")
    converted_scale = fc2.weight().q_per_channel_scales().float()
    torch.testing.assert_close(converted_scale, trained_scale, rtol=0, atol=0)
    assert not torch.allclose(weight_quantizer.calculate_qparams()[0], trained_scale)  # the formula PR 4824 fixed
    for key, value in prepared.state_dict().items():
        assert torch.equal(value, state_before[key]), f"convert changed the prepared model's {key}"
    assert int(weight_quantizer.observer_enabled[0]) == 1  # frozen on convert's copy only


def test_observe_only_phase_keeps_fused_qparams_in_step_with_statistics():
    """pytorch/ao#2138 (pytorch/pytorch PR 194815): with fake-quant off and observers on, the fused kernel left
    scale/zero_point stale; here they follow the statistics, with the kernel's own formula."""
    fused = fxq.observers.default_fused_act_fake_quant()
    fused(torch.randn(256))
    fused.disable_fake_quant()
    wide = torch.randn(256) * 10
    assert torch.equal(fused(wide), wide)  # nothing fake-quantized
    scale_before = fused.scale.clone()
    fused(wide)
    twin = copy.deepcopy(fused)
    twin.activation_post_process.min_val.copy_(fused.activation_post_process.min_val)
    torch.testing.assert_close(fused.scale, fused.calculate_qparams()[0])
    assert float(fused.scale) > float(scale_before) * 1.01  # moved with the wide batches (stale before the fix)
    twin.enable_fake_quant().disable_observer()
    expected = torch.fake_quantize_per_tensor_affine(wide, fused.scale, fused.zero_point, 0, 255)
    assert torch.equal(twin(wide), expected)  # re-enabled, it fake-quantizes with the up-to-date qparams


def test_zero_batch_norm_weight_gives_finite_loss_and_converts():
    """PyTorch AO PR 85744: bn.weight with zeros made the approximate conv-bn path divide by zero (NaN loss)."""
    model = ConvNet().train()
    with torch.no_grad():
        model.bn.weight[:3] = 0.0
        model.bn.bias[:3] = 0.5  # past the relu, so gradients reach the zero gammas
        model.bn3.weight[0] = 0.0
    batches = [(torch.randn(16, 1, 8, 8),) for _ in range(4)]
    prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), batches[0])
    out = prepared(*batches[0])
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in prepared.parameters() if p.grad is not None)
    assert prepared.conv.bn.weight.grad[:3].abs().sum() > 0  # a zero gamma still learns
    train(prepared, batches)
    prepared.eval().disable_observer()
    with torch.no_grad():
        expected = prepared(batches[1][0])
    assert_within_one_step(expected, fxq.convert_fx(prepared)(batches[1][0]), output_scale(prepared))


@pytest.mark.parametrize("how", ["apply", "method"])
def test_freeze_bn_stats_covers_linear_bn1d_and_every_conv(how):
    """PyTorch AO's freeze_bn_stats silently skips Linear+BatchNorm1d; fxq's covers every fused batch norm, and
    keeps them frozen through model.train()."""
    batches = [(torch.randn(16, 1, 8, 8),) for _ in range(3)]
    prepared = fxq.prepare_qat_fx(ConvNet().train(), fxq.get_default_qat_qconfig_mapping("x86"), batches[0])
    prepared(*batches[0])
    if how == "apply":
        prepared.apply(fxq.freeze_bn_stats)
    else:
        prepared.freeze_bn_stats()
    prepared.train()
    norms = {name: m.bn for name, m in prepared.named_modules() if hasattr(m, "freeze_bn")}
    assert set(norms) == {"conv", "conv2", "fc"}
    frozen = {name: bn.running_mean.clone() for name, bn in norms.items()}
    prepared(*batches[1])
    for name, bn in norms.items():
        assert torch.equal(bn.running_mean, frozen[name]), f"{name}'s batch norm still updates"
    prepared.apply(fxq.update_bn_stats) if how == "apply" else prepared.update_bn_stats()
    prepared(*batches[2])
    assert all(not torch.equal(bn.running_mean, frozen[name]) for name, bn in norms.items())


def test_frozen_bn_equals_folded_layer():
    """After freeze_bn_stats, a QAT conv-bn in train mode computes the folded conv on the fake-quantized weight."""
    fused = qat.intrinsic.ConvBn2d(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    with torch.no_grad():
        fused[1].running_mean.uniform_(-1, 1)
        fused[1].running_var.uniform_(0.5, 2)
    module = qat.ConvBn2d.from_float(fused, fxq.observers.default_per_channel_weight_fake_quant).train()
    module.freeze_bn_stats()
    x = torch.randn(4, 2, 6, 6)
    got = module(x)
    weight, bias = module.folded_weight_and_bias()
    want = nn.functional.conv2d(x, module.weight_fake_quant(weight), bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_user_model_untouched_and_qat_modules_share_parameters():
    model = ConvNet().train()
    before = copy.deepcopy(model.state_dict())
    prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(4, 1, 8, 8),))
    train(prepared, [(torch.randn(8, 1, 8, 8),)] * 2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"prepare_qat_fx or training changed the user's {key}"
    assert type(prepared.fc2) is qat.Linear and type(prepared.conv) is qat.ConvBnReLU2d


def test_fixed_qparams_ops_get_fixed_fake_quant():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()).train()
    prepared = fxq.prepare_qat_fx(model, fxq.get_default_qat_qconfig_mapping("x86"), (torch.randn(2, 4),))
    kinds = {type(m).__name__ for m in prepared.modules()}
    assert "FixedQParamsFakeQuantize" in kinds
    out = prepared(torch.randn(8, 4))
    assert torch.allclose(out * 256, (out * 256).round())  # sigmoid's output sits on the 1/256 grid


def test_learnable_fake_quant_learns_its_scale_and_converts_exactly():
    """LSQ: the step size is a parameter with a gradient; convert uses the learned value."""
    lsq = fxq.LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=15,
                                              dtype=torch.quint8, use_grad_scaling=True)
    lsq_weight = fxq.LearnableFakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-8,
                                                     quant_max=7, dtype=torch.qint8,
                                                     qscheme=torch.per_channel_symmetric, use_grad_scaling=True)
    mapping = fxq.QConfigMapping().set_global(fxq.QConfig(lsq, lsq_weight))
    batches = [(torch.randn(16, 1, 8, 8),) for _ in range(6)]
    prepared = fxq.prepare_qat_fx(ConvNet().train(), mapping, batches[0])
    prepared(*batches[0])
    scale_before = prepared.fc2.weight_fake_quant.scale.detach().clone()
    train(prepared, batches, lr=0.01)
    assert not torch.equal(prepared.fc2.weight_fake_quant.scale.detach(), scale_before)
    prepared.eval()
    with torch.no_grad():
        expected = prepared(batches[0][0])
    last = [n for n in prepared.graph.nodes if n.op == "call_module"][-1]
    step = float(prepared.get_submodule(last.target).frozen_qparams()[0])
    assert_within_one_step(expected, fxq.convert_fx(prepared)(batches[0][0]), step)


def test_concrete_args_trace_control_flow():
    """pytorch/pytorch#87344: a model with a Python branch on an argument prepares with concrete_args."""
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, double=False):
            y = self.fc(x)
            if double:
                y = y * 2
            return y

    config = fxq.PrepareCustomConfig().set_tracer(concrete_args={"double": True})
    prepared = fxq.prepare_qat_fx(Branchy().train(), fxq.get_default_qat_qconfig_mapping("x86"),
                                  (torch.randn(2, 4), True), config)
    assert prepared(torch.randn(3, 4), True).shape == (3, 4)
    assert any(n.target is torch.ops.aten.mul.Tensor or "mul" in str(n.target) for n in prepared.graph.nodes)
    assert isinstance(prepared.fc, qat.Linear)
