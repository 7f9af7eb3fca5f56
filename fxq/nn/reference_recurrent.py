"""Reference (simulated-quantization) LSTM and GRU for the dynamic modes.

Each weight matrix (``weight_ih_l0``, ``weight_hh_l0_reverse``, ...) has its own qparams, computed by the
qconfig's weight observer; ``forward`` runs the float recurrence on the quantize-dequantized matrices, which is
what the int8 cells of ``fxq.nn.quantized.recurrent`` multiply by. Biases stay float, as in the kernels.

    >>> import torch
    >>> from fxq.observers import MinMaxObserver
    >>> ref = LSTM.from_float(torch.nn.LSTM(4, 8), lambda: MinMaxObserver(dtype=torch.qint8))
    >>> ref.quantized_weight("weight_ih_l0").dtype
    torch.qint8
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from torch import nn

from fxq.nn.weight_quantize import quantize_per_channel

__all__ = ["LSTM", "GRU"]


def _observe(observer: nn.Module, weight: torch.Tensor) -> Dict[str, Any]:
    observer(weight.detach().float())
    scale, zero_point = observer.calculate_qparams()
    per_channel = observer.qscheme in (torch.per_channel_affine, torch.per_channel_symmetric)
    return {"scale": scale, "zero_point": zero_point, "per_channel": per_channel,
            "axis": getattr(observer, "ch_axis", 0), "dtype": observer.dtype}


class _ReferenceRecurrent:
    """Mixin over nn.LSTM / nn.GRU: per-matrix weight qparams in buffers, quantize-dequantized weights in forward."""

    def weight_names(self) -> List[str]:
        return [name for name in self._flat_weights_names if name.startswith("weight_")]

    def quantized_weight(self, name: str) -> torch.Tensor:
        weight = getattr(self, name).detach().float()
        scale, zero_point = getattr(self, name + "_scale"), getattr(self, name + "_zero_point")
        if not self.weight_per_channel:
            return torch.quantize_per_tensor(weight, float(scale), int(zero_point), self.weight_dtype)
        return quantize_per_channel(weight, scale, zero_point, 0, self.weight_dtype)

    def dequantized_weight(self, name: str) -> torch.Tensor:
        """``quantized_weight(name).dequantize()`` in float arithmetic: no (deprecated) quantized tensor is made."""
        weight = getattr(self, name).detach().float()
        scale, zero_point = getattr(self, name + "_scale").float(), getattr(self, name + "_zero_point")
        if self.weight_per_channel:
            scale, zero_point = scale.reshape(-1, 1), zero_point.reshape(-1, 1)
        info = torch.iinfo(torch.int8 if self.weight_dtype == torch.qint8 else torch.uint8)
        integers = torch.clamp(torch.round(weight * (1.0 / scale)) + zero_point, info.min, info.max)
        return (integers - zero_point) * scale

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        float_weights = self._flat_weights
        names = set(self.weight_names())
        self._flat_weights = [self.dequantized_weight(name) if name in names else value
                              for name, value in zip(self._flat_weights_names, float_weights)]
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._flat_weights = float_weights

    def _get_name(self) -> str:
        return "ReferenceQuantized" + type(self).__name__

    @classmethod
    def from_float(cls, rnn: nn.RNNBase, make_observer: Callable[[], nn.Module]) -> nn.RNNBase:
        """A reference copy of ``rnn`` sharing its parameters; ``make_observer()`` gives one weight observer."""
        if rnn.mode not in ("LSTM", "GRU") or getattr(rnn, "proj_size", 0):
            raise ValueError(f"{type(rnn).__name__}: only LSTM and GRU without proj_size have int8 cells")
        reference = cls(rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias, rnn.batch_first,
                        float(rnn.dropout), rnn.bidirectional, device="meta")
        for name in rnn._flat_weights_names:
            setattr(reference, name, nn.Parameter(getattr(rnn, name).detach(), requires_grad=False))
        for name in reference.weight_names():
            qparams = _observe(make_observer(), getattr(rnn, name))
            if qparams["per_channel"] and qparams["axis"] != 0:
                raise ValueError(f"{name}: per-channel weight qparams must be along the output rows (ch_axis=0)")
            reference.weight_dtype, reference.weight_per_channel = qparams["dtype"], qparams["per_channel"]
            reference.register_buffer(name + "_scale", torch.as_tensor(qparams["scale"], dtype=torch.float))
            reference.register_buffer(name + "_zero_point", torch.as_tensor(qparams["zero_point"], dtype=torch.long))
        return reference.eval()


class LSTM(_ReferenceRecurrent, nn.LSTM):
    """`nn.LSTM` whose weight matrices are quantize-dequantized in forward."""


class GRU(_ReferenceRecurrent, nn.GRU):
    """`nn.GRU` whose weight matrices are quantize-dequantized in forward."""
