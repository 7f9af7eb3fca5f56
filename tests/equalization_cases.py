"""Models with skewed channel ranges and the int8 SQNR of each with and without equalization.

Shared by tests/test_equalization*.py and tools/equalization_report.py (which prints the table).
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

import fxq


def skewed(shape: tuple, low: float = 1e-2, high: float = 1e2, dim: int = 1) -> torch.Tensor:
    """Random data whose channels along ``dim`` span ``low .. high`` in magnitude (log-spaced)."""
    spread = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), shape[dim])
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return torch.randn(shape) * spread.reshape(view)


class LinearLinear(nn.Module):
    def __init__(self, middle: nn.Module = None):
        super().__init__()
        self.fc1, self.middle, self.fc2 = nn.Linear(16, 32), middle, nn.Linear(32, 8)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x if self.middle is None else self.middle(x))


class ConvConv(nn.Module):
    def __init__(self, middle: nn.Module = None):
        super().__init__()
        self.conv1, self.middle = nn.Conv2d(8, 16, 3, padding=1), middle
        self.conv2 = nn.Conv2d(16, 8, 3)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(x if self.middle is None else self.middle(x))


class FunctionalLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(32, 16) / 4), nn.Parameter(torch.randn(32) / 4)
        self.w2, self.b2 = nn.Parameter(torch.randn(8, 32) / 6), nn.Parameter(torch.randn(8) / 6)

    def forward(self, x):
        return F.linear(F.linear(x, self.w1, self.b1), self.w2, self.b2)


class Single(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def with_outlier_columns(layer: nn.Module, factor: float = 30.0) -> nn.Module:
    """Scale two weight columns up (their input channels are ``factor`` times smaller, see ``outlier_input``), so
    per-tensor weight quantization loses the other columns and the input quantization loses those channels."""
    with torch.no_grad():
        layer.weight[:, :2] *= factor
    return layer


def outlier_input(shape: tuple, factor: float = 30.0) -> torch.Tensor:
    x = torch.randn(shape)
    x[:, :2] /= factor
    return x


def spread(channels: int, low: float = 1e-2, high: float = 1e2) -> torch.Tensor:
    return torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), channels)


def compensated(layer: nn.Module, in_spread: torch.Tensor = None, out_spread: torch.Tensor = None) -> nn.Module:
    """Weight columns divided by ``in_spread`` (every skewed input channel matters equally to the output) and
    rows/bias multiplied by ``out_spread`` (the layer's outputs are skewed in turn): a model trained on
    unnormalised features looks like this."""
    with torch.no_grad():
        weight = layer.weight if isinstance(layer, nn.Module) else layer
        view = [1] * weight.ndim
        if in_spread is not None:
            view[1] = -1
            weight.div_(in_spread.reshape(view))
            view[1] = 1
        if out_spread is not None:
            view[0] = -1
            weight.mul_(out_spread.reshape(view))
            layer.bias.mul_(out_spread)
    return layer


def _functional_linears() -> nn.Module:
    model = FunctionalLinears()
    first, second = nn.Linear(16, 32), nn.Linear(32, 8)
    compensated(first, spread(16), spread(32, 1e-1, 1e1))
    compensated(second, spread(32, 1e-1, 1e1))
    with torch.no_grad():
        for mine, theirs in ((model.w1, first.weight), (model.b1, first.bias), (model.w2, second.weight),
                             (model.b2, second.bias)):
            mine.copy_(theirs)
    return model


def _pair(model: nn.Module) -> nn.Module:
    first, second = [m for m in model.children() if isinstance(m, (nn.Linear, nn.Conv2d))]
    compensated(first, spread(first.weight.shape[1]), spread(first.weight.shape[0], 1e-1, 1e1))
    compensated(second, spread(second.weight.shape[1], 1e-1, 1e1))
    return model


def case_models() -> dict:
    """name -> (float model, calibration input, test input). Seeded, so every run builds the same numbers.

    Inputs span 1e-2 .. 1e2 per channel; the weights compensate, so every channel matters to the output.
    The first layer's outputs span 1e-1 .. 1e1 per channel (the next layer compensates again).
    """
    torch.manual_seed(0)
    linear_input, conv_input = (lambda: skewed((256, 16))), (lambda: skewed((16, 8, 10, 10)))
    cases = {
        "linear->linear": (_pair(LinearLinear()), linear_input),
        "linear->relu->linear": (_pair(LinearLinear(nn.ReLU())), linear_input),
        "linear->leaky_relu->linear": (_pair(LinearLinear(nn.LeakyReLU(0.1))), linear_input),
        "conv->conv": (_pair(ConvConv()), conv_input),
        "conv->relu->maxpool->conv": (_pair(ConvConv(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))), conv_input),
        "F.linear->F.linear": (_functional_linears(), linear_input),
        "single linear": (Single(compensated(nn.Linear(16, 8), spread(16))), linear_input),
        "single conv": (Single(compensated(nn.Conv2d(8, 8, 3), spread(8))), conv_input),
        "linear, outlier weight columns": (Single(with_outlier_columns(nn.Linear(16, 8))),
                                           lambda: outlier_input((256, 16))),
        "conv, outlier weight columns": (Single(with_outlier_columns(nn.Conv2d(8, 8, 3))),
                                         lambda: outlier_input((16, 8, 10, 10))),
    }
    return {name: (model.eval(), make(), make()) for name, (model, make) in cases.items()}


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.detach(), other.detach()
    noise = (reference - other).pow(2).mean()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.pow(2).mean() / noise))


def mul_count(gm) -> int:
    """The ``torch.mul`` calls equalization put in a graph (input scales it could not fold into a layer)."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.mul)


def fxq_quantized(model: nn.Module, calibration: torch.Tensor, equalize: bool = True) -> nn.Module:
    qmap = fxq.QConfigMapping().set_global(fxq.default_qconfig)
    eq = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig) if equalize else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = fxq.prepare_fx(model, qmap, (calibration,), _equalization_config=eq)
        prepared(calibration)
        return fxq.convert_fx(prepared)


def equalization_gain(model: nn.Module, calibration: torch.Tensor, test: torch.Tensor) -> tuple:
    """(SQNR vs float of fxq's int8 model with equalization minus without it, in dB; the equalized int8 model)."""
    expected = model(test)
    without = sqnr(expected, fxq_quantized(model, calibration, equalize=False)(test))
    quantized = fxq_quantized(model, calibration)
    return sqnr(expected, quantized(test)) - without, quantized


def torch_ao_quantized(tao, model: nn.Module, calibration: torch.Tensor, equalize: bool = True) -> nn.Module:
    """torch.ao's result; on a deep copy, since torch.ao writes the equalized weights into the model it is given."""
    from torch.ao.quantization.fx._equalize import default_equalization_qconfig
    model = copy.deepcopy(model)
    qmap = tao.quantization.QConfigMapping().set_global(tao.quantization.default_qconfig)
    eq = tao.quantization.QConfigMapping().set_global(default_equalization_qconfig) if equalize else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tao.quantize_fx.prepare_fx(model, qmap, (calibration,), _equalization_config=eq)
        prepared(calibration)
        return tao.quantize_fx.convert_fx(prepared)


def cle_case() -> tuple:
    """conv -> relu -> conv: conv1's output rows span 1e-2 .. 1e1 and conv2's input columns compensate."""
    torch.manual_seed(1)
    model = ConvConv(nn.ReLU()).eval()
    compensated(model.conv1, None, spread(16, 1e-2, 1e1))
    compensated(model.conv2, spread(16, 1e-2, 1e1))
    return model, torch.randn(16, 8, 10, 10), torch.randn(16, 8, 10, 10)


def cle_quantized(model: nn.Module, calibration: torch.Tensor, cross_layer: bool) -> nn.Module:
    qmap = fxq.QConfigMapping().set_global(fxq.default_qconfig)
    eq = fxq.CrossLayerEqualization() if cross_layer else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = fxq.prepare_fx(model, qmap, (calibration,), _equalization_config=eq)
        prepared(calibration)
        return fxq.convert_fx(prepared)


def _safety_cases() -> dict:
    names = ("linear->relu->linear", "linear->leaky_relu->linear", "conv->relu->maxpool->conv", "F.linear->F.linear",
             "single conv")
    cases = case_models()
    return {name: cases[name] for name in names}


CASES_FOR_SAFETY = _safety_cases()


class ConvFlattenLinear(nn.Module):
    """conv -> relu -> [pool] -> flatten -> linear: each conv channel becomes H*W features of the linear."""

    def __init__(self, pool: nn.Module = None, features: int = 6 * 8 * 8):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(8, 6, 3, padding=1), pool, nn.Linear(features, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(torch.flatten(x if self.pool is None else self.pool(x), 1))


def grouped_compensated(conv: nn.Conv2d, in_spread: torch.Tensor = None, out_spread: torch.Tensor = None):
    """As ``compensated`` for a grouped conv: the weights meeting input channel c (in its group) divided by
    ``in_spread[c]``; rows and bias multiplied by ``out_spread``."""
    from fxq.equalization.scales import scale_weight
    with torch.no_grad():
        conv.weight.copy_(scale_weight(conv.weight, in_spread, out_spread, conv.groups))
        if out_spread is not None:
            conv.bias.mul_(out_spread)
    return conv


def _flatten_case(pool: nn.Module = None, features: int = 6 * 8 * 8) -> nn.Module:
    model = ConvFlattenLinear(pool, features)
    compensated(model.conv, spread(8), spread(6, 1e-1, 1e1))
    per_feature = spread(6, 1e-1, 1e1).repeat_interleave(features // 6)
    compensated(model.fc, per_feature)
    return model


def _grouped_pair(first: nn.Conv2d, second: nn.Conv2d) -> nn.Module:
    grouped_compensated(first, spread(first.in_channels), spread(first.out_channels, 1e-1, 1e1))
    grouped_compensated(second, spread(second.in_channels, 1e-1, 1e1))
    return nn.Sequential(first, nn.ReLU(), second)


def shape_case_models() -> dict:
    """Grouped / depthwise convs and chains through flatten (same construction as case_models, own seed)."""
    torch.manual_seed(2)
    conv_input = lambda: skewed((16, 8, 8, 8))  # noqa: E731
    cases = {
        "depthwise conv": (Single(grouped_compensated(nn.Conv2d(8, 8, 3, groups=8), spread(8))), conv_input),
        "grouped conv (groups=2)": (Single(grouped_compensated(nn.Conv2d(8, 8, 3, groups=2), spread(8))),
                                    conv_input),
        "conv->relu->depthwise conv": (_grouped_pair(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3, groups=16)),
                                       conv_input),
        "depthwise->relu->pointwise conv": (_grouped_pair(nn.Conv2d(8, 16, 3, groups=8), nn.Conv2d(16, 8, 1)),
                                            conv_input),
        "conv->relu->flatten->linear": (_flatten_case(), conv_input),
        "conv->relu->avgpool->flatten->linear": (_flatten_case(nn.AdaptiveAvgPool2d(1), 6), conv_input),
    }
    return {name: (model.eval(), make(), make()) for name, (model, make) in cases.items()}


def mild_case_models() -> dict:
    """Moderately skewed inputs (channels span 0.5 .. 5) into plain random weights: little to gain, nothing to
    lose."""
    torch.manual_seed(3)
    cases = {
        "linear->linear, mild skew 0.5..5": (LinearLinear(), lambda: skewed((256, 16), 0.5, 5.0)),
        "linear->relu->linear, mild skew 0.5..5": (LinearLinear(nn.ReLU()), lambda: skewed((256, 16), 0.5, 5.0)),
        "conv->conv, mild skew 0.5..5": (ConvConv(), lambda: skewed((16, 8, 10, 10), 0.5, 5.0)),
    }
    return {name: (model.eval(), make(), make()) for name, (model, make) in cases.items()}


def equalized(prepared: nn.Module) -> nn.Module:
    """The calibrated observed model after the equalize pass only (observers still in; on a copy)."""
    from fxq.passes import equalize
    from fxq.passes.context import PassContext
    from fxq.graph.state import get_state
    return equalize.run(copy.deepcopy(prepared), PassContext(state=get_state(prepared)))


def float_after_equalize(prepared: nn.Module) -> nn.Module:
    """The equalized graph with every observer removed: float math only."""
    from fxq.observers import ObserverBase
    gm = equalized(prepared)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules[node.target], ObserverBase):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def reobserved(equalized_model: nn.Module, batches) -> nn.Module:
    """The oracle for rebuilt observers: a copy of the equalized model whose activation observers are emptied and
    calibrated again on ``batches``, so they see the scaled tensors themselves."""
    from fxq.observers import HistogramObserver, MinMaxObserver
    oracle = copy.deepcopy(equalized_model)
    for module in oracle.modules():
        if isinstance(module, HistogramObserver):
            module.min_val.fill_(float("inf"))
            module.max_val.fill_(float("-inf"))
            module.histogram.zero_()
        elif isinstance(module, MinMaxObserver):
            module.reset_min_max_vals()
    for batch in batches:
        oracle(batch)
    return oracle
