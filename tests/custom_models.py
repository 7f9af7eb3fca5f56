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


def _unroll(x, linear):
    """h_t = tanh(linear([x_t, h_{t-1}])) over the time axis of x (time, batch, 8), from h = 0; the stacked h_t."""
    h = torch.zeros_like(x[0])
    outputs = []
    for t in range(x.size(0)):
        h = torch.tanh(linear(torch.cat([x[t], h], dim=-1)))
        outputs.append(h)
    return torch.stack(outputs)


class FloatRecurrent(nn.Module):
    """An LSTM-like cell run over time in a Python loop (flows (c) and (d))."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(16, 8)

    def forward(self, x):  # x: (time, batch, 8)
        return _unroll(x, self.cell)


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
        outputs = _unroll(xq.dequantize(), lambda inputs: torch.nn.functional.linear(inputs, self.weight, self.bias))
        return torch.quantize_per_tensor(outputs, self.scale, self.zero_point, torch.quint8)


class DynamicQuantRecurrent(nn.Module):
    """Dynamic quantization: int8 weights packed for torch.ops.quantized.linear_dynamic; float in, float out."""

    @classmethod
    def from_observed(cls, float_module):
        module = cls()
        module.packed = torch.ops.quantized.linear_prepack(_quantized_weight(float_module.cell),
                                                           float_module.cell.bias.detach())
        return module

    def forward(self, x):
        return _unroll(x, lambda inputs: torch.ops.quantized.linear_dynamic(inputs, self.packed, True))


class WeightOnlyQuantRecurrent(nn.Module):
    """Weight-only quantization: int8 weights (dequantized once), float activations; float in, float out."""

    @classmethod
    def from_observed(cls, float_module):
        module = cls()
        module.weight = _quantized_weight(float_module.cell).dequantize()
        module.bias = float_module.cell.bias.detach()
        return module

    def forward(self, x):
        return _unroll(x, lambda inputs: torch.nn.functional.linear(inputs, self.weight, self.bias))


class WithRecurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_in, self.recurrent, self.fc_out = nn.Linear(8, 8), FloatRecurrent(), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc_out(self.recurrent(self.fc_in(x)))


# ---- an LSTM-like custom module with nn.LSTM's signature: forward(x, hidden=None) -> (output, (h, c)) ----

class FloatLSTMLike(nn.Module):
    """An LSTM cell run over time in a Python loop (not traceable), returning (output, (h, c)) as nn.LSTM does."""

    def __init__(self, size=8):
        super().__init__()
        self.gates = nn.Linear(2 * size, 4 * size)

    def forward(self, x, hidden=None):  # x: (time, batch, size); hidden: (h, c), each (batch, size)
        h, c = hidden if hidden is not None else (torch.zeros_like(x[0]), torch.zeros_like(x[0]))
        return _lstm_loop(x, h, c, lambda v: self.gates(v))


def _lstm_loop(x, h, c, gates):
    outputs = []
    for t in range(x.size(0)):
        i, f, g, o = gates(torch.cat([x[t], h], dim=-1)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


class ObservedLSTMLike(FloatLSTMLike):
    """Observes output, h and c. ``output_quantized_idxs`` (class or instance attribute; None: all three) tells
    fxq which of the flattened outputs (output, h, c) the quantized module returns quantized."""

    output_quantized_idxs = None

    @classmethod
    def from_float(cls, float_module):
        observed = cls()
        observed.gates, observed.qconfig = float_module.gates, float_module.qconfig
        observed.observers = nn.ModuleList(float_module.qconfig.activation() for _ in range(3))
        return observed

    def forward(self, x, hidden=None):
        output, (h, c) = super().forward(x, hidden)
        return self.observers[0](output), (self.observers[1](h), self.observers[2](c))


class ObservedLSTMLikeOutputOnly(ObservedLSTMLike):
    """Returns only the output quantized; h and c stay float."""

    output_quantized_idxs = [0]


class ObservedLSTMLikeFloatState(ObservedLSTMLike):
    """Takes x quantized and the state (h0, c0) float (inputs are counted flat: x, h0, c0)."""

    input_quantized_idxs = [0]


def _dequantized(value):
    return value.dequantize() if value.is_quantized else value


class StaticQuantLSTMLike(nn.Module):
    """Takes quint8 x (and h, c, quantized or float), returns (output, (h, c)) quantized where the observed
    module's output_quantized_idxs says; int8 weights, the loop runs on their float values."""

    @classmethod
    def from_observed(cls, observed):
        module = cls()
        module.weight = _quantized_weight(observed.gates).dequantize()
        module.bias = observed.gates.bias.detach()
        module.qparams = [tuple(float(v) for v in o.calculate_qparams()) for o in observed.observers]
        quantized = observed.output_quantized_idxs
        module.quantized_outputs = [0, 1, 2] if quantized is None else list(quantized)
        return module

    def forward(self, xq, hidden=None):
        x = xq.dequantize()
        h, c = (torch.zeros_like(x[0]), torch.zeros_like(x[0])) if hidden is None else map(_dequantized, hidden)
        output, (h, c) = _lstm_loop(x, h, c, lambda v: torch.nn.functional.linear(v, self.weight, self.bias))
        values = [output, h, c]
        for index in self.quantized_outputs:
            scale, zero_point = self.qparams[index]
            values[index] = torch.quantize_per_tensor(values[index], scale, int(zero_point), torch.quint8)
        return values[0], (values[1], values[2])


class WithLSTMLike(nn.Module):
    """Unpacks the custom module's tuple: output into a Linear, h through a Linear, c straight out."""

    def __init__(self):
        super().__init__()
        self.fc_in, self.recurrent = nn.Linear(8, 8), FloatLSTMLike()
        self.fc_out, self.fc_h = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        output, (h, c) = self.recurrent(self.fc_in(x))
        return self.fc_out(output), torch.relu(self.fc_h(h)), c


class WithLSTMLikeState(nn.Module):
    """Passes the hidden state in, as (h0, c0), and returns the hidden tuple whole."""

    def __init__(self):
        super().__init__()
        self.fc_in, self.recurrent, self.fc_out = nn.Linear(8, 8), FloatLSTMLike(), nn.Linear(8, 8)

    def forward(self, x, h0, c0):
        output, hidden = self.recurrent(self.fc_in(x), (h0, c0))
        return self.fc_out(output), hidden


class WithLSTMLikeWhole(nn.Module):
    """Returns the custom module's tuple as the model's output, unopened."""

    def __init__(self):
        super().__init__()
        self.fc_in, self.recurrent = nn.Linear(8, 8), FloatLSTMLike()

    def forward(self, x):
        return self.recurrent(self.fc_in(x))
