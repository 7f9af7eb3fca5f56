"""Quantizer specs: small immutable descriptions of a quantizer that compose, and build observers or fake-quants.

A :class:`QuantizerSpec` says what a quantizer does (bit width, signedness, narrow range, granularity, how the range
is set, zero-point policy, rounding); calling it builds a fresh module, so it goes wherever an observer
constructor goes (``QConfig(activation=spec, ...)``, ``fxq.find_quantizers(...).initialize(spec)``).
A :class:`LayerSpec` is a QConfig made of specs: accepted wherever a QConfig is (QConfigMapping, ``set_mpath``), and
``.with_(weight_bit_width=4)`` overrides one field of one quantizer (prefixes ``weight_``, ``input_``, ``output_``,
``activation_``, ``bias_``). A conflicting or incomplete spec fails when it is made, naming the field and value.

    >>> spec = INT4_PER_CHANNEL_WEIGHT.with_(rounding="ste")
    >>> spec
    QuantizerSpec(int4, signed, channel, minmax, symmetric, ste)
    >>> layer = W4A8.with_(weight_bit_width=2, output_range="learned")
    >>> layer.short()
    'LayerSpec(act=uint8 tensor learned ste, w=int2 channel minmax symmetric ste)'
    >>> UINT8_ACTIVATION.with_(range="percentile", percentile=99.9).short()
    'uint8 tensor percentile99.9'
    >>> INT4_GROUPED_WEIGHT.short(), BINARY_WEIGHT.short()
    ('int4 group32 minmax symmetric', 'int1 channel mean_abs symmetric ste')

Ranges: ``minmax`` / ``moving_average`` (min and max seen), ``percentile`` (that percentile of the values,
:class:`fxq.observers.PercentileObserver`), ``mse`` (histogram search), ``learned`` (LSQ), ``mean_abs`` (binary
weights only: scale = mean |w|, XNOR-Net). Granularity ``group`` (weights of Linear layers, symmetric signed) gives
a scale per ``group_size`` inputs of each output channel; convert makes such layers weight-only Linears holding the
integers and the scales (no int8 kernel takes per-group scales). ``bit_width=1`` is binary: {-1, +1} x scale.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from fxq import observers as obs
from fxq.config.qconfig import QConfig

__all__ = ["QuantizerSpec", "LayerSpec", "SpecError", "INT8_PER_CHANNEL_WEIGHT", "UINT8_ACTIVATION",
           "INT4_PER_CHANNEL_WEIGHT", "INT4_GROUPED_WEIGHT", "TERNARY_WEIGHT", "BINARY_WEIGHT", "W8A8", "W4A8"]

_GRANULARITIES = ("tensor", "channel", "group")
_RANGES = ("minmax", "moving_average", "mse", "learned", "percentile", "mean_abs")
_ROUNDINGS = ("nearest", "ste")


class SpecError(ValueError):
    """A quantizer spec that conflicts with itself or lacks a field; names the field and the value."""


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
    """One quantizer. ``rounding="ste"`` makes a fake-quant for training (straight-through rounding);
    ``"nearest"`` an observer for post-training calibration."""

    bit_width: int = 8
    signed: bool = False
    narrow_range: bool = False
    granularity: str = "tensor"
    ch_axis: int = 0
    group_size: Optional[int] = None
    range: str = "minmax"
    symmetric: bool = False
    rounding: str = "nearest"
    averaging_constant: float = 0.01
    percentile: float = 99.99

    def __post_init__(self) -> None:
        _check_choice("granularity", self.granularity, _GRANULARITIES)
        _check_choice("range", self.range, _RANGES)
        _check_choice("rounding", self.rounding, _ROUNDINGS)
        if not 1 <= self.bit_width <= 8:
            raise SpecError(f"QuantizerSpec(bit_width={self.bit_width}): fxq's int8 kernels hold 1 (binary, signed "
                            f"symmetric weights) to 8 bits")
        if not isinstance(self.percentile, (int, float)) or not 50 < self.percentile <= 100:
            raise SpecError(f"QuantizerSpec(percentile={self.percentile!r}): the percentile must be in (50, 100] "
                            f"(99.99 keeps all but the outer 0.01% of the values)")
        if self.granularity == "group":
            self._check_group()
        if self.bit_width == 1 or self.range == "mean_abs":
            self._check_binary()
        if self.range == "learned" and self.rounding != "ste":
            raise SpecError("QuantizerSpec(range='learned', rounding='nearest') conflicts: a learned range is "
                            "trained through straight-through rounding; set rounding='ste'")
        if self.range == "mse" and self.granularity != "tensor":
            raise SpecError(f"QuantizerSpec(range='mse', granularity={self.granularity!r}) conflicts: the MSE "
                            f"range search is per tensor")
        if self.range == "percentile" and self.granularity != "tensor":
            raise SpecError(f"QuantizerSpec(range='percentile', granularity={self.granularity!r}) conflicts: the "
                            f"percentile range is per tensor; use granularity='tensor'")
        if self.narrow_range and not self.signed:
            raise SpecError("QuantizerSpec(narrow_range=True, signed=False) conflicts: narrow range drops the most "
                            "negative value of a signed type")

    def _check_group(self) -> None:
        if not self.group_size:
            raise SpecError("QuantizerSpec(granularity='group') is incomplete: give group_size=")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise SpecError(f"QuantizerSpec(group_size={self.group_size!r}): give a positive int")
        if not (self.signed and self.symmetric):
            raise SpecError(f"QuantizerSpec(granularity='group', signed={self.signed}, symmetric={self.symmetric}) "
                            f"conflicts: grouped weights are symmetric signed; set signed=True, symmetric=True")
        if self.range != "minmax" or self.narrow_range or self.bit_width < 2:
            raise SpecError(f"QuantizerSpec(granularity='group', range={self.range!r}, narrow_range="
                            f"{self.narrow_range}, bit_width={self.bit_width}) conflicts: a group's scale is its "
                            f"max |w| over 2 to 8 bits; use range='minmax', narrow_range=False")

    def _check_binary(self) -> None:
        if self.bit_width != 1 or self.range != "mean_abs":
            raise SpecError(f"QuantizerSpec(bit_width={self.bit_width}, range={self.range!r}) conflicts: binary "
                            f"weights ({{-1, +1}} x scale) take bit_width=1 with range='mean_abs' (scale = mean |w|), "
                            f"and range='mean_abs' is for binary weights only")
        if not (self.signed and self.symmetric) or self.narrow_range or self.granularity == "group":
            raise SpecError(f"QuantizerSpec(bit_width=1, signed={self.signed}, symmetric={self.symmetric}, "
                            f"narrow_range={self.narrow_range}, granularity={self.granularity!r}) conflicts: binary "
                            f"weights are signed symmetric, per tensor or channel; set signed=True, symmetric=True")

    def with_(self, **changes: Any) -> "QuantizerSpec":
        """A copy with ``changes`` applied (and checked)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise SpecError(f"QuantizerSpec has no field {', '.join(unknown)}; fields: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    @property
    def quant_range(self) -> tuple[int, int]:
        if self.bit_width == 1:
            return -1, 1  # binary: the integers are -1 and +1
        if self.signed:
            low, high = -(2 ** (self.bit_width - 1)), 2 ** (self.bit_width - 1) - 1
            return (low + 1 if self.narrow_range else low), high
        return 0, 2 ** self.bit_width - 1

    def _observer_kwargs(self) -> dict:
        per_channel = self.granularity == "channel"
        if self.symmetric:
            qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
        else:
            qscheme = torch.per_channel_affine if per_channel else torch.per_tensor_affine
        low, high = self.quant_range
        kwargs = dict(dtype=torch.qint8 if self.signed else torch.quint8, qscheme=qscheme, quant_min=low,
                      quant_max=high)
        return {**kwargs, "ch_axis": self.ch_axis} if per_channel else kwargs

    def _observer_class(self) -> type:
        if self.range == "mse":
            return obs.HistogramObserver
        if self.range == "percentile":
            return obs.PercentileObserver
        per_channel = self.granularity == "channel"
        if self.range in ("moving_average", "learned") or self.rounding == "ste":
            return obs.MovingAveragePerChannelMinMaxObserver if per_channel else obs.MovingAverageMinMaxObserver
        return obs.PerChannelMinMaxObserver if per_channel else obs.MinMaxObserver

    def __call__(self) -> torch.nn.Module:
        """A fresh observer (rounding='nearest') or fake-quant (rounding='ste') module.

        Grouped and binary weights get their fake-quant either way (GroupedWeightFakeQuantize,
        BinaryWeightFakeQuantize): post-training, convert runs it once on the weight.

        >>> type(UINT8_ACTIVATION.with_(range="percentile")()).__name__
        'PercentileObserver'
        """
        if self.granularity == "group":
            low, high = self.quant_range
            return obs.GroupedWeightFakeQuantize(group_size=self.group_size, quant_min=low, quant_max=high)
        if self.bit_width == 1:
            return obs.BinaryWeightFakeQuantize(per_channel=self.granularity == "channel", ch_axis=self.ch_axis)
        observer = self._observer_class()
        kwargs = self._observer_kwargs()
        if observer in (obs.MovingAverageMinMaxObserver, obs.MovingAveragePerChannelMinMaxObserver):
            kwargs["averaging_constant"] = self.averaging_constant
        if observer is obs.PercentileObserver:
            kwargs["percentile"] = self.percentile
        if self.rounding == "nearest":
            return observer(**kwargs)
        if self.range == "learned":
            return obs.LearnableFakeQuantize(observer=observer, use_grad_scaling=True, **kwargs)
        return obs.FakeQuantize(observer=observer, **kwargs)

    def __repr__(self) -> str:
        parts = [f"{'int' if self.signed else 'uint'}{self.bit_width}", "signed" if self.signed else "unsigned"]
        parts += ["narrow"] if self.narrow_range else []
        parts += [self._granularity_word(), self._range_word(), "symmetric" if self.symmetric else "affine",
                  self.rounding]
        return f"QuantizerSpec({', '.join(parts)})"

    def _granularity_word(self) -> str:
        return self.granularity if self.granularity != "group" else f"group{self.group_size}"

    def _range_word(self) -> str:
        return self.range if self.range != "percentile" else f"percentile{self.percentile:g}"

    def short(self) -> str:
        """The spec in a few words, as dumps print it: ``int4 group32 minmax symmetric``."""
        words = [f"{'int' if self.signed else 'uint'}{self.bit_width}", self._granularity_word(), self._range_word()]
        words += ["symmetric"] if self.symmetric else []
        words += ["narrow"] if self.narrow_range else []
        return " ".join(words + ([self.rounding] if self.rounding == "ste" else []))


def _check_choice(field: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise SpecError(f"QuantizerSpec({field}={value!r}): expected one of {', '.join(map(repr, choices))}")


_PREFIXES = {"weight_": "weight", "activation_": "activation", "input_": "activation", "output_": "activation"}


class LayerSpec(QConfig):
    """A QConfig built from quantizer specs: ``activation`` (a layer's input and output) and ``weight``."""

    def __new__(cls, activation: Optional[QuantizerSpec], weight: Optional[QuantizerSpec]) -> "LayerSpec":
        for name, spec in (("activation", activation), ("weight", weight)):
            if spec is not None and not isinstance(spec, QuantizerSpec):
                raise SpecError(f"LayerSpec({name}={spec!r}): expected a QuantizerSpec or None")
        return super().__new__(cls, activation, weight)

    def with_(self, **changes: Any) -> "LayerSpec":
        """Override fields of one quantizer by prefix: ``with_(weight_bit_width=4, output_range='learned')``.

        fxq quantizes a layer's input and output with one activation quantizer, so ``input_`` and ``output_``
        both address it (and must agree); ``bias_`` is refused (biases stay float in the int8 kernels)."""
        grouped: dict = {"activation": {}, "weight": {}}
        for key, value in changes.items():
            prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
            if key.startswith("bias_"):
                raise SpecError(f"LayerSpec.with_({key}={value!r}): biases stay float (int32 inside the kernels); "
                                f"there is no bias quantizer to set")
            if prefix is None:
                raise SpecError(f"LayerSpec.with_({key}=...): prefix the field with weight_, input_, output_ or "
                                f"activation_")
            role, field = _PREFIXES[prefix], key[len(prefix):]
            if field in grouped[role] and grouped[role][field] != value:
                raise SpecError(f"LayerSpec.with_: {key}={value!r} conflicts with {grouped[role][field]!r} for the "
                                f"same activation quantizer (one quantizer serves a layer's input and output)")
            grouped[role][field] = value
        activation, weight = self.activation, self.weight
        if grouped["activation"]:
            activation = (activation or QuantizerSpec()).with_(**grouped["activation"])
        if grouped["weight"]:
            weight = (weight or QuantizerSpec(signed=True, symmetric=True)).with_(**grouped["weight"])
        return LayerSpec(activation, weight)

    def short(self) -> str:
        def text(spec: Optional[QuantizerSpec]) -> str:
            return "None" if spec is None else spec.short()
        return f"LayerSpec(act={text(self.activation)}, w={text(self.weight)})"

    __str__ = short
    __repr__ = short


# ---- presets ----
INT8_PER_CHANNEL_WEIGHT = QuantizerSpec(signed=True, granularity="channel", symmetric=True)
UINT8_ACTIVATION = QuantizerSpec()
INT4_PER_CHANNEL_WEIGHT = INT8_PER_CHANNEL_WEIGHT.with_(bit_width=4)
INT4_GROUPED_WEIGHT = INT4_PER_CHANNEL_WEIGHT.with_(granularity="group", group_size=32)
TERNARY_WEIGHT = QuantizerSpec(bit_width=2, signed=True, narrow_range=True, granularity="channel", symmetric=True,
                               rounding="ste")  # {-1, 0, +1} x scale, for QAT research
BINARY_WEIGHT = QuantizerSpec(bit_width=1, signed=True, granularity="channel", range="mean_abs", symmetric=True,
                              rounding="ste")  # {-1, +1} x mean |w| per channel (XNOR-Net), for QAT research
W8A8 = LayerSpec(UINT8_ACTIVATION, INT8_PER_CHANNEL_WEIGHT)
W4A8 = LayerSpec(UINT8_ACTIVATION.with_(rounding="ste"), INT4_PER_CHANNEL_WEIGHT.with_(rounding="ste"))
