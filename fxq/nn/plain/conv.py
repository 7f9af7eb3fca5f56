"""Plain int8 Conv1d/2d/3d on oneDNN: uint8 activations as ordinary tensors, int8 weights, no quantized tensors.

``Conv1d/2d/3d`` run ``torch.ops.onednn.qconv_pointwise`` (it takes 3-, 4- and 5-d inputs alike) with an optional
fused post-op. ``ConvBinary1d/2d`` fuse a residual add, ``post_op(conv(x) + accum)``, with the binary "sum" of
``qconv2d_pointwise`` (1-d runs as a 2-d conv of height 1); there is no 3-d binary kernel. Measured here:

- 2-d and 3-d outputs come back channels_last, whatever the input layout; keeping activations channels_last
  through a chain saves the layout conversion at every conv (tools/bench_plain.py);
- post-ops: relu, hardtanh(min, max), hardswish, swish in 2-d; relu only in 1-d; none in 3-d (leaky_relu, tanh,
  gelu are refused by the kernel);
- the "sum" accumulator must be channels_last and is written in place, so it is copied first; a uint8 accumulator
  needs a uint8 output, a float one a float output (the kernel returns wrong values for a float accumulator into
  a uint8 output, so that pairing is refused);
- weight zero points are ignored: weights must be symmetric; padding is zeros, symmetric, explicit.

    >>> from fxq.nn import reference
    >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.01),
    ...            "zero_point": torch.tensor(0)}
    >>> ref = reference.Conv2d.from_float(torch.nn.Conv2d(3, 8, 3, padding=1), qparams)
    >>> conv = Conv2d.from_reference(ref, 0.02, 128, output_scale=0.05, output_zero_point=70, post_op="relu")
    >>> y = conv(torch.randint(0, 128, (1, 3, 6, 6), dtype=torch.uint8))
    >>> y.shape, y.dtype, y.is_contiguous(memory_format=torch.channels_last)
    (torch.Size([1, 8, 6, 6]), torch.uint8, True)
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.quantized.conv import conv_geometry_repr
from fxq.nn.plain._base import PlainWeightedModule, check_activation, weight_int8, weight_qparams_accepted
from fxq.nn.plain.traced import tracing

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvBinary1d", "ConvBinary2d", "CONV_POST_OPS"]

CONV_POST_OPS = {"none": 0, "relu": 0, "hardtanh": 2, "hardswish": 0, "swish": 0}

Size = Union[int, Sequence[int]]


def _expand(value: Size, dims: int) -> Tuple[int, ...]:
    return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)


def resolve_padding(padding: Union[Size, str], kernel_size: Tuple[int, ...], stride: Tuple[int, ...],
                    dilation: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    """Explicit symmetric padding for the kernel, or None when it would need asymmetric padding.

        >>> resolve_padding("same", (3, 3), (1, 1), (1, 1)), resolve_padding("same", (2, 2), (1, 1), (1, 1))
        ((1, 1), None)
    """
    dims = len(kernel_size)
    if not isinstance(padding, str):
        return _expand(padding, dims)
    if padding == "valid":
        return (0,) * dims
    totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    if padding == "same" and all(t % 2 == 0 for t in totals) and all(s == 1 for s in stride):
        return tuple(t // 2 for t in totals)
    return None


class _ConvNd(PlainWeightedModule):
    _dims = 0
    _reference_type: type = nn.Module
    _post_ops = CONV_POST_OPS
    # geometry that leaves the weight's shape alone travels in the extra state with the qparams
    _extra_attributes = PlainWeightedModule._extra_attributes + ("stride", "padding", "dilation")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size, stride: Size = 1, padding: Size = 0,
                 dilation: Size = 1, groups: int = 1, bias: bool = True, input_scale: float = 1.0,
                 input_zero_point: int = 0, output_scale: Optional[float] = None, output_zero_point: int = 0,
                 post_op: str = "none", post_op_args: tuple = (), post_op_algorithm: str = "") -> None:
        super().__init__()
        name = type(self).__name__
        if post_op not in self._post_ops or len(post_op_args) != self._post_ops[post_op]:
            raise ValueError(f"fxq.nn.plain.{name}: post_op {post_op!r} with args {tuple(post_op_args)} is not one "
                             f"the kernel fuses; choose one of {self._post_ops} (name: number of args).")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"fxq.nn.plain.{name}: in_channels={in_channels} and out_channels={out_channels} must "
                             f"both be divisible by groups={groups}.")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _expand(kernel_size, self._dims)
        self.stride, self.padding = _expand(stride, self._dims), _expand(padding, self._dims)
        self.dilation = _expand(dilation, self._dims)
        self._init_weight((out_channels, in_channels // groups) + self.kernel_size, bias)
        self._set_output(input_scale, input_zero_point, output_scale, output_zero_point, post_op, post_op_args,
                         post_op_algorithm)

    @classmethod
    def _refusal(cls, ref: nn.Module) -> str:
        """Why the kernel cannot run ``ref``, or "" when it can."""
        if not isinstance(ref, cls._reference_type):
            return f"expects fxq.nn.reference.{cls._reference_type.__name__}, got {type(ref).__name__}"
        if ref.padding_mode != "zeros":
            return f"padding_mode={ref.padding_mode!r}: the kernel pads with zeros only"
        if resolve_padding(ref.padding, ref.kernel_size, ref.stride, ref.dilation) is None:
            return f"padding={ref.padding!r} with kernel_size={ref.kernel_size} needs asymmetric padding"
        return weight_qparams_accepted(ref)[1]

    @classmethod
    def accepts(cls, ref: nn.Module) -> bool:
        """Whether the kernel can run ``ref``: zero, symmetric padding and qint8 weights with zero points 0."""
        return cls._refusal(ref) == ""

    @classmethod
    def from_reference(cls, ref: nn.Module, input_scale: float, input_zero_point: int, output_scale: Optional[float],
                       output_zero_point: int = 0, post_op: str = "none", post_op_args: tuple = (),
                       post_op_algorithm: str = "", **kwargs) -> "_ConvNd":
        """Build from a reference conv, the input's qparams and the output's (``output_scale=None``: float32)."""
        reason = cls._refusal(ref)
        if reason:
            raise ValueError(f"fxq.nn.plain.{cls.__name__}.from_reference: {reason}; leave this conv in float or "
                             "use the fxq.nn.quantized lowering.")
        padding = resolve_padding(ref.padding, ref.kernel_size, ref.stride, ref.dilation)
        module = cls(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, padding, ref.dilation,
                     ref.groups, ref.bias is not None, input_scale, input_zero_point, output_scale, output_zero_point,
                     post_op, post_op_args, post_op_algorithm, **kwargs)
        module._set_weight(*weight_int8(ref, ref.out_channels), ref.bias)
        return module

    def _geometry(self) -> Tuple[List[int], List[int], List[int]]:
        return list(self.stride), list(self.padding), list(self.dilation)

    def _pack(self) -> torch.Tensor:
        return torch.ops.onednn.qconv_prepack(self.weight, self.weight_scale, self.input_scale, self.input_zero_point,
                                              *self._geometry(), self.groups, None)

    def _check_input(self, x: torch.Tensor) -> None:
        check_activation(type(self).__name__, x)
        if x.dim() != self._dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"fxq.nn.plain.{type(self).__name__}: expected input (N, {self.in_channels}, "
                             f"{', '.join('*' * self._dims)}), got shape {tuple(x.shape)}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if tracing():  # one opaque op that packs at run time (see fxq.nn.plain.traced)
            scale, zero_point, dtype = self._output_arguments()
            return torch.ops.fxq.plain_conv(
                x, self.weight, self.weight_scale, self.weight_zero_point, self.bias, *self._geometry(), self.groups,
                self.input_scale, self.input_zero_point, scale, zero_point, dtype, self.post_op,
                [float(a) for a in self.post_op_args])
        return torch.ops.onednn.qconv_pointwise(x, *self._kernel_arguments(self._arguments))

    def _arguments(self) -> tuple:
        """qconv_pointwise's arguments after the input."""
        scale, zero_point, dtype = self._output_arguments()
        return (self.input_scale, self.input_zero_point, self.packed_weight(), self.weight_scale,
                self.weight_zero_point, self.bias, *self._geometry(), self.groups, scale, zero_point, dtype,
                self.post_op, list(self.post_op_args), self.post_op_algorithm)

    def output_shape(self, x: torch.Tensor) -> Tuple[int, ...]:
        """The shape of ``self(x)``."""
        spatial = tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, k, s, p, d in
                        zip(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation))
        return (x.shape[0], self.out_channels) + spatial

    def extra_repr(self) -> str:
        return f"{conv_geometry_repr(self, self.bias is not None)}, {self._qparams_repr()}"


class Conv1d(_ConvNd):
    """int8 1-d convolution: uint8 ``(N, C, L)`` in, uint8 or float32 out.

        >>> ref = reference.Conv1d.from_float(torch.nn.Conv1d(4, 6, 3), {"qscheme": torch.per_tensor_symmetric,
        ...     "dtype": torch.qint8, "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)})
        >>> Conv1d.from_reference(ref, 0.02, 64, None)(torch.zeros(2, 4, 10, dtype=torch.uint8)).shape
        torch.Size([2, 6, 8])
    """

    _dims, _reference_type = 1, reference.Conv1d
    _post_ops = {"none": 0, "relu": 0}  # measured: the 1-d kernel refuses the others


class Conv2d(_ConvNd):
    """int8 2-d convolution: uint8 ``(N, C, H, W)`` in, uint8 or float32 channels_last out.

        >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.01),
        ...            "zero_point": torch.tensor(0)}
        >>> ref = reference.Conv2d.from_float(torch.nn.Conv2d(4, 6, 3, stride=2), qparams)
        >>> Conv2d.from_reference(ref, 0.02, 64, 0.1, 0, "hardswish")(torch.zeros(1, 4, 9, 9, dtype=torch.uint8)).shape
        torch.Size([1, 6, 4, 4])
    """

    _dims, _reference_type = 2, reference.Conv2d


class Conv3d(_ConvNd):
    """int8 3-d convolution: uint8 ``(N, C, D, H, W)`` in, uint8 or float32 channels_last_3d out.

        >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.01),
        ...            "zero_point": torch.tensor(0)}
        >>> ref = reference.Conv3d.from_float(torch.nn.Conv3d(2, 3, 3, padding=1), qparams)
        >>> Conv3d.from_reference(ref, 0.02, 64, None)(torch.zeros(1, 2, 4, 4, 4, dtype=torch.uint8)).dtype
        torch.float32
    """

    _dims, _reference_type = 3, reference.Conv3d
    _post_ops = {"none": 0}  # measured: the 3-d kernel refuses every post-op


class _ConvBinary(_ConvNd):
    """``post_op(conv(x) + accum)`` on ``qconv2d_pointwise.binary`` ("sum"); ``post_op`` is "none" or "relu"."""

    _post_ops = {"none": 0, "relu": 0}
    _extra_attributes = _ConvNd._extra_attributes + ("accum_scale", "accum_zero_point", "sums_in_place")
    # set by the lowering where nothing reads the residual after this kernel: the kernel may then sum into it
    sums_in_place = False

    def __init__(self, *args, accum_scale: Optional[float] = None, accum_zero_point: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if accum_scale is None and self.output_scale is not None:
            raise ValueError(f"fxq.nn.plain.{type(self).__name__}: a float32 residual (accum_scale=None) needs a "
                             "float32 output (output_scale=None); the kernel returns wrong values for a float "
                             "residual summed into a uint8 output.")
        self.accum_scale = None if accum_scale is None else float(accum_scale)
        self.accum_zero_point = int(accum_zero_point)

    def _geometry(self) -> Tuple[List[int], List[int], List[int]]:
        stride, padding, dilation = super()._geometry()
        if self._dims == 1:  # as a 2-d conv of height 1
            return [1] + stride, [0] + padding, [1] + dilation
        return stride, padding, dilation

    def _pack(self) -> torch.Tensor:
        weight = self.weight.unsqueeze(2) if self._dims == 1 else self.weight
        return torch.ops.onednn.qconv_prepack(weight, self.weight_scale, self.input_scale, self.input_zero_point,
                                              *self._geometry(), self.groups, None)

    def forward(self, x: torch.Tensor, accum: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        expected = torch.float32 if self.accum_scale is None else torch.uint8
        if not isinstance(accum, torch.Tensor) or accum.dtype != expected:
            got = accum.dtype if isinstance(accum, torch.Tensor) else type(accum).__name__
            raise TypeError(f"fxq.nn.plain.{type(self).__name__}: the residual must be {expected} "
                            f"(accum_scale={self.accum_scale}), got {got}.")
        if tuple(accum.shape) != self.output_shape(x):
            raise ValueError(f"fxq.nn.plain.{type(self).__name__}: the residual must have the conv output's shape "
                             f"{self.output_shape(x)}, got {tuple(accum.shape)}.")
        scale, zero_point, dtype = self._output_arguments()
        accum_scale, accum_zero_point = self.accum_scale, self.accum_zero_point
        owned = self.sums_in_place
        if accum_scale is not None and dtype is not None:  # uint8 residual into a float output: sum in float
            accum, accum_scale, accum_zero_point = (accum.float() - accum_zero_point) * accum_scale, None, 0
            owned = True  # a new tensor
        if self._dims == 1:
            x, accum = x.unsqueeze(2), accum.unsqueeze(2)
        if tracing():  # one opaque op that packs at run time (see fxq.nn.plain.traced)
            weight = self.weight.unsqueeze(2) if self._dims == 1 else self.weight
            y = torch.ops.fxq.plain_conv2d_binary(
                x, weight, self.weight_scale, self.weight_zero_point, accum, self.bias, *self._geometry(),
                self.groups, self.input_scale, self.input_zero_point, scale, zero_point, dtype,
                1.0 if accum_scale is None else accum_scale, accum_zero_point, self.post_op)
            return y.squeeze(2) if self._dims == 1 else y
        # the kernel sums into the residual in place and needs it channels_last: a copy, unless it is ours to overwrite
        if not (owned and accum.is_contiguous(memory_format=torch.channels_last)):
            accum = accum.clone(memory_format=torch.channels_last)
        y = torch.ops.onednn.qconv2d_pointwise.binary(
            x, self.input_scale, self.input_zero_point, self.packed_weight(), self.weight_scale,
            self.weight_zero_point, accum, self.bias, *self._geometry(), self.groups, scale, zero_point, dtype,
            1.0 if accum_scale is None else accum_scale, accum_zero_point, "sum", 1.0,
            None if self.post_op == "none" else self.post_op, [], "")
        return y.squeeze(2) if self._dims == 1 else y

    def extra_repr(self) -> str:
        accum = ("accum=float32" if self.accum_scale is None
                 else f"accum_scale={self.accum_scale}, accum_zero_point={self.accum_zero_point}")
        return f"{super().extra_repr()}, {accum}"


class ConvBinary1d(_ConvBinary):
    """int8 ``post_op(conv1d(x) + accum)`` in one kernel (a 2-d conv of height 1).

        >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.01),
        ...            "zero_point": torch.tensor(0)}
        >>> ref = reference.Conv1d.from_float(torch.nn.Conv1d(4, 4, 3, padding=1), qparams)
        >>> block = ConvBinary1d.from_reference(ref, 0.02, 0, None, 0, "relu")  # float residual, float output
        >>> block(torch.zeros(2, 4, 7, dtype=torch.uint8), torch.randn(2, 4, 7)).shape
        torch.Size([2, 4, 7])
    """

    _dims, _reference_type = 1, reference.Conv1d


class ConvBinary2d(_ConvBinary):
    """int8 ``post_op(conv2d(x) + accum)`` in one kernel; the output is channels_last.

        >>> from fxq.nn import reference
        >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.01),
        ...            "zero_point": torch.tensor(0)}
        >>> ref = reference.Conv2d.from_float(torch.nn.Conv2d(4, 4, 3, padding=1), qparams)
        >>> block = ConvBinary2d.from_reference(ref, 0.02, 0, 0.05, 0, "relu", accum_scale=0.05, accum_zero_point=0)
        >>> x = torch.randint(0, 128, (1, 4, 5, 5), dtype=torch.uint8)
        >>> block(x, x).shape
        torch.Size([1, 4, 5, 5])
    """

    _dims, _reference_type = 2, reference.Conv2d
