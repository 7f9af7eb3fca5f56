"""Dynamically quantized LSTM and GRU: int8 (or float16) weight matrices, activations quantized per step.

fp32 in, fp32 out, same call signature as nn.LSTM / nn.GRU (batched or unbatched input, optional initial
state; packed sequences are not supported). The weights are kept as quantized tensors (they serialise) and
packed into the engine's cell parameters on first use, since packed cells cannot be pickled.

    >>> import torch
    >>> from fxq.nn import reference_recurrent
    >>> from fxq.observers import MinMaxObserver
    >>> ref = reference_recurrent.LSTM.from_float(torch.nn.LSTM(4, 8), lambda: MinMaxObserver(dtype=torch.qint8))
    >>> out, (h, c) = LSTM.from_reference(ref)(torch.randn(5, 2, 4))
    >>> tuple(out.shape), tuple(h.shape)
    ((5, 2, 8), (1, 2, 8))
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import nn

from fxq.nn import reference_recurrent

__all__ = ["LSTM", "GRU"]


class _DynamicRecurrent(nn.Module):
    mode = ""

    def __init__(self, float_config: dict, weights: dict, biases: dict, dtype: torch.dtype):
        super().__init__()
        for key, value in float_config.items():
            setattr(self, key, value)
        self.dtype = dtype
        self.cell_names: List[str] = []
        for name, weight in weights.items():  # name: "l0" or "l0_reverse"
            self.cell_names.append(name)
            self.register_buffer(f"weight_ih_{name}", weight[0])
            self.register_buffer(f"weight_hh_{name}", weight[1])
            self.register_buffer(f"bias_ih_{name}", biases[name][0])
            self.register_buffer(f"bias_hh_{name}", biases[name][1])
        self._cells: Optional[list] = None

    @classmethod
    def from_reference(cls, ref: nn.RNNBase) -> "_DynamicRecurrent":
        """int8 cells from a reference LSTM / GRU (its weight qparams); biases stay float."""
        expected = getattr(reference_recurrent, cls.mode)
        if not isinstance(ref, expected):
            raise TypeError(f"dynamic {cls.mode}.from_reference expects {expected.__name__}, got {type(ref).__name__}")
        return cls(_config(ref), {name: (ref.quantized_weight(f"weight_ih_{name}"),
                                         ref.quantized_weight(f"weight_hh_{name}")) for name in _cell_names(ref)},
                   _biases(ref), torch.qint8)

    @classmethod
    def from_float_fp16(cls, rnn: nn.RNNBase) -> "_DynamicRecurrent":
        """float16 weight matrices (packed by the fp16 kernels), float biases."""
        if rnn.mode != cls.mode or getattr(rnn, "proj_size", 0):
            raise ValueError(f"dynamic {cls.mode} needs an nn.{cls.mode} without proj_size, got {rnn}")
        weights = {name: (getattr(rnn, f"weight_ih_{name}").detach().float(),
                          getattr(rnn, f"weight_hh_{name}").detach().float()) for name in _cell_names(rnn)}
        return cls(_config(rnn), weights, _biases(rnn), torch.float16)

    def _packed_cells(self) -> list:
        if self._cells is None:
            self._cells = [self._pack(name) for name in self.cell_names]
        return self._cells

    def _pack(self, name: str) -> Any:
        w_ih, w_hh = getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")
        b_ih, b_hh = getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}")
        if self.dtype == torch.float16:
            pack = torch.ops.quantized.linear_prepack_fp16
            return torch.ops.quantized.make_quantized_cell_params_fp16(pack(w_ih, b_ih), pack(w_hh, b_hh))
        return torch.ops.quantized.make_quantized_cell_params_dynamic(
            torch.ops.quantized.linear_prepack(w_ih, b_ih), torch.ops.quantized.linear_prepack(w_hh, b_hh),
            b_ih, b_hh, True)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cells = None  # new weights: pack again on the next call
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cells"] = None  # packed cells do not pickle or deep-copy; they are rebuilt from the buffers
        return state

    def _batched(self, x: torch.Tensor, hx: Any) -> tuple:
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise NotImplementedError(f"dynamic quantized {self.mode}: packed sequences are not supported; pad the "
                                      "batch, or keep this module float with set_module_name(name, None)")
        if x.dim() == 3:
            return x, hx, True
        batch_dim = 0 if self.batch_first else 1
        hx = None if hx is None else (tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1))
        return x.unsqueeze(batch_dim), hx, False

    def _zero_state(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0 if self.batch_first else 1]
        return torch.zeros(self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size, dtype=x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, weight_dtype={self.dtype}")


class LSTM(_DynamicRecurrent):
    """Dynamic int8 / float16 LSTM: ``output, (h_n, c_n) = lstm(x, (h_0, c_0))``."""
    mode = "LSTM"

    def forward(self, x: torch.Tensor, hx: Optional[tuple] = None) -> tuple:
        x, hx, batched = self._batched(x, hx)
        if hx is None:
            hx = (self._zero_state(x), self._zero_state(x))
        output, h, c = torch.quantized_lstm(x, list(hx), self._packed_cells(), True, self.num_layers,
                                            float(self.dropout), False, self.bidirectional, self.batch_first,
                                            dtype=self.dtype, use_dynamic=True)
        if not batched:
            return output.squeeze(0 if self.batch_first else 1), (h.squeeze(1), c.squeeze(1))
        return output, (h, c)

    def _get_name(self) -> str:
        return "DynamicQuantizedLSTM"


class GRU(_DynamicRecurrent):
    """Dynamic int8 / float16 GRU: ``output, h_n = gru(x, h_0)``."""
    mode = "GRU"

    def forward(self, x: torch.Tensor, hx: Optional[torch.Tensor] = None) -> tuple:
        x, hx, batched = self._batched(x, hx)
        if hx is None:
            hx = self._zero_state(x)
        output, h = torch.quantized_gru(x, hx, self._packed_cells(), True, self.num_layers, float(self.dropout),
                                        False, self.bidirectional, self.batch_first)
        if not batched:
            return output.squeeze(0 if self.batch_first else 1), h.squeeze(1)
        return output, h

    def _get_name(self) -> str:
        return "DynamicQuantizedGRU"


def _cell_names(rnn: nn.RNNBase) -> List[str]:
    return [f"l{layer}{suffix}" for layer in range(rnn.num_layers)
            for suffix in ("", "_reverse")[:2 if rnn.bidirectional else 1]]


def _config(rnn: nn.RNNBase) -> dict:
    return {"input_size": rnn.input_size, "hidden_size": rnn.hidden_size, "num_layers": rnn.num_layers,
            "batch_first": rnn.batch_first, "dropout": float(rnn.dropout), "bidirectional": rnn.bidirectional}


def _biases(rnn: nn.RNNBase) -> dict:
    """Float biases per cell; zeros for a module built with bias=False (the kernels always add one)."""
    gates = 4 if rnn.mode == "LSTM" else 3
    zeros = torch.zeros(gates * rnn.hidden_size)
    return {name: tuple(getattr(rnn, f"bias_{kind}_{name}").detach().float() if rnn.bias else zeros.clone()
                        for kind in ("ih", "hh")) for name in _cell_names(rnn)}
