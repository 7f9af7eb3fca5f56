"""Shared plumbing of the plain int8 modules: the int8 weight from a reference module, the lazily packed
oneDNN weight and its cache, and the input check.

The state_dict holds the int8 weight, its per-output-channel scale and zero point, and the float bias as
buffers; the activation qparams and post-op are plain attributes that travel as the module's extra state, so a
module built with default arguments restores itself from a state_dict. The packed weight is an opaque mkldnn
tensor that neither pickles nor copies, and its layout belongs to the CPU that packed it: it is built on the
first forward, kept in an attribute outside the state_dict, dropped when pickling, and rebuilt whenever the
weight buffers change (their version counters move on ``load_state_dict`` and on any in-place write).

    >>> from fxq.nn import reference
    >>> qparams = {"qscheme": torch.per_tensor_symmetric, "dtype": torch.qint8, "scale": torch.tensor(0.1),
    ...            "zero_point": torch.tensor(0)}
    >>> ref = reference.Linear.from_float(torch.nn.Linear(2, 2), qparams)
    >>> weight_int8(ref, 2)[0].dtype
    torch.int8
"""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["PlainWeightedModule", "weight_int8", "weight_qparams_accepted", "check_activation"]


def weight_qparams_accepted(ref: nn.Module) -> Tuple[bool, str]:
    """Whether the oneDNN kernels can run ``ref``'s weight: qint8 with every zero point 0 (the kernels ignore
    weight zero points, so an asymmetric weight would be silently wrong). Returns (ok, reason)."""
    if getattr(ref, "weight_dtype", None) != torch.qint8:
        return False, f"weight dtype {getattr(ref, 'weight_dtype', None)} is not torch.qint8"
    if bool(ref.weight_zero_point.any()):
        return False, "the weight zero points are not all 0 (the oneDNN kernels take symmetric weights only)"
    if ref.is_per_channel and int(ref.weight_axis) != 0:
        return False, f"per-channel weight axis {int(ref.weight_axis)} is not 0 (output channels)"
    return True, ""


def weight_int8(ref: nn.Module, out_channels: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int8 weight, float32 scale [out], long zero point [out]) of a reference module, with float arithmetic
    and no quantized tensor: ``round_half_to_even(w * float32(1 / scale))`` clamped to the weight's quant range,
    the integers ``torch.quantize_per_channel`` / ``quantize_per_tensor`` give for zero point 0."""
    weight = ref.weight.detach().float()
    scale = ref.weight_scale.detach().to(torch.float32).reshape(-1).expand(out_channels).contiguous()
    inverse = torch.reciprocal(scale).reshape([-1] + [1] * (weight.dim() - 1))
    low, high = (int(v) for v in ref.weight_quant_range)
    ints = torch.mul(weight, inverse).round_().clamp_(low, high).to(torch.int8)
    return ints, scale, torch.zeros(out_channels, dtype=torch.long)


def check_activation(owner: str, x: torch.Tensor, name: str = "input") -> None:
    """A clear error for what the kernels would reject cryptically (or read wrongly)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"fxq.nn.plain.{owner}: the {name} must be a torch.uint8 tensor (quantized activations as "
                        f"plain integers), got {got}. The converted model expects fxq's quantize op "
                        "(torch.ops.fxq.quantize_per_tensor) in front of this module; a quantized tensor "
                        "(torch.quint8) should be passed as its int_repr() with its scale and zero point.")
    if x.device.type != "cpu":
        raise ValueError(f"fxq.nn.plain.{owner}: the oneDNN int8 kernels run on CPU, got a tensor on {x.device}.")


class PlainWeightedModule(nn.Module):
    """An int8-weight module on a oneDNN kernel: buffers ``weight`` (int8), ``weight_scale``, ``weight_zero_point``,
    ``bias``; activation qparams and post-op as attributes; a packed weight built lazily (see the module doc)."""

    _extra_attributes: Tuple[str, ...] = ("input_scale", "input_zero_point", "output_scale", "output_zero_point",
                                          "post_op", "post_op_args", "post_op_algorithm")

    def _init_weight(self, shape: Tuple[int, ...], bias: bool) -> None:
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(shape[0], dtype=torch.float32))
        self.register_buffer("weight_zero_point", torch.zeros(shape[0], dtype=torch.long))
        self.register_buffer("bias", torch.zeros(shape[0]) if bias else None)
        self._packed: Optional[torch.Tensor] = None
        self._packed_key: Optional[tuple] = None

    def _set_output(self, input_scale: float, input_zero_point: int, output_scale: Optional[float],
                    output_zero_point: int, post_op: str, post_op_args: tuple, post_op_algorithm: str) -> None:
        self.input_scale, self.input_zero_point = float(input_scale), int(input_zero_point)
        self.output_scale = None if output_scale is None else float(output_scale)
        self.output_zero_point = int(output_zero_point)
        self.post_op, self.post_op_args, self.post_op_algorithm = post_op, tuple(post_op_args), post_op_algorithm

    def _set_weight(self, ints: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> None:
        self.weight, self.weight_scale, self.weight_zero_point = ints, scale, zero_point
        self.bias = None if bias is None else bias.detach().float().clone()

    # -- the packed weight ---------------------------------------------------------------------------------------
    def _pack(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _pack()")

    def _cache_key(self) -> tuple:
        # the tensors themselves (compared by identity; holding them keeps a freed weight's address from being
        # reused by a new one) and their version counters, which in-place writes and load_state_dict move
        sources = (self.weight, self.weight_scale)
        return sources + tuple(t._version for t in sources) + (self.input_scale, self.input_zero_point)

    def packed_weight(self) -> torch.Tensor:
        """The oneDNN-packed weight, packed now if the weight changed since the last pack (or never was)."""
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            raise NotImplementedError(
                f"fxq.nn.plain.{type(self).__name__} cannot be traced by torch.export / torch.compile yet: oneDNN's "
                "weight prepack has no fake implementation. Linear, DynamicLinear and Conv1d/2d/3d trace (as fxq ops, "
                "see fxq.nn.plain.traced); keep this module out of the traced region or run it eagerly.")
        key = self._cache_key()
        if self._packed is None or not _same_key(self._packed_key, key):
            self._packed, self._packed_key = self._pack(), key
        return self._packed

    @torch.jit.unused
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"], state["_packed_key"] = None, None  # an mkldnn tensor: no pickle, no deepcopy
        return state

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed, self._packed_key = None, None
        super()._load_from_state_dict(*args, **kwargs)

    def get_extra_state(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._extra_attributes}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._packed, self._packed_key = None, None

    # -- kernel arguments ----------------------------------------------------------------------------------------
    def _output_arguments(self) -> Tuple[float, int, Optional[torch.dtype]]:
        """(output scale, zero point, dtype) for the kernel: fp32 output takes scale 1, zero point 0."""
        if self.output_scale is None:
            return 1.0, 0, torch.float32
        return self.output_scale, self.output_zero_point, None

    def _qparams_repr(self) -> str:
        output = ("output=float32" if self.output_scale is None
                  else f"output_scale={self.output_scale}, output_zero_point={self.output_zero_point}")
        text = f"input_scale={self.input_scale}, input_zero_point={self.input_zero_point}, {output}"
        if self.post_op != "none":
            text += f", post_op={self.post_op}"
            if self.post_op_args:
                text += f"{list(self.post_op_args)}"
            if self.post_op_algorithm:
                text += f"({self.post_op_algorithm})"
        return text


def _same_key(old: Optional[tuple], new: tuple) -> bool:
    return old is not None and len(old) == len(new) and all(
        a is b if isinstance(a, torch.Tensor) else a == b for a, b in zip(old, new))
