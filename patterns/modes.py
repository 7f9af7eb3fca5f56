"""Which ops each non-static mode quantizes (the static mode's ops are the observation table's)."""
from torch import nn

from fxq.graph.modes import DYNAMIC, DYNAMIC_FP16, WEIGHT_ONLY
from fxq.nn import fused
from fxq.patterns.ops import CONV_FUNCTIONS, EMBEDDING, LINEAR_FUNCTIONS

_LINEARS = (nn.Linear, fused.LinearReLU) + LINEAR_FUNCTIONS
_RECURRENT = (nn.LSTM, nn.GRU)

MODE_OPS = {
    DYNAMIC: _LINEARS + _RECURRENT,             # int8 weights, activations quantized per call
    DYNAMIC_FP16: _LINEARS[:2] + _RECURRENT,    # float16 weights (modules only)
    WEIGHT_ONLY: _LINEARS + EMBEDDING,          # int8 weights, float activations (F.embedding, aten.embedding too)
}

# Ops that hold a weight: when a mode cannot run one of these, the user hears about it (it stays float).
WEIGHTED_OPS = _LINEARS + (nn.Conv1d, nn.Conv2d, nn.Conv3d, fused.ConvReLU1d, fused.ConvReLU2d, fused.ConvReLU3d,
                           *CONV_FUNCTIONS, *EMBEDDING, nn.EmbeddingBag, nn.LSTM, nn.GRU)
