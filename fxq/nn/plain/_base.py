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
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from fxq.nn import reference
from fxq.nn.plain.saturation import plain_linear_saturates
from fxq.observers.pair_limited import neighbour_pairs

__all__ = ["PlainWeightedModule", "weight_int8", "weight_qparams_accepted", "check_activation", "seven_bit_weights",
           "has_seven_bit_weights", "weights_never_saturate", "exact_with_full_range_inputs"]


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


def has_seven_bit_weights(ref: nn.Module) -> bool:
    """Whether ``ref``'s weight integers lie in [-64, 63]: then every uint8 x int8 pair sum fits the 16 bits a CPU
    without VNNI adds pairs in, whatever the activations' range. The integers themselves are checked, not the
    declared quant range: a functional weight (torch.export's ``aten.conv2d(x, w)``) arrives as
    ``quantize_per_channel``, which carries no quant range, even when its observer kept it to 7 bits."""
    low, high = (int(v) for v in ref.weight_quant_range)
    if low >= -64 and high <= 63:
        return True
    integers = ref.integer_weight()
    return bool(integers.min() >= -64 and integers.max() <= 63)


def weights_never_saturate(ref: nn.Module) -> bool:
    """Whether ``ref``'s weight integers keep every uint8 x int8 pair sum within 16 bits on a CPU without VNNI,
    whatever the activations: 7-bit integers, or neighbouring integers (inputs 2i, 2i+1 at each tap, the pairs
    oneDNN's AVX2 linear and conv kernels add; fxq.observers.pair_limited) that never add up past 128 in magnitude.
    Grouped convs with several inputs per group have a layout not measured, and Conv3d too: they need 7 bits."""
    if has_seven_bit_weights(ref):
        return True
    if not isinstance(ref, (reference.Linear, reference.Conv1d, reference.Conv2d)):
        return False
    if getattr(ref, "groups", 1) > 1 and ref.weight.shape[1] > 1:
        return False
    sums = neighbour_pairs(ref.integer_weight().to(torch.int16)).sum(-1)
    return bool(sums.abs().max() <= 128)


def exact_with_full_range_inputs(ref: nn.Module) -> nn.Module:
    """``ref``, or its 7-bit refit (:func:`seven_bit_weights`) where this CPU's kernels would saturate full-range
    uint8 inputs against its weights."""
    if not plain_linear_saturates() or weights_never_saturate(ref):
        return ref
    return seven_bit_weights(ref)


def seven_bit_weights(ref: nn.Module) -> nn.Module:
    """A copy of reference Linear / Conv ``ref`` with symmetric per-channel weights on [-63, 63], for kernels that
    saturate full-range products (fxq.nn.plain.saturation). With 8-bit activations it is exact where 8-bit
    weights are not; measured on a 768x768 random linear with dynamic activations: 38.3 dB (per tensor) and 39.2 dB
    (per token) vs 34.4 and 36.0 with 7-bit activations and 8-bit weights.

    The new grid is fitted to the float weight (clipped where ``ref``'s observer clipped it), not to ``ref``'s
    8-bit integers: rounding those again moves every channel's largest weight by up to half a step of 63, a gain
    error the same in every channel that compounds layer after layer (a 7-layer ResNet fell from 36 to 27 dB)."""
    scale, _ = ref._broadcast_qparams()
    low, high = (int(v) for v in ref.weight_quant_range)
    weight = ref.weight.detach().float()
    weight = torch.maximum(torch.minimum(weight, scale * high), scale * low)
    scale = weight.flatten(1).abs().amax(dim=1).clamp_min(1e-12) / 63.0
    qparams = {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0, "scale": scale,
               "zero_point": torch.zeros(len(scale), dtype=torch.long), "quant_min": -64, "quant_max": 63}
    copy = type(ref).from_float(ref, qparams)
    copy.weight = nn.Parameter(weight, requires_grad=False)
    return copy


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

    def _get_name(self) -> str:
        return "Int8" + type(self).__name__  # printed models tell the int8 kernel from torch's float Linear

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

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        self.__dict__.pop("_kernel_cache", None)  # any write (a qparam, a post-op, a buffer): rebuild the arguments

    def _kernel_arguments(self, build: Callable[[], tuple]) -> tuple:
        """``build()``'s kernel arguments (the packed weight among them), kept until an attribute of this module is
        set or its weight buffers are replaced or written in place: a forward then costs the kernel and a few
        checks (a depthwise conv of MobileNetV2: 37 us of Python around a 77 us kernel before)."""
        weight, scale = self._buffers["weight"], self._buffers["weight_scale"]
        key = (weight, scale, weight._version, scale._version)
        cache = self.__dict__.get("_kernel_cache")
        if cache is None or not _same_key(cache[0], key):
            cache = (key, build())
            self.__dict__["_kernel_cache"] = cache
        return cache[1]

    @torch.jit.unused
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed"], state["_packed_key"] = None, None  # an mkldnn tensor: no pickle, no deepcopy
        state.pop("_kernel_cache", None)
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self._packed, self._packed_key = None, None
        incoming = state_dict.get(prefix + "weight")
        if incoming is not None and incoming.shape != self.weight.shape:  # another model's checkpoint
            error_msgs.append(f"size mismatch for {prefix}weight: the state_dict has shape {tuple(incoming.shape)}, "
                              f"this {self._get_name()} has {tuple(self.weight.shape)}; load a state_dict saved "
                              "from a model converted from the same float model")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

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
