"""Models and user-written custom module classes for the non-traceable-code tests (the guide's flows).

The custom module classes are "the user's": they use only torch core (torch.quantize_per_tensor and
torch.ops.quantized), never fxq or torch.ao, so the same classes run under both libraries.
"""
import torch
from torch import nn


def non_traceable_code(x):
    """A Python loop over a tensor's length: torch.fx cannot trace it."""
    out = []
    for t in range(x.size(0)):
        out.append(torch.tanh(x[t]) if x[t].sum() > 0 else torch.sigmoid(x[t]))
    return torch.stack(out)


class FP32Traceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class TraceOnlySubmodule(nn.Module):
    """Flow (a): the non-traceable code sits in the parent; only the submodule is quantized."""

    def __init__(self):
        super().__init__()
        self.traceable_submodule = FP32Traceable()

    def forward(self, x):
        x = non_traceable_code(x)
        x = self.traceable_submodule(x)
        return non_traceable_code(x)


class FP32NonTraceable(nn.Module):
    def forward(self, x):
        return non_traceable_code(x)


class SkipSubmodule(nn.Module):
    """Flow (b): the non-traceable code is factored into a submodule tracing skips."""

    def __init__(self):
        super().__init__()
        self.traceable_code_1 = FP32Traceable()
        self.non_traceable_submodule = FP32NonTraceable()
        self.traceable_code_2 = FP32Traceable()

    def forward(self, x):
        x = self.traceable_code_1(x)
        x = self.non_traceable_submodule(x)
        return self.traceable_code_2(x)


class FloatRecurrent(nn.Module):
    """An LSTM-like cell run over time in a Python loop (flows (c) and (d))."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(16, 8)

    def forward(self, x):  # x: (time, batch, 8)
        h = torch.zeros_like(x[0])
        outputs = []
        for t in range(x.size(0)):
            h = torch.tanh(self.cell(torch.cat([x[t], h], dim=-1)))
            outputs.append(h)
        return torch.stack(outputs)


class ObservedRecurrent(FloatRecurrent):
    """Observes its own output, so the quantized version knows its output qparams."""

    @classmethod
    def from_float(cls, float_module):
        observed = cls()
        observed.cell = float_module.cell
        observed.qconfig = float_module.qconfig
        observed.output_observer = float_module.qconfig.activation()
        return observed

    def forward(self, x):
        return self.output_observer(super().forward(x))


def _quantized_weight(linear):
    weight = linear.weight.detach()
    scale = float(weight.abs().max()) / 127
    return torch.quantize_per_tensor(weight, scale, 0, torch.qint8)


class StaticQuantRecurrent(nn.Module):
    """Takes and returns quint8 tensors; int8 weights, the loop runs on their float values."""

    @classmethod
    def from_observed(cls, observed):
        module = cls()
        module.weight = _quantized_weight(observed.cell).dequantize()
        module.bias = observed.cell.bias.detach()
        scale, zero_point = observed.output_observer.calculate_qparams()
        module.scale, module.zero_point = float(scale), int(zero_point)
        return module

    def forward(self, xq):
        x = xq.dequantize()
        h = torch.zeros_like(x[0])
        outputs = []
        for t in range(x.size(0)):
            h = torch.tanh(torch.nn.functional.linear(torch.cat([x[t], h], dim=-1), self.weight, self.bias))
            outputs.append(h)
        return torch.quantize_per_tensor(torch.stack(outputs), self.scale, self.zero_point, torch.quint8)


class DynamicQuantRecurrent(nn.Module):
    """Dynamic quantization: int8 weights packed for torch.ops.quantized.linear_dynamic; float in, float out."""

    @classmethod
    def from_observed(cls, float_module):
        module = cls()
        module.packed = torch.ops.quantized.linear_prepack(_quantized_weight(float_module.cell),
                                                           float_module.cell.bias.detach())
        return module

    def forward(self, x):
        h = torch.zeros_like(x[0])
        outputs = []
        for t in range(x.size(0)):
            h = torch.tanh(torch.ops.quantized.linear_dynamic(torch.cat([x[t], h], dim=-1), self.packed, True))
            outputs.append(h)
        return torch.stack(outputs)


class WithRecurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_in, self.recurrent, self.fc_out = nn.Linear(8, 8), FloatRecurrent(), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc_out(self.recurrent(self.fc_in(x)))
