"""Observation table: how each quantizable op's inputs and output are observed during calibration.

Kinds:
  OWN     the inputs get the qconfig's activation observer (unless already observed) and the output gets its own.
  SHARED  the output keeps the input's qparams: its observer is the input's observer instance (max pool,
          reshape, relu after a quantized op, ...). With several inputs (cat), all inputs share one instance too.
  FIXED   the output has fixed qparams (sigmoid: [0, 1], tanh: [-1, 1]), whatever the data.
An op with no row here stays float; its observed inputs are dequantized in front of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch.nn.functional as F
from torch import nn

from fxq.nn import fused
from fxq.nn.qat import intrinsic
from fxq.patterns.matcher import Table, chain, row
from fxq.patterns.ops import (ADD, BOUNDED, CAT, STACK, CONV_FUNCTIONS, CONV_MODULES, CONV_TRANSPOSE_MODULES, ELU, LINEAR_FUNCTIONS,
                              HARDSIGMOID, HARDSWISH, INSTANCE_NORMS, LAYER_NORM, LEAKY_RELU, MATMUL, MUL, RELU,
                              SHARES_INPUT_QPARAMS, SIGMOID, SOFTMAX, TANH)

OWN, SHARED, FIXED = "own", "shared", "fixed"

# (scale, zero_point) for quint8, as torch's quantized kernels produce them for these ops.
RANGE_0TO1 = (1.0 / 256.0, 0)
RANGE_NEG1TO1 = (2.0 / 256.0, 128)


@dataclass(frozen=True)
class Observe:
    """How one op (or a chain ending in a relu) is observed.

    ``inputs``: positions of activation arguments (a list argument, as in ``cat``, observes each element);
    ``weight``: position of a weight argument observed with the qconfig's weight observer (functional linear/conv);
    ``fixed``: (scale, zero_point) of a FIXED output;
    ``quantize_float_inputs``: False for ops that are as cheap in float (softmax, sigmoid): a float input is
    left float rather than quantized just to feed the int8 kernel, which would add a quantization error.
    """

    kind: str
    inputs: tuple = (0,)
    weight: Optional[int] = None
    fixed: Optional[tuple] = None
    quantize_float_inputs: bool = True
    when: Optional[Callable] = None  # when(match_nodes, modules) -> bool: the row applies only if it says so

    def accepts(self, nodes: list, modules: dict) -> bool:
        return self.when is None or self.when(nodes, modules)


_WEIGHTED_MODULES = (nn.Linear, fused.LinearReLU) + CONV_MODULES + (fused.ConvReLU1d, fused.ConvReLU2d,
                                                                    fused.ConvReLU3d)
_OWN_MODULES = _WEIGHTED_MODULES + CONV_TRANSPOSE_MODULES + INSTANCE_NORMS + (
    nn.BatchNorm2d, nn.BatchNorm3d, fused.BNReLU2d, fused.BNReLU3d, nn.LayerNorm, nn.GroupNorm, nn.Hardswish, nn.ELU,
    nn.LeakyReLU, nn.PReLU) + tuple(intrinsic.CONSTITUENTS)
_UNFUSED_WEIGHTED = (nn.Linear,) + CONV_MODULES



def _rows():
    own = Observe(OWN)
    binary = Observe(OWN, inputs=(0, 1))
    functional_weighted = Observe(OWN, inputs=(0,), weight=1)
    # conv -> relu6: one observer, after relu6: the conv output is quantized with the clamp's range
    yield row(chain(_UNFUSED_WEIGHTED, BOUNDED), own)
    yield row(chain(LINEAR_FUNCTIONS + CONV_FUNCTIONS, BOUNDED), functional_weighted)
    yield row(_OWN_MODULES, own)                                          # linear/conv/norm modules: x -> obs
    yield row(chain(LINEAR_FUNCTIONS, RELU), functional_weighted)         # F.linear -> relu: one observer after relu
    yield row(LINEAR_FUNCTIONS, functional_weighted)
    for conv in CONV_FUNCTIONS:
        yield row(chain(conv, RELU), functional_weighted)                 # F.conv -> relu: one observer after relu
        yield row(conv, functional_weighted)
    yield row(chain(ADD, RELU), binary)                                   # add -> relu: one observer after relu
    yield row(chain(MUL, RELU), binary)
    # torch.bmm has no lowering row, so it runs in float: observing its output would quantize all of it before a
    # reader keeps a part (DLRM's triu selection) at a coarser scale. Unobserved, each reader quantizes what it keeps.
    yield row(ADD + MUL + MATMUL, binary)
    yield row(LAYER_NORM[1:] + HARDSWISH[1:] + ELU[1:] + LEAKY_RELU[1:], own)
    yield row(CAT + STACK, Observe(SHARED))                               # every cat input shares one observer
    yield row(SHARES_INPUT_QPARAMS, Observe(SHARED))
    # PyTorch AO gives nn.Softmax fixed qparams but observes functional softmax like any op: so does fxq.
    yield row(SIGMOID + HARDSIGMOID + SOFTMAX[:1], Observe(FIXED, fixed=RANGE_0TO1, quantize_float_inputs=False))
    yield row(SOFTMAX[1:], Observe(OWN, quantize_float_inputs=False))
    yield row(TANH, Observe(FIXED, fixed=RANGE_NEG1TO1, quantize_float_inputs=False))


OBSERVATION = Table("observation", _rows())
