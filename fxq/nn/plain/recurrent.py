"""Dynamic int8 LSTM and GRU on plain tensors: the recurrence in float, its matrix products on int8 kernels.

Each layer and direction holds two :class:`~fxq.nn.plain.DynamicLinear` projections, input-to-hidden and
hidden-to-hidden (int8 weights and float biases as buffers, activations quantized per token on each call). The
input projection runs once over every time step; the hidden one once per step, on the previous hidden state. Gate
order and arithmetic follow nn.LSTM / nn.GRU, so a float module's outputs are what these compute with float
weights. Batched or unbatched input, ``batch_first``, stacked and bidirectional layers and an initial state are
supported; packed sequences and ``proj_size`` are not; dropout between layers is a training feature and is not
applied. No quantized tensor is created (PyTorch AO's dynamic LSTM keeps qint8 weights, which torch 2.13
deprecates).

    >>> from fxq.nn import reference_recurrent
    >>> from fxq.observers import PerChannelMinMaxObserver
    >>> observer = lambda: PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    >>> ref = reference_recurrent.LSTM.from_float(torch.nn.LSTM(4, 8), observer)
    >>> out, (h, c) = LSTM.from_reference(ref)(torch.randn(5, 2, 4))
    >>> tuple(out.shape), tuple(h.shape)
    ((5, 2, 8), (1, 2, 8))
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from fxq.nn import reference, reference_recurrent
from fxq.nn.plain._base import weight_qparams_accepted
from fxq.nn.plain.dynamic import DynamicLinear, _default_weight_qparams

__all__ = ["LSTM", "GRU"]


class _Recurrent(nn.Module):
    mode, gates = "", 0

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = False,
                 bidirectional: bool = False) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.bidirectional = batch_first, bidirectional
        self.directions = 2 if bidirectional else 1
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()  # one entry per (layer, direction), layer-major
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self.directions
            for _ in range(self.directions):
                self.ih.append(DynamicLinear(width, self.gates * hidden_size, per_token=True))
                self.hh.append(DynamicLinear(hidden_size, self.gates * hidden_size, per_token=True))

    @classmethod
    def from_reference(cls, ref: nn.RNNBase) -> "_Recurrent":
        """From a reference LSTM / GRU (fxq.nn.reference_recurrent): each weight matrix with its qparams where the
        kernels take them (symmetric, per output row or per tensor), else symmetric per row; biases float."""
        expected = getattr(reference_recurrent, cls.mode)
        if not isinstance(ref, expected):
            raise TypeError(f"fxq.nn.plain.{cls.mode}.from_reference expects {expected.__name__}, got "
                            f"{type(ref).__name__}")
        module = cls(ref.input_size, ref.hidden_size, ref.num_layers, ref.batch_first, ref.bidirectional)
        suffixes = ("", "_reverse")[:module.directions]
        cells = [f"l{layer}{suffix}" for layer in range(ref.num_layers) for suffix in suffixes]
        for index, cell in enumerate(cells):
            module.ih[index] = _projection(ref, "ih", cell)
            module.hh[index] = _projection(ref, "hh", cell)
        return module

    def forward(self, x: torch.Tensor, hx=None):
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise NotImplementedError(f"fxq.nn.plain.{self.mode}: packed sequences are not supported; pad the batch, "
                                      "or keep this module float with set_module_name(name, None)")
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else _map_state(hx, lambda h: h.unsqueeze(1))
        steps = x.transpose(0, 1) if self.batch_first else x  # time-major: (T, B, features)
        states = self._initial_states(steps, hx)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                index = layer * self.directions + direction
                out, final = self._run(steps, states[index], index, reverse=direction == 1)
                outputs.append(out)
                finals.append(final)
            steps = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        output = steps.transpose(0, 1) if self.batch_first else steps
        state = self._stack(finals)
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            state = _map_state(state, lambda h: h.squeeze(1))
        return output, state

    def _run(self, steps: torch.Tensor, state, index: int, reverse: bool):
        projected = self.ih[index](steps)  # every step at once: (T, B, gates * hidden)
        order = range(steps.shape[0] - 1, -1, -1) if reverse else range(steps.shape[0])
        outputs: List[Optional[torch.Tensor]] = [None] * steps.shape[0]
        for t in order:
            state = self._cell(projected[t], state, self.hh[index])
            outputs[t] = state[0] if isinstance(state, tuple) else state
        return torch.stack(outputs), state

    def _zeros(self, steps: torch.Tensor) -> torch.Tensor:
        return steps.new_zeros(steps.shape[1], self.hidden_size)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}, "
                f"bidirectional={self.bidirectional}, weights=int8, activations=per_token")


class LSTM(_Recurrent):
    """Dynamic int8 LSTM: ``output, (h_n, c_n) = lstm(x, (h_0, c_0))``, as nn.LSTM computes it."""
    mode, gates = "LSTM", 4

    @staticmethod
    def _cell(projected: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor], hh: DynamicLinear):
        h, c = state
        i, f, g, o = (projected + hh(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _initial_states(self, steps: torch.Tensor, hx) -> list:
        if hx is None:
            return [(self._zeros(steps), self._zeros(steps)) for _ in range(len(self.ih))]
        h, c = hx
        return [(h[i].float(), c[i].float()) for i in range(len(self.ih))]

    @staticmethod
    def _stack(finals: list):
        return torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])

    def _get_name(self) -> str:
        return "Int8DynamicLSTM"


class GRU(_Recurrent):
    """Dynamic int8 GRU: ``output, h_n = gru(x, h_0)``, as nn.GRU computes it."""
    mode, gates = "GRU", 3

    @staticmethod
    def _cell(projected: torch.Tensor, h: torch.Tensor, hh: DynamicLinear) -> torch.Tensor:
        x_r, x_z, x_n = projected.chunk(3, dim=-1)
        h_r, h_z, h_n = hh(h).chunk(3, dim=-1)  # the hidden bias of n sits inside the reset gate's product
        reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return candidate + update * (h - candidate)

    def _initial_states(self, steps: torch.Tensor, hx) -> list:
        return [self._zeros(steps) if hx is None else hx[i].float() for i in range(len(self.ih))]

    @staticmethod
    def _stack(finals: list) -> torch.Tensor:
        return torch.stack(finals)

    def _get_name(self) -> str:
        return "Int8DynamicGRU"


def _projection(ref: nn.RNNBase, kind: str, cell: str) -> DynamicLinear:
    """The int8 DynamicLinear of ``weight_{kind}_{cell}`` with its bias (zeros when the module has none)."""
    weight = getattr(ref, f"weight_{kind}_{cell}").detach().float()
    bias = getattr(ref, f"bias_{kind}_{cell}", None) if ref.bias else None
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias.detach().float() if bias is not None else torch.zeros(weight.shape[0]))
    scale, zero_point = getattr(ref, f"weight_{kind}_{cell}_scale"), getattr(ref, f"weight_{kind}_{cell}_zero_point")
    per_channel = bool(ref.weight_per_channel)
    qparams = {"qscheme": torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
               "dtype": ref.weight_dtype, "scale": scale, "zero_point": zero_point}
    if per_channel:
        qparams["axis"] = 0
    candidate = reference.Linear.from_float(linear, qparams)
    if not weight_qparams_accepted(candidate)[0]:  # an asymmetric (per-tensor affine) weight: the kernels need 0
        candidate = reference.Linear.from_float(linear, _default_weight_qparams(weight))
    return DynamicLinear.from_reference(candidate, per_token=True)


def _map_state(state, apply):
    return tuple(apply(s) for s in state) if isinstance(state, tuple) else apply(state)
