"""Weight fake-quants whose integer grid is not one scale per tensor or channel: grouped and binary weights.

:class:`GroupedWeightFakeQuantize` gives each output channel one symmetric scale per ``group_size`` consecutive
input elements (``scale[o, g] = max |w[o, g*G:(g+1)*G]| / ((quant_max - quant_min) / 2)``, as the symmetric
observers compute a channel's). No int8 kernel takes such scales, so convert turns the layer into a weight-only
Linear storing the integers and the scales (``fxq.nn.quantized.weight_only.Linear``, ``group_size`` set).

:class:`BinaryWeightFakeQuantize` maps each weight to ``sign(w) * scale`` (sign(0) = +1), ``scale`` the mean of
``|w|`` per output channel, the choice of XNOR-Net (Rastegari et al., 2016), which minimises
``||w - scale * sign(w)||^2`` for a given sign pattern. The integers are {-1, +1}, so the int8 kernels take them
as qint8 with that scale.

Both round straight through in training: the forward value is exactly the grid value (``grid.detach() + (w -
w.detach())``, an exact zero added), the gradient reaches ``w`` unchanged (grouped: zero where the weight was
clamped). Convert reads the ``scale`` the last forward used.

    >>> import torch
    >>> binary = BinaryWeightFakeQuantize()
    >>> binary(torch.tensor([[0.5, -1.5], [0.2, 0.0]]))
    tensor([[ 1.0000, -1.0000],
            [ 0.1000,  0.1000]])
    >>> grouped = GroupedWeightFakeQuantize(group_size=2, quant_min=-8, quant_max=7)
    >>> grouped(torch.tensor([[0.75, -0.1, 7.5, 1.0]])), grouped.scale
    (tensor([[ 0.7000, -0.1000,  7.0000,  1.0000]]), tensor([[0.1000, 1.0000]]))
"""
from __future__ import annotations

from typing import Optional

import torch

from fxq.observers import qparams as qp
from fxq.observers.fake_quantize import FakeQuantizeBase

__all__ = ["GroupedWeightFakeQuantize", "BinaryWeightFakeQuantize", "PER_GROUP_SYMMETRIC", "is_grouped"]

PER_GROUP_SYMMETRIC = "per_group_symmetric"  # no torch.qscheme names this; the grouped quantizer's qscheme
_EPS = torch.finfo(torch.float32).eps


def is_grouped(quantizer: object) -> bool:
    """True for a quantizer with a scale per group of input elements (convert gives it a weight-only Linear)."""
    return getattr(quantizer, "qscheme", None) == PER_GROUP_SYMMETRIC


def _straight_through(grid: torch.Tensor, weight: torch.Tensor, passes: Optional[torch.Tensor] = None):
    """``grid`` in the forward pass, exactly; the gradient of ``weight`` (masked by ``passes``) in the backward."""
    through = weight - weight.detach()  # exactly zero, carrying the gradient
    return grid.detach() + (through if passes is None else through * passes)


def _store_symmetric_scale(quantizer: FakeQuantizeBase, scale: torch.Tensor) -> None:
    """Copy ``scale`` into the quantizer's buffers (resized to its shape) with zero points of 0."""
    if quantizer.scale.shape != scale.shape:
        quantizer.scale.resize_(scale.shape)
        quantizer.zero_point.resize_(scale.shape)
    quantizer.scale.copy_(scale)
    quantizer.zero_point.zero_()


class GroupedWeightFakeQuantize(FakeQuantizeBase):
    """Symmetric signed fake quantization of a 2-D (out, in) weight with one scale per ``group_size`` inputs.

    ``scale`` / ``zero_point`` have shape (out, in / group_size). The input size must be a multiple of
    ``group_size``; the first forward checks it. See the module docstring for the formula.
    """

    _resizable_buffers = ("scale", "zero_point")

    def __init__(self, group_size: int = 32, quant_min: int = -8, quant_max: int = 7, dtype: torch.dtype = torch.qint8,
                 eps: float = _EPS) -> None:
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"GroupedWeightFakeQuantize(group_size={group_size!r}): give a positive int")
        qp.quant_range(dtype, False, quant_min, quant_max, "GroupedWeightFakeQuantize")  # checks the range fits
        super().__init__(dtype=dtype)
        self._set_plain(group_size=group_size, quant_min=quant_min, quant_max=quant_max, qscheme=PER_GROUP_SYMMETRIC,
                        ch_axis=0, is_per_channel=False, eps_value=eps)
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int))

    def check_weight(self, weight: torch.Tensor, layer: str = "") -> None:
        """Raise a ValueError naming ``layer`` unless ``weight`` is (out, in) with in a multiple of group_size."""
        where = f"layer '{layer}'" if layer else (self.__dict__.get("fxq_site") or "GroupedWeightFakeQuantize")
        if weight.dim() != 2:
            raise NotImplementedError(
                f"{where}: grouped weight quantization covers Linear weights (2-D); this weight has shape "
                f"{tuple(weight.shape)}. Give the layer granularity='channel' "
                f"(e.g. fxq.config.spec.INT4_PER_CHANNEL_WEIGHT)")
        if weight.shape[1] % self.group_size:
            raise ValueError(
                f"{where}: in_features={weight.shape[1]} is not a multiple of group_size={self.group_size}; pick a "
                f"group_size dividing {weight.shape[1]} or give this layer granularity='channel'")

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self.check_weight(weight)
        if self.observer_enabled[0] == 1:
            self._observe(weight.detach())
        if self.fake_quant_enabled[0] == 0:
            return weight
        ints, passes = self._integers(weight.detach())
        return _straight_through(self.dequantize(ints), weight, passes)

    def _observe(self, weight: torch.Tensor) -> None:
        groups = weight.float().reshape(weight.shape[0], -1, self.group_size)
        scale = groups.abs().amax(dim=2) / (float(self.quant_max - self.quant_min) / 2)
        _store_symmetric_scale(self, scale.clamp(min=self.eps_value))

    def _integers(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer weights (float tensor) and the mask of those not clamped."""
        scaled = weight.float() / self.scale.repeat_interleave(self.group_size, dim=1)
        rounded = scaled.round()
        return rounded.clamp(self.quant_min, self.quant_max), (rounded >= self.quant_min) & (rounded <= self.quant_max)

    def integer_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` on the grid of the scales the last forward used, as int8 (observes it first if never run)."""
        self.check_weight(weight)
        if not self.has_data():
            self._observe(weight.detach())
        return self._integers(weight.detach())[0].to(torch.int8)

    def dequantize(self, ints: torch.Tensor) -> torch.Tensor:
        """Integer weights (out, in) times their group's scale, in float32."""
        return ints.float() * self.scale.repeat_interleave(self.group_size, dim=1)

    def has_data(self) -> bool:
        return self.scale.dim() == 2

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frozen_qparams()

    def extra_repr(self) -> str:
        return (f"group_size={self.group_size}, quant_min={self.quant_min}, quant_max={self.quant_max}, "
                f"fake_quant_enabled={int(self.fake_quant_enabled)}, observer_enabled={int(self.observer_enabled)}")


class BinaryWeightFakeQuantize(FakeQuantizeBase):
    """Weights to ``sign(w) * mean|w|``, per output channel (``per_channel=True``, along ``ch_axis``) or per
    tensor; integers {-1, +1} stored as qint8 at convert. See the module docstring."""

    _resizable_buffers = ("scale", "zero_point")

    def __init__(self, per_channel: bool = True, ch_axis: int = 0, eps: float = _EPS) -> None:
        super().__init__(dtype=torch.qint8)
        qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
        self._set_plain(quant_min=-1, quant_max=1, qscheme=qscheme, ch_axis=ch_axis if per_channel else -1,
                        is_per_channel=per_channel, eps_value=eps)
        self.register_buffer("scale", torch.tensor([1.0]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.long if per_channel else torch.int))
        self.register_buffer("initialized", torch.tensor([0], dtype=torch.uint8))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self._observe(weight.detach())
        if self.fake_quant_enabled[0] == 0:
            return weight
        return _straight_through(self.grid_weight(weight), weight)

    def _observe(self, weight: torch.Tensor) -> None:
        if self.is_per_channel:
            rows = weight.float().movedim(self.ch_axis, 0).reshape(weight.shape[self.ch_axis], -1)
            scale = rows.abs().mean(dim=1)
        else:
            scale = weight.float().abs().mean().reshape(1)
        _store_symmetric_scale(self, scale.clamp(min=self.eps_value))
        self.initialized[0] = 1

    def grid_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``sign(weight) * scale`` (sign(0) = +1) with the scale the last forward used: what the int8 kernel's
        {-1, +1} weights times their scale are. Convert quantizes this, not the float weight (whose round(w / scale)
        would give 0 for small weights). Observes ``weight`` first if it never ran."""
        if not self.has_data():
            self._observe(weight.detach())
        signs = torch.where(weight.detach() >= 0, 1.0, -1.0)
        shape = [1] * weight.dim()
        if self.is_per_channel:
            shape[self.ch_axis] = -1
        return (signs * self.scale.reshape(shape)).to(weight.dtype)

    def has_data(self) -> bool:
        return bool(self.initialized[0])

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frozen_qparams()

    def extra_repr(self) -> str:
        return (f"qscheme={self.qscheme}, ch_axis={self.ch_axis}, fake_quant_enabled={int(self.fake_quant_enabled)},"
                f" observer_enabled={int(self.observer_enabled)}")
