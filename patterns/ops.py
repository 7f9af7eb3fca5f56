"""Families of ops that are spelled several ways (module, function, method, and the aten op torch.export emits),
named once for every table.

An aten spelling is added with :func:`aten_of`, which also records the torch-level function it stands for
(:data:`TORCH_SPELLING`): qconfig rules keyed by ``F.layer_norm`` or ``torch.sigmoid`` then select the aten op too.

    >>> aten.linear.default in LINEAR_FUNCTIONS, TORCH_SPELLING[aten.linear.default] is F.linear
    (True, True)
"""
import operator

import torch
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten

# aten op -> the torch-level function of its family (for qconfig lookups by object type and for messages)
TORCH_SPELLING: dict = {}


def aten_of(function, *aten_ops) -> tuple:
    """The aten spellings of ``function``, recorded in :data:`TORCH_SPELLING`; returns them as a tuple."""
    for op in aten_ops:
        TORCH_SPELLING.setdefault(op, function)
    return aten_ops


def aten_spellings(family: tuple) -> tuple:
    """The aten ops of a family (what torch.export emits for it)."""
    return tuple(op for op in family if isinstance(op, torch._ops.OpOverload))


RELU = (nn.ReLU, F.relu, torch.relu, "relu", "relu_") + aten_of(F.relu, aten.relu.default, aten.relu_.default)
ADD = (operator.add, torch.add, operator.iadd, "add") + aten_of(torch.add, aten.add.Tensor, aten.add_.Tensor)
MUL = (operator.mul, torch.mul, operator.imul, "mul") + aten_of(torch.mul, aten.mul.Tensor, aten.mul_.Tensor)
MATMUL = (torch.matmul, operator.matmul) + aten_of(torch.matmul, aten.matmul.default)
BMM = (torch.bmm,) + aten_of(torch.bmm, aten.bmm.default)
CAT = (torch.cat, torch.concat, torch.concatenate) + aten_of(torch.cat, aten.cat.default)
STACK = (torch.stack,) + aten_of(torch.stack, aten.stack.default)

LINEAR_FUNCTIONS = (F.linear,) + aten_of(F.linear, aten.linear.default)
CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_FUNCTIONS = ((F.conv1d, F.conv2d, F.conv3d) + aten_of(F.conv1d, aten.conv1d.default)
                  + aten_of(F.conv2d, aten.conv2d.default) + aten_of(F.conv3d, aten.conv3d.default))
# Batch norm as torch.export emits it in eval mode: aten.batch_norm(x, weight, bias, mean, var, training, momentum, eps)
BATCH_NORM_FUNCTIONS = aten_of(F.batch_norm, aten.batch_norm.default)
BATCH_NORMS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

SOFTMAX = (nn.Softmax, F.softmax, torch.softmax, "softmax") + aten_of(F.softmax, aten.softmax.int,
                                                                      aten._softmax.default)
SIGMOID = (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid") + aten_of(torch.sigmoid, aten.sigmoid.default)
HARDSIGMOID = (nn.Hardsigmoid, F.hardsigmoid) + aten_of(F.hardsigmoid, aten.hardsigmoid.default)
TANH = (nn.Tanh, torch.tanh, F.tanh, "tanh") + aten_of(torch.tanh, aten.tanh.default)
LAYER_NORM = (nn.LayerNorm, F.layer_norm) + aten_of(F.layer_norm, aten.layer_norm.default)
HARDSWISH = (nn.Hardswish, F.hardswish) + aten_of(F.hardswish, aten.hardswish.default)
ELU = (nn.ELU, F.elu) + aten_of(F.elu, aten.elu.default)
LEAKY_RELU = (nn.LeakyReLU, F.leaky_relu) + aten_of(F.leaky_relu, aten.leaky_relu.default)
GELU = (nn.GELU, F.gelu) + aten_of(F.gelu, aten.gelu.default)  # no int8 kernel: runs in float between int8 ops
EMBEDDING = (nn.Embedding, F.embedding) + aten_of(F.embedding, aten.embedding.default)

# Ops whose output is a re-arrangement or a monotone map of one input: they keep the input's qparams.
SHAPE_METHODS = ("view", "reshape", "permute", "transpose", "flatten", "squeeze", "unsqueeze", "contiguous",
                 "detach", "repeat", "expand", "mean", "clamp")
SHARES_INPUT_QPARAMS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    nn.Flatten, nn.Identity, nn.Dropout, F.dropout, nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh,
    torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze,
    torch.mean, torch.clamp,
    *aten_of(F.max_pool1d, aten.max_pool1d.default), *aten_of(F.max_pool2d, aten.max_pool2d.default),
    *aten_of(F.max_pool3d, aten.max_pool3d.default), *aten_of(F.avg_pool1d, aten.avg_pool1d.default),
    *aten_of(F.avg_pool2d, aten.avg_pool2d.default), *aten_of(F.avg_pool3d, aten.avg_pool3d.default),
    *aten_of(F.adaptive_avg_pool1d, aten.adaptive_avg_pool1d.default),
    *aten_of(F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d.default),
    *aten_of(F.adaptive_avg_pool3d, aten.adaptive_avg_pool3d.default),
    *aten_of(F.dropout, aten.dropout.default), *aten_of(F.hardtanh, aten.hardtanh.default),
    *aten_of(torch.flatten, aten.flatten.using_ints), *aten_of(torch.reshape, aten.view.default, aten.reshape.default),
    *aten_of(torch.permute, aten.permute.default), *aten_of(torch.transpose, aten.transpose.int),
    *aten_of(torch.squeeze, aten.squeeze.dim, aten.squeeze.dims), *aten_of(torch.unsqueeze, aten.unsqueeze.default),
    *aten_of(torch.mean, aten.mean.dim), *aten_of(torch.clamp, aten.clamp.default),
    aten.slice.Tensor, aten.select.int, aten.contiguous.default, aten.expand.default,
    aten.clone.default, aten.t.default,
    # padding (constant mode pads with the zero point's value) and selection: they only move int8 values around
    F.pad, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    operator.getitem, torch.narrow, torch.index_select, F.interpolate, nn.Upsample, F.pixel_shuffle,
    F.pixel_unshuffle, nn.PixelShuffle, nn.PixelUnshuffle, torch.repeat_interleave,
) + RELU + SHAPE_METHODS + ("narrow", "index_select", "expand_as", "repeat_interleave", "flip", "roll")

# Bounded activations. After a conv / linear they are observed as one op with it: the conv's int8 output gets the
# clamp's range (PyTorch AO gives it the conv's own, wider range and loses resolution there).
BOUNDED = (nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh, torch.clamp, torch.clip, "clamp", "clip", aten.hardtanh.default,
           aten.clamp.default) + aten_of(torch.clip, aten.clip.default)

# Ops whose output may share memory with their first input: an in-place op on their result also changes the input.
ALIASING = ("view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "flatten", "squeeze",
            "unsqueeze", "expand", "expand_as", "contiguous", "detach", "narrow", "select", "unflatten", "split",
            "chunk", "unbind", "as_strided", "diagonal", "movedim", "swapaxes", "__getitem__",
            operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
            torch.unsqueeze, torch.narrow, torch.select, torch.split, torch.chunk, torch.unbind, torch.t,
            torch.movedim, torch.swapaxes, torch.detach, torch.diagonal, nn.Flatten, nn.Identity, nn.Unflatten,
            aten.view.default, aten.reshape.default, aten.permute.default, aten.transpose.int, aten.t.default,
            aten.flatten.using_ints, aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.expand.default,
            aten.slice.Tensor, aten.select.int, aten.alias.default, aten.detach.default, aten.contiguous.default)

# In-place spellings as functions: call_method in-place ops are recognised by their trailing underscore instead.
INPLACE_FUNCTIONS = {torch.relu_: torch.relu, torch.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh,
                     torch.clamp_: torch.clamp, torch.clip_: torch.clip, F.relu_: F.relu, F.elu_: F.elu,
                     F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh, operator.iadd: operator.add,
                     operator.imul: operator.mul, operator.isub: operator.sub, operator.itruediv: operator.truediv,
                     aten.relu_.default: aten.relu.default, aten.add_.Tensor: aten.add.Tensor,
                     aten.mul_.Tensor: aten.mul.Tensor, aten.hardtanh_.default: aten.hardtanh.default,
                     aten.sigmoid_.default: aten.sigmoid.default, aten.tanh_.default: aten.tanh.default}
