"""``fxq::plain_linear`` / ``fxq::plain_conv``: the plain modules as single opaque ops, for torch.export and
torch.compile (``fxq::plain_linear_tensor_qparams``: float output, activation qparams as tensors, for
DynamicLinear).

oneDNN's prepack has no fake implementation, so a traced module cannot pack its weight inside the graph, and a
traced weight has no storage to key the module's cache on. While tracing, the modules call these ops instead:
the graph keeps the int8 weight as a buffer, and at run time the op packs it once and keeps the packed tensor
beside a weak reference to that weight (repacking when the weight's version counter moves).

    >>> weight = torch.randint(-127, 128, (4, 8), dtype=torch.int8)
    >>> x = torch.randint(0, 128, (2, 8), dtype=torch.uint8)
    >>> torch.ops.fxq.plain_linear(x, weight, torch.ones(4), torch.zeros(4, dtype=torch.long), None, 0.1, 64, 1.0,
    ...                            0, torch.float32, "none", [], "").shape
    torch.Size([2, 4])
"""
import weakref
from typing import Callable, Dict, Tuple

import torch

__all__ = ["packed_for", "tracing"]

# id(weight) -> (weak reference to weight, key the pack depends on, packed weight)
_PACKS: Dict[int, Tuple[weakref.ref, tuple, torch.Tensor]] = {}


def packed_for(weight: torch.Tensor, key: tuple, pack: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The packed ``weight``, packed again when the weight changed or ``key`` (qparams, geometry) did."""
    key = (weight._version,) + key
    entry = _PACKS.get(id(weight))
    if entry is not None and entry[0]() is weight and entry[1] == key:
        return entry[2]
    packed = pack()
    _PACKS[id(weight)] = (weakref.ref(weight, lambda _, identity=id(weight): _PACKS.pop(identity, None)), key, packed)
    return packed


torch.library.define(
    "fxq::plain_linear",
    "(Tensor x, Tensor weight, Tensor weight_scale, Tensor weight_zero_point, Tensor? bias, float input_scale, "
    "int input_zero_point, float output_scale, int output_zero_point, ScalarType? output_dtype, str post_op, "
    "float[] post_op_args, str post_op_algorithm) -> Tensor")
torch.library.define(
    "fxq::plain_linear_tensor_qparams",
    "(Tensor x, Tensor input_scale, Tensor input_zero_point, Tensor weight, Tensor weight_scale, "
    "Tensor weight_zero_point, Tensor? bias) -> Tensor")
torch.library.define(
    "fxq::plain_conv",
    "(Tensor x, Tensor weight, Tensor weight_scale, Tensor weight_zero_point, Tensor? bias, int[] stride, "
    "int[] padding, int[] dilation, int groups, float input_scale, int input_zero_point, float output_scale, "
    "int output_zero_point, ScalarType? output_dtype, str post_op, float[] post_op_args) -> Tensor")


@torch.library.impl("fxq::plain_linear", "CPU")
def _plain_linear(x, weight, weight_scale, weight_zero_point, bias, input_scale, input_zero_point, output_scale,
                  output_zero_point, output_dtype, post_op, post_op_args, post_op_algorithm):
    packed = packed_for(weight, (), lambda: torch.ops.onednn.qlinear_prepack(weight, None))
    return torch.ops.onednn.qlinear_pointwise(x, input_scale, input_zero_point, packed, weight_scale,
                                              weight_zero_point, bias, output_scale, output_zero_point, output_dtype,
                                              post_op, list(post_op_args), post_op_algorithm)


@torch.library.register_fake("fxq::plain_linear")
def _plain_linear_fake(x, weight, weight_scale, weight_zero_point, bias, input_scale, input_zero_point,
                       output_scale, output_zero_point, output_dtype, post_op, post_op_args, post_op_algorithm):
    return x.new_empty(tuple(x.shape[:-1]) + (weight.shape[0],), dtype=output_dtype or torch.uint8)


@torch.library.impl("fxq::plain_linear_tensor_qparams", "CPU")
def _plain_linear_tensor_qparams(x, input_scale, input_zero_point, weight, weight_scale, weight_zero_point, bias):
    packed = packed_for(weight, (), lambda: torch.ops.onednn.qlinear_prepack(weight, None))
    return torch.ops.onednn.qlinear_pointwise.tensor(x, input_scale, input_zero_point, packed, weight_scale,
                                                     weight_zero_point, bias, 1.0, 0, torch.float32, "none", [], "")


@torch.library.register_fake("fxq::plain_linear_tensor_qparams")
def _plain_linear_tensor_qparams_fake(x, input_scale, input_zero_point, weight, weight_scale, weight_zero_point,
                                      bias):
    return x.new_empty(tuple(x.shape[:-1]) + (weight.shape[0],), dtype=torch.float32)


@torch.library.impl("fxq::plain_conv", "CPU")
def _plain_conv(x, weight, weight_scale, weight_zero_point, bias, stride, padding, dilation, groups, input_scale,
                input_zero_point, output_scale, output_zero_point, output_dtype, post_op, post_op_args):
    geometry = (list(stride), list(padding), list(dilation), groups)
    key = (weight_scale._version, input_scale, input_zero_point, tuple(stride), tuple(padding), tuple(dilation))
    packed = packed_for(weight, key,
                        lambda: torch.ops.onednn.qconv_prepack(weight, weight_scale, input_scale, input_zero_point,
                                                               *geometry, None))
    return torch.ops.onednn.qconv_pointwise(x, input_scale, input_zero_point, packed, weight_scale, weight_zero_point,
                                            bias, *geometry, output_scale, output_zero_point, output_dtype, post_op,
                                            list(post_op_args), "")


@torch.library.register_fake("fxq::plain_conv")
def _plain_conv_fake(x, weight, weight_scale, weight_zero_point, bias, stride, padding, dilation, groups,
                     input_scale, input_zero_point, output_scale, output_zero_point, output_dtype, post_op,
                     post_op_args):
    kernel = weight.shape[2:]
    spatial = [(size + 2 * p - d * (k - 1) - 1) // s + 1
               for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    out = x.new_empty([x.shape[0], weight.shape[0]] + spatial, dtype=output_dtype or torch.uint8)
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(out.dim(), torch.contiguous_format)
    return out.contiguous(memory_format=layout)


def tracing() -> bool:
    """Whether torch.export or torch.compile is tracing the caller."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()
