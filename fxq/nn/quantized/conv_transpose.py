"""Quantized ConvTranspose1d/2d/3d on `quantized::conv_transpose{1,2,3}d` (UNet decoders, upsampling heads).

The kernels take per-tensor weights only (x86, fbgemm and qnnpack refuse per-channel ones for transposed
convolutions), which is why the default x86 mapping gives these layers a per-tensor weight observer;
:meth:`accepts` turns a per-channel reference away, and that layer then runs as its reference module.
On the x86 and onednn engines the weight is packed for fbgemm: torch 2.13's oneDNN transposed-conv kernel
returns garbage whenever in_channels != out_channels (-2 dB SQNR against float; PyTorch AO's converted
ConvTranspose2d has the same bug), and a packed weight runs on its own engine's kernel whatever the global
engine is.

    >>> import torch
    >>> from fxq.nn import reference
    >>> weight_qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8,
    ...                   "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)}
    >>> ref = reference.ConvTranspose2d.from_float(torch.nn.ConvTranspose2d(8, 4, 2, stride=2), weight_qparams)
    >>> up = ConvTranspose2d.from_reference(ref, output_scale=0.05, output_zero_point=70)
    >>> up(torch.quantize_per_tensor(torch.randn(1, 8, 5, 5), 0.02, 128, torch.quint8)).shape
    torch.Size([1, 4, 10, 10])
"""
from typing import Optional, Tuple

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized._base import WeightedQuantizedModule
from fxq.nn.quantized._packing import pack_conv_transpose, unpack_conv_transpose
from fxq.nn.quantized.conv import Size, _expand

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_BROKEN_ENGINES = ("x86", "onednn")  # their transposed-conv kernel (oneDNN) is wrong for in != out channels


class _ConvTransposeNd(WeightedQuantizedModule):
    _dims = 0
    _reference_type: type = nn.Module

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1, padding: Size = 0,
                 output_padding: Size = 0, groups: int = 1, bias: bool = True, dilation: Size = 1,
                 engine: Optional[str] = None, _weight_bias: Optional[tuple] = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple(_expand(kernel_size, self._dims))
        self.stride, self.padding = tuple(_expand(stride, self._dims)), tuple(_expand(padding, self._dims))
        self.output_padding = tuple(_expand(output_padding, self._dims))
        self.dilation = tuple(_expand(dilation, self._dims))
        if _weight_bias is None:  # a placeholder weight, for load_state_dict to fill
            shape = [in_channels, out_channels // groups, *self.kernel_size]
            weight = torch.quantize_per_tensor(torch.zeros(shape), 1.0, 0, torch.qint8)
            _weight_bias = (weight, torch.zeros(out_channels) if bias else None)
        self.set_weight_bias(*_weight_bias, engine)

    def _pack(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
        geometry = (self.stride, self.padding, self.output_padding, self.dilation, self.groups)
        if engine in _BROKEN_ENGINES and "fbgemm" in torch.backends.quantized.supported_engines:
            engine = "fbgemm"
        return pack_conv_transpose(weight, bias, geometry, engine)

    def _unpack(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return unpack_conv_transpose(self._packed_params, self._dims)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, {self._output_repr()}")

    @classmethod
    def accepts(cls, ref: nn.Module) -> bool:
        """Only per-tensor weights: no int8 transposed-conv kernel takes per-channel ones."""
        return isinstance(ref, cls._reference_type) and not ref.is_per_channel and ref.padding_mode == "zeros"

    @classmethod
    def from_reference(cls, ref: nn.Module, output_scale: float, output_zero_point: int,
                       engine: Optional[str] = None) -> "_ConvTransposeNd":
        """Build from a per-tensor reference transposed conv and output qparams."""
        if not cls.accepts(ref):
            raise TypeError(f"fxq.nn.quantized.{cls.__name__}.from_reference expects a per-tensor, zero-padded "
                            f"fxq.nn.reference.{cls._reference_type.__name__}, got {ref!r}.")
        module = cls(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, ref.padding, ref.output_padding,
                     ref.groups, ref.bias is not None, ref.dilation, engine,
                     _weight_bias=(ref.quantized_weight(), ref.bias))
        module.scale, module.zero_point = float(output_scale), int(output_zero_point)
        return module


class ConvTranspose1d(_ConvTransposeNd):
    """int8 1-d transposed convolution: quint8 `(N, C, L)` in and out."""

    _dims, _reference_type = 1, reference.ConvTranspose1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv_transpose1d(x, self._packed_params, self.scale, self.zero_point)


class ConvTranspose2d(_ConvTransposeNd):
    """int8 2-d transposed convolution: quint8 `(N, C, H, W)` in and out."""

    _dims, _reference_type = 2, reference.ConvTranspose2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv_transpose2d(x, self._packed_params, self.scale, self.zero_point)


class ConvTranspose3d(_ConvTransposeNd):
    """int8 3-d transposed convolution: quint8 `(N, C, D, H, W)` in and out."""

    _dims, _reference_type = 3, reference.ConvTranspose3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.conv_transpose3d(x, self._packed_params, self.scale, self.zero_point)
