"""Plain int8 Linear on oneDNN: uint8 activations as ordinary tensors, int8 weights, no quantized tensors.

``Linear`` runs ``torch.ops.onednn.qlinear_pointwise``: uint8 ``[..., in]`` in, uint8 (or float32, with the
dequantize fused) ``[..., out]`` out, with an optional fused post-op. ``LinearBinary`` adds a residual in the
same kernel. What this CPU's kernel was measured to do (tests/test_plain_modules.py keeps it so):

- the weight zero point is ignored: weights must be symmetric (``accepts`` refuses others);
- inputs of any rank ``[..., in]`` are accepted; non-contiguous inputs too;
- post-ops: relu, leaky_relu(slope), tanh, gelu (algorithm "none" = erf, or "tanh"), hardtanh(min, max),
  hardswish, swish;
- a uint8 residual needs the binary post-op "sum", which writes the result into the residual tensor (so it is
  cloned first); "add" with a uint8 residual returns wrong values without an error. A float residual uses "add".

    >>> from fxq.nn import reference
    >>> qparams = {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0,
    ...            "scale": torch.full((32,), 0.01), "zero_point": torch.zeros(32, dtype=torch.long)}
    >>> ref = reference.Linear.from_float(torch.nn.Linear(64, 32), qparams)
    >>> linear = Linear.from_reference(ref, input_scale=0.02, input_zero_point=64, output_scale=0.05,
    ...                                output_zero_point=128, post_op="relu")
    >>> linear(torch.randint(0, 128, (2, 5, 64), dtype=torch.uint8)).dtype
    torch.uint8
"""
from typing import Optional

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.plain._base import PlainWeightedModule, check_activation, weight_int8, weight_qparams_accepted
from fxq.nn.plain.traced import tracing

__all__ = ["Linear", "LinearBinary", "LINEAR_POST_OPS"]

# post-op name -> number of arguments the kernel takes; algorithm is "" except gelu ("none" = erf, "tanh")
LINEAR_POST_OPS = {"none": 0, "relu": 0, "leaky_relu": 1, "tanh": 0, "gelu": 0, "hardtanh": 2, "hardswish": 0,
                   "swish": 0}


def _check_post_op(owner: str, post_op: str, args: tuple, algorithm: str, table: dict) -> None:
    if post_op not in table:
        raise ValueError(f"fxq.nn.plain.{owner}: post_op {post_op!r} is not one the kernel fuses; choose one of "
                         f"{sorted(table)} (or run the activation as a separate op).")
    if len(args) != table[post_op]:
        raise ValueError(f"fxq.nn.plain.{owner}: post_op {post_op!r} takes {table[post_op]} argument(s), "
                         f"got {tuple(args)}.")
    if post_op == "gelu" and algorithm not in ("none", "tanh"):
        raise ValueError(f"fxq.nn.plain.{owner}: gelu's post_op_algorithm is 'none' (erf) or 'tanh', "
                         f"got {algorithm!r}.")


class Linear(PlainWeightedModule):
    """int8 ``post_op(x @ W.T + b)``: uint8 input, uint8 output (or float32 when ``output_scale`` is None).

        >>> ref = reference.Linear.from_float(torch.nn.Linear(8, 3), {"qscheme": torch.per_tensor_symmetric,
        ...     "dtype": torch.qint8, "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)})
        >>> Linear.from_reference(ref, 0.02, 64, None, post_op="gelu", post_op_algorithm="none")
        Int8Linear(in_features=8, out_features=3, input_scale=0.02, input_zero_point=64, output=float32, post_op=gelu(none))
    """

    _post_ops = LINEAR_POST_OPS

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_scale: float = 1.0,
                 input_zero_point: int = 0, output_scale: Optional[float] = None, output_zero_point: int = 0,
                 post_op: str = "none", post_op_args: tuple = (), post_op_algorithm: str = "") -> None:
        super().__init__()
        _check_post_op(type(self).__name__, post_op, post_op_args, post_op_algorithm, LINEAR_POST_OPS)
        self.in_features, self.out_features = in_features, out_features
        self._init_weight((out_features, in_features), bias)
        self._set_output(input_scale, input_zero_point, output_scale, output_zero_point, post_op, post_op_args,
                         post_op_algorithm)

    @classmethod
    def accepts(cls, ref: nn.Module) -> bool:
        """Whether ``ref`` (a reference Linear) can run on this kernel: qint8 weights with zero points 0."""
        return isinstance(ref, reference.Linear) and weight_qparams_accepted(ref)[0]

    @classmethod
    def from_reference(cls, ref: reference.Linear, input_scale: float, input_zero_point: int,
                       output_scale: Optional[float], output_zero_point: int = 0, post_op: str = "none",
                       post_op_args: tuple = (), post_op_algorithm: str = "", **kwargs) -> "Linear":
        """Build from a reference Linear, the input's qparams and the output's (``output_scale=None``: float32)."""
        if not isinstance(ref, reference.Linear):
            raise TypeError(f"fxq.nn.plain.{cls.__name__}.from_reference expects fxq.nn.reference.Linear, "
                            f"got {type(ref).__name__}; convert the float Linear to a reference one first.")
        ok, reason = weight_qparams_accepted(ref)
        if not ok:
            raise ValueError(f"fxq.nn.plain.{cls.__name__}.from_reference: {reason}; use a symmetric qint8 weight "
                             "qconfig or the fxq.nn.quantized lowering.")
        module = cls(ref.in_features, ref.out_features, ref.bias is not None, input_scale, input_zero_point,
                     output_scale, output_zero_point, post_op, post_op_args, post_op_algorithm, **kwargs)
        module._set_weight(*weight_int8(ref, ref.out_features), ref.bias)
        return module

    def _pack(self) -> torch.Tensor:
        return torch.ops.onednn.qlinear_prepack(self.weight, None)

    def _check_input(self, x: torch.Tensor) -> None:
        check_activation(type(self).__name__, x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"fxq.nn.plain.{type(self).__name__}: expected input [..., {self.in_features}], "
                             f"got shape {tuple(x.shape)}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if tracing():  # one opaque op that packs at run time (see fxq.nn.plain.traced)
            scale, zero_point, dtype = self._output_arguments()
            return torch.ops.fxq.plain_linear(
                x, self.weight, self.weight_scale, self.weight_zero_point, self.bias, self.input_scale,
                self.input_zero_point, scale, zero_point, dtype, self.post_op, [float(a) for a in self.post_op_args],
                self.post_op_algorithm)
        return torch.ops.onednn.qlinear_pointwise(x, *self._kernel_arguments(self._arguments))

    def _arguments(self) -> tuple:
        """qlinear_pointwise's arguments after the input."""
        scale, zero_point, dtype = self._output_arguments()
        return (self.input_scale, self.input_zero_point, self.packed_weight(), self.weight_scale,
                self.weight_zero_point, self.bias, scale, zero_point, dtype, self.post_op, list(self.post_op_args),
                self.post_op_algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._qparams_repr()}"


class LinearBinary(Linear):
    """int8 ``post_op(x @ W.T + b + other)`` in one kernel, ``post_op`` "none" or "relu".

    ``other`` is uint8 with ``other_scale`` / ``other_zero_point`` (the kernel's "sum" post-op, on a copy: the
    kernel writes into it), or float32 when ``other_scale`` is None ("add"). A uint8 ``other`` with a float32
    output is dequantized first (the kernel takes a float sum only into a float output).

        >>> from fxq.nn import reference
        >>> ref = reference.Linear.from_float(torch.nn.Linear(8, 4), {"qscheme": torch.per_tensor_symmetric,
        ...     "dtype": torch.qint8, "scale": torch.tensor(0.01), "zero_point": torch.tensor(0)})
        >>> add = LinearBinary.from_reference(ref, 0.02, 64, 0.05, 128, other_scale=0.03, other_zero_point=100)
        >>> add(torch.full((2, 8), 64, dtype=torch.uint8), torch.full((2, 4), 100, dtype=torch.uint8)).shape
        torch.Size([2, 4])
    """

    _extra_attributes = Linear._extra_attributes + ("other_scale", "other_zero_point", "sums_in_place")
    # set by the lowering where nothing reads ``other`` after this kernel: the kernel may then sum into it
    sums_in_place = False

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_scale: float = 1.0,
                 input_zero_point: int = 0, output_scale: Optional[float] = None, output_zero_point: int = 0,
                 post_op: str = "none", post_op_args: tuple = (), post_op_algorithm: str = "",
                 other_scale: Optional[float] = None, other_zero_point: int = 0) -> None:
        if post_op not in ("none", "relu"):
            raise ValueError(f"fxq.nn.plain.LinearBinary: post_op after the add is 'none' or 'relu', got {post_op!r}.")
        super().__init__(in_features, out_features, bias, input_scale, input_zero_point, output_scale,
                         output_zero_point, post_op, post_op_args, post_op_algorithm)
        self.other_scale = None if other_scale is None else float(other_scale)
        self.other_zero_point = int(other_zero_point)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        self._check_other(x, other)
        scale, zero_point, dtype = self._output_arguments()
        if self.other_scale is not None and dtype is None:  # uint8 + uint8: "sum" accumulates into its operand
            other = other if self.sums_in_place and other.is_contiguous() else other.clone()
            other_scale, other_zero_point, binary = self.other_scale, self.other_zero_point, "sum"
        else:
            if self.other_scale is not None:
                other = (other.float() - self.other_zero_point) * self.other_scale
            other, other_scale, other_zero_point, binary = other.float(), 1.0, 0, "add"
        if tracing():  # one opaque op that packs at run time (see fxq.nn.plain.traced)
            return torch.ops.fxq.plain_linear_binary(
                x, self.weight, self.weight_scale, self.weight_zero_point, other, self.bias, self.input_scale,
                self.input_zero_point, scale, zero_point, dtype, other_scale, other_zero_point, binary, self.post_op)
        return torch.ops.onednn.qlinear_pointwise.binary(
            x, self.input_scale, self.input_zero_point, self.packed_weight(), self.weight_scale,
            self.weight_zero_point, other, self.bias, scale, zero_point, dtype, other_scale, other_zero_point,
            binary, 1.0, self.post_op, [], "")

    def _check_other(self, x: torch.Tensor, other: torch.Tensor) -> None:
        expected = torch.float32 if self.other_scale is None else torch.uint8
        if not isinstance(other, torch.Tensor) or other.dtype != expected:
            got = other.dtype if isinstance(other, torch.Tensor) else type(other).__name__
            raise TypeError(f"fxq.nn.plain.LinearBinary: the residual must be {expected} "
                            f"(other_scale={self.other_scale}), got {got}.")
        if tuple(other.shape) != tuple(x.shape[:-1]) + (self.out_features,):
            raise ValueError(f"fxq.nn.plain.LinearBinary: the residual must have the output's shape "
                             f"{tuple(x.shape[:-1]) + (self.out_features,)}, got {tuple(other.shape)}.")

    def extra_repr(self) -> str:
        other = ("other=float32" if self.other_scale is None
                 else f"other_scale={self.other_scale}, other_zero_point={self.other_zero_point}")
        return f"{super().extra_repr()}, {other}"
