"""Families of ops that are spelled several ways (module, function, method), named once for every table."""
import operator

import torch
import torch.nn.functional as F
from torch import nn

RELU = (nn.ReLU, F.relu, torch.relu, "relu", "relu_")
ADD = (operator.add, torch.add, operator.iadd, "add")
MUL = (operator.mul, torch.mul, operator.imul, "mul")
MATMUL = (torch.matmul, operator.matmul, torch.bmm)
CAT = (torch.cat, torch.concat, torch.concatenate)
STACK = (torch.stack,)

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
BATCH_NORMS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)

SOFTMAX = (nn.Softmax, F.softmax, torch.softmax, "softmax")
SIGMOID = (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid")
HARDSIGMOID = (nn.Hardsigmoid, F.hardsigmoid)
TANH = (nn.Tanh, torch.tanh, F.tanh, "tanh")
LAYER_NORM = (nn.LayerNorm, F.layer_norm)
HARDSWISH = (nn.Hardswish, F.hardswish)
ELU = (nn.ELU, F.elu)
LEAKY_RELU = (nn.LeakyReLU, F.leaky_relu)

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
    # padding (constant mode pads with the zero point's value) and selection: they only move int8 values around
    F.pad, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    operator.getitem, torch.narrow, torch.index_select, F.interpolate, nn.Upsample, F.pixel_shuffle,
    F.pixel_unshuffle, nn.PixelShuffle, nn.PixelUnshuffle, torch.repeat_interleave,
) + RELU + SHAPE_METHODS + ("narrow", "index_select", "expand_as", "repeat_interleave", "flip", "roll")

# Bounded activations. After a conv / linear they are observed as one op with it: the conv's int8 output gets the
# clamp's range (PyTorch AO gives it the conv's own, wider range and loses resolution there).
BOUNDED = (nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh, torch.clamp, torch.clip, "clamp", "clip")

# Ops whose output may share memory with their first input: an in-place op on their result also changes the input.
ALIASING = ("view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "flatten", "squeeze",
            "unsqueeze", "expand", "expand_as", "contiguous", "detach", "narrow", "select", "unflatten", "split",
            "chunk", "unbind", "as_strided", "diagonal", "movedim", "swapaxes", "__getitem__",
            operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
            torch.unsqueeze, torch.narrow, torch.select, torch.split, torch.chunk, torch.unbind, torch.t,
            torch.movedim, torch.swapaxes, torch.detach, torch.diagonal, nn.Flatten, nn.Identity, nn.Unflatten)

# In-place spellings as functions: call_method in-place ops are recognised by their trailing underscore instead.
INPLACE_FUNCTIONS = {torch.relu_: torch.relu, torch.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh,
                     torch.clamp_: torch.clamp, torch.clip_: torch.clip, F.relu_: F.relu, F.elu_: F.elu,
                     F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh, operator.iadd: operator.add,
                     operator.imul: operator.mul, operator.isub: operator.sub, operator.itruediv: operator.truediv}
