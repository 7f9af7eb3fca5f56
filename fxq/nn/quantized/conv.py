"""Quantized Conv1d/2d/3d and Conv+ReLU on `quantized::conv{1,2,3}d[_relu]`.

    >>> import torch
    >>> from fxq.nn import reference
    >>> weight_qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8,
    ...                   "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)}
    >>> ref = reference.Conv2d.from_float(torch.nn.Conv2d(3, 8, 3, padding=1), weight_qparams)
    >>> qconv = Conv2d.from_reference(ref, output_scale=0.05, output_zero_point=70)
    >>> qconv(torch.quantize_per_tensor(torch.randn(1, 3, 6, 6), 0.02, 128, torch.quint8)).shape
    torch.Size([1, 8, 6, 6])
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized._base import WeightedQuantizedModule
from fxq.nn.quantized._packing import pack_conv, unpack_conv

def conv_geometry_repr(conv, has_bias: bool) -> str:
    """``in, out, kernel_size=.., stride=..`` and the padding, dilation, groups and bias that differ from the
    defaults: the start of an int8 conv's repr (fxq.nn.quantized's and fxq.nn.plain's)."""
    text = f"{conv.in_channels}, {conv.out_channels}, kernel_size={conv.kernel_size}, stride={conv.stride}"
    if any(conv.padding):
        text += f", padding={conv.padding}"
    if any(d != 1 for d in conv.dilation):
        text += f", dilation={conv.dilation}"
    if conv.groups != 1:
        text += f", groups={conv.groups}"
    return text if has_bias else text + ", bias=False"


__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d"]

Size = Union[int, Tuple[int, ...], List[int]]


def _expand(value: Size, dims: int) -> List[int]:
    return [int(value)] * dims if isinstance(value, int) else [int(v) for v in value]


class _ConvNd(WeightedQuantizedModule):
    _dims = 0
    _reference_type: type = nn.Module

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1,
                 padding: Union[Size, str] = 0, dilation: Size = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", engine: Optional[str] = None,
                 _weight_bias: Optional[tuple] = None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"fxq.nn.quantized.{type(self).__name__}: padding_mode={padding_mode!r} is not supported; "
                             "the int8 conv kernel only pads with zeros. Use padding_mode='zeros' or leave this "
                             "conv in float (exclude it from quantization in the QConfigMapping).")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"fxq.nn.quantized.{type(self).__name__}: in_channels={in_channels} and "
                             f"out_channels={out_channels} must both be divisible by groups={groups}.")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple(_expand(kernel_size, self._dims))
        self.stride = tuple(_expand(stride, self._dims))
        self.dilation = tuple(_expand(dilation, self._dims))
        self.padding = tuple(self._numeric_padding(padding))
        self.padding_mode = padding_mode
        if _weight_bias is None:  # a placeholder weight, for load_state_dict to fill
            shape = [out_channels, in_channels // groups, *self.kernel_size]
            weight = torch.quantize_per_tensor(torch.zeros(shape), 1.0, 0, torch.qint8)
            _weight_bias = (weight, torch.zeros(out_channels) if bias else None)
        self.set_weight_bias(*_weight_bias, engine)

    def _numeric_padding(self, padding: Union[Size, str]) -> List[int]:
        """The kernel takes explicit symmetric padding: 'valid' is 0, 'same' is d*(k-1)/2 when that is whole."""
        if not isinstance(padding, str):
            return _expand(padding, self._dims)
        if padding == "valid":
            return [0] * self._dims
        totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
        if padding == "same" and all(t % 2 == 0 for t in totals) and all(s == 1 for s in self.stride):
            return [t // 2 for t in totals]
        raise ValueError(f"fxq.nn.quantized.{type(self).__name__}: padding={padding!r} with kernel_size="
                         f"{self.kernel_size}, dilation={self.dilation} needs asymmetric padding, which the int8 "
                         "kernel cannot do; use an odd kernel or explicit integer padding.")

    def _pack(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
        geometry = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        return pack_conv(weight, bias, geometry, engine)

    def _unpack(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return unpack_conv(self._packed_params, self._dims)

    def extra_repr(self) -> str:
        return f"{conv_geometry_repr(self, self.bias() is not None)}, {self._output_repr()}"

    @classmethod
    def from_reference(cls, ref: nn.Module, output_scale: float, output_zero_point: int,
                       engine: Optional[str] = None) -> "_ConvNd":
        """Build from a reference conv (or a fused `[reference conv, ReLU]` sequence) and output qparams."""
        if isinstance(ref, nn.Sequential):
            ref = ref[0]
        if not isinstance(ref, cls._reference_type):
            raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_reference expects "
                            f"fxq.nn.reference.{cls._reference_type.__name__}, got {type(ref).__name__}.")
        module = cls(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, ref.padding, ref.dilation,
                     ref.groups, ref.bias is not None, ref.padding_mode, engine,
                     _weight_bias=(ref.quantized_weight(), ref.bias))
        module.scale, module.zero_point = float(output_scale), int(output_zero_point)
        return module


class Conv1d(_ConvNd):
    """int8 1-d convolution: quint8 `(N, C, L)` in and out."""

    _dims, _reference_type = 1, reference.Conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv1d(x, self._packed_params, self.scale, self.zero_point)


class Conv2d(_ConvNd):
    """int8 2-d convolution: quint8 `(N, C, H, W)` in and out."""

    _dims, _reference_type = 2, reference.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv2d(x, self._packed_params, self.scale, self.zero_point)


class Conv3d(_ConvNd):
    """int8 3-d convolution: quint8 `(N, C, D, H, W)` in and out."""

    _dims, _reference_type = 3, reference.Conv3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv3d(x, self._packed_params, self.scale, self.zero_point)


class ConvReLU1d(Conv1d):
    """int8 `relu(conv1d(x))` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv1d_relu(x, self._packed_params, self.scale, self.zero_point)


class ConvReLU2d(Conv2d):
    """int8 `relu(conv2d(x))` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv2d_relu(x, self._packed_params, self.scale, self.zero_point)


class ConvReLU3d(Conv3d):
    """int8 `relu(conv3d(x))` in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv3d_relu(x, self._packed_params, self.scale, self.zero_point)
