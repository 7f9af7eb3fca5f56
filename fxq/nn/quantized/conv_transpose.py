"""Quantized ConvTranspose1d/2d/3d on `quantized::conv_transpose{1,2,3}d` (UNet decoders, upsampling heads).

The kernels take per-tensor weights only (x86, fbgemm and qnnpack refuse per-channel ones for transposed
convolutions), which is why the default x86 mapping gives these layers a per-tensor weight observer;
:meth:`accepts` turns a per-channel reference away, and that layer then runs as its reference module.
torch 2.13's transposed-conv kernels return garbage for some layer shapes, which shapes depending on the engine
and the CPU (PyTorch AO's converted ConvTranspose2d has the same bug, at -2 dB SQNR against float). So each
layer packs for the first engine whose kernel :mod:`._transpose_probe` finds correct for its shape on this
machine, its own engine first (a packed weight runs on its own engine's kernel whatever the global engine is);
when none is, the layer computes in float between its int8 input and output, and says so once.

    >>> import torch
    >>> from fxq.nn import reference
    >>> weight_qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8,
    ...                   "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)}
    >>> ref = reference.ConvTranspose2d.from_float(torch.nn.ConvTranspose2d(8, 4, 2, stride=2), weight_qparams)
    >>> up = ConvTranspose2d.from_reference(ref, output_scale=0.05, output_zero_point=70)
    >>> up(torch.quantize_per_tensor(torch.randn(1, 8, 5, 5), 0.02, 128, torch.quint8)).shape
    torch.Size([1, 4, 10, 10])
"""
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized._base import WeightedQuantizedModule
from fxq.nn.quantized._packing import pack_conv_transpose, unpack_conv_transpose
from fxq.nn.quantized._transpose_probe import correct_engine, float_conv_transpose
from fxq.nn.quantized.conv import Size, _expand

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_PREFERRED_ENGINES = ("fbgemm", "x86", "onednn", "qnnpack")  # fastest first, where several are correct
_WARNED_SHAPES = set()


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

    def _geometry(self) -> tuple:
        return self.stride, self.padding, self.output_padding, self.dilation, self.groups

    def _pack(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
        supported = torch.backends.quantized.supported_engines
        others = [name for name in _PREFERRED_ENGINES if name in supported and name != engine]
        self.kernel_engine = correct_engine(weight, self._geometry(), [engine, *others])
        if self.kernel_engine is None:  # kept unpacked: some engines' unpack does not even return the weight
            self._weight_bias = (weight, bias)
            self._warn_float_fallback(weight, [engine, *others])
            return None
        return pack_conv_transpose(weight, bias, self._geometry(), self.kernel_engine)

    def _warn_float_fallback(self, weight: torch.Tensor, probed: list) -> None:
        key = (type(self).__name__, tuple(weight.shape), self._geometry())
        if key not in _WARNED_SHAPES:
            _WARNED_SHAPES.add(key)
            warnings.warn(f"fxq: no int8 transposed-conv kernel of this torch computes {type(self).__name__}"
                          f"({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                          f"stride={self.stride}) correctly on this CPU (checked {', '.join(probed)}); such layers "
                          "compute in float between their int8 input and output.", stacklevel=2)

    def _run(self, x: torch.Tensor, kernel) -> torch.Tensor:
        if self.kernel_engine is not None:
            return kernel(x, self._packed_params, self.scale, self.zero_point)
        weight, bias = self._weight_bias
        y = float_conv_transpose(x.dequantize(), weight.dequantize(), bias, self._geometry())
        return torch.quantize_per_tensor(y, self.scale, self.zero_point, torch.quint8)

    def _unpack(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.kernel_engine is None:
            return self._weight_bias
        return unpack_conv_transpose(self._packed_params, self._dims)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, {self._output_repr()}, "
                f"kernel={self.kernel_engine or 'float'}")

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
        return self._run(x, torch.ops.quantized.conv_transpose1d)


class ConvTranspose2d(_ConvTransposeNd):
    """int8 2-d transposed convolution: quint8 `(N, C, H, W)` in and out."""

    _dims, _reference_type = 2, reference.ConvTranspose2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, torch.ops.quantized.conv_transpose2d)


class ConvTranspose3d(_ConvTransposeNd):
    """int8 3-d transposed convolution: quint8 `(N, C, D, H, W)` in and out."""

    _dims, _reference_type = 3, reference.ConvTranspose3d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, torch.ops.quantized.conv_transpose3d)
