"""Prepacking weights for the int8 kernels, for one quantized engine.

Packed weights are engine specific (fbgemm/x86 and qnnpack lay them out differently), cannot be
pickled portably, and a packed weight keeps working whatever the global engine is later. So each
module packs once, at construction, for `self.engine`, and serialises the unpacked quantized weight.
These functions are the single place packing happens; choosing an engine per layer only means
passing a different `engine`.

    >>> w = torch.quantize_per_tensor(torch.randn(8, 4), 0.02, 0, torch.qint8)
    >>> packed = pack_linear(w, None, "x86")
    >>> unpack_linear(packed)[0].shape
    torch.Size([8, 4])
"""
import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

__all__ = ["current_engine", "packing_for", "pack_linear", "unpack_linear", "pack_conv", "unpack_conv",
           "pack_conv_transpose", "unpack_conv_transpose"]


def current_engine() -> str:
    """The engine new modules pack for: `torch.backends.quantized.engine`."""
    return torch.backends.quantized.engine


@contextlib.contextmanager
def packing_for(engine: str) -> Iterator[None]:
    """Within this block, new quantized modules pack their weights for ``engine``."""
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ValueError(f"quantized engine {engine!r} is not available in this torch build; "
                         f"choose one of {supported}.")
    previous = torch.backends.quantized.engine
    if previous != engine:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        if previous != engine:
            torch.backends.quantized.engine = previous


def pack_linear(weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
    """Pack a qint8 `[out, in]` weight and float bias for `quantized::linear` on `engine`."""
    with packing_for(engine):
        return torch.ops.quantized.linear_prepack(weight, bias)


def unpack_linear(packed) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(quantized weight, float bias or None) of a packed linear weight."""
    return torch.ops.quantized.linear_unpack(packed)


_CONV_PREPACK = {1: "conv1d_prepack", 2: "conv2d_prepack", 3: "conv3d_prepack"}
_CONV_UNPACK = {1: "conv1d_unpack", 2: "conv2d_unpack", 3: "conv3d_unpack"}


def pack_conv(weight: torch.Tensor, bias: Optional[torch.Tensor], geometry: Tuple[List[int], List[int], List[int], int],
              engine: str):
    """Pack a qint8 conv weight for `quantized::conv{1,2,3}d`; geometry is (stride, padding, dilation, groups)."""
    stride, padding, dilation, groups = geometry
    prepack = getattr(torch.ops.quantized, _CONV_PREPACK[weight.dim() - 2])
    with packing_for(engine):
        return prepack(weight, bias, list(stride), list(padding), list(dilation), groups)


def unpack_conv(packed, spatial_dims: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(quantized weight, float bias or None) of a packed conv weight."""
    return getattr(torch.ops.quantized, _CONV_UNPACK[spatial_dims])(packed)


def pack_conv_transpose(weight: torch.Tensor, bias: Optional[torch.Tensor], geometry: tuple, engine: str):
    """Pack a per-tensor qint8 `[in, out / groups, *kernel]` weight for `quantized::conv_transpose{1,2,3}d`;
    geometry is (stride, padding, output_padding, dilation, groups)."""
    stride, padding, output_padding, dilation, groups = geometry
    prepack = getattr(torch.ops.quantized, f"conv_transpose{weight.dim() - 2}d_prepack")
    with packing_for(engine):
        return prepack(weight, bias, list(stride), list(padding), list(output_padding), list(dilation), groups)


def unpack_conv_transpose(packed, spatial_dims: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(quantized weight, float bias or None) of a packed transposed-conv weight."""
    return getattr(torch.ops.quantized, f"conv_transpose{spatial_dims}d_unpack")(packed)
