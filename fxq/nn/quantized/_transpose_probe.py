"""Which engine's int8 transposed-conv kernel computes a given layer correctly on this CPU.

torch 2.13's `quantized::conv_transpose{1,2,3}d` kernels return garbage for some layer shapes, and which shapes
depends on the engine and the CPU. On the AVX2 host these lines were written on, with 2x2 stride-2 kernels:
fbgemm is right for 8->4 and 4->8 channels and wrong for 8->8, 16->32 and 32->16; oneDNN is right only for
8->8; qnnpack is right for all five. An AVX512-VNNI host gave another pattern. No table measured on one CPU
holds on another, so each layer shape is checked on the machine that runs it: a packed
kernel is run once on a seeded random input and compared with float arithmetic on the same int8 operands, and
its weight is unpacked and compared with the one packed (what a state_dict saves).
Verdicts are cached per process, by (engine, weight shape, geometry): the bug follows the kernel path, which
those choose, not the weight values.

    >>> w = torch.quantize_per_tensor(torch.randn(8, 4, 2, 2), 0.02, 0, torch.qint8)
    >>> geometry = ((2, 2), (0, 0), (0, 0), (1, 1), 1)
    >>> correct_engine(w, geometry, ["fbgemm", "onednn"]) in ("fbgemm", "onednn", None)
    True
"""
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F

from fxq.nn.quantized._packing import pack_conv_transpose, unpack_conv_transpose

__all__ = ["correct_engine", "float_conv_transpose"]

_VERDICTS: Dict[Tuple, bool] = {}
_PROBE_SIZE = {1: 9, 2: 7, 3: 5}  # spatial extent of the probe input, per dimension
_MAX_STEPS_OFF = 1  # a correct kernel differs from float-then-round by one rounding step at most


def correct_engine(weight: torch.Tensor, geometry: tuple, candidates: Iterable[str]) -> Optional[str]:
    """The first of ``candidates`` whose kernel is correct for this weight shape and geometry, or None."""
    for engine in candidates:
        key = (engine, tuple(weight.shape), geometry)
        if key not in _VERDICTS:
            _VERDICTS[key] = _kernel_agrees_with_float(tuple(weight.shape), geometry, engine)
        if _VERDICTS[key]:
            return engine
    return None


def float_conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         geometry: tuple) -> torch.Tensor:
    """The transposed convolution in float, on float operands: what a correct int8 kernel approximates."""
    stride, padding, output_padding, dilation, groups = geometry
    function = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[weight.dim() - 2]
    return function(x, weight, bias, list(stride), list(padding), list(output_padding), groups, list(dilation))


def _kernel_agrees_with_float(shape: Tuple[int, ...], geometry: tuple, engine: str) -> bool:
    generator = torch.Generator().manual_seed(0)  # the user's global random state stays untouched
    dims = len(shape) - 2
    weight = torch.quantize_per_tensor(torch.randn(shape, generator=generator) * 0.1, 0.002, 0, torch.qint8)
    groups = geometry[-1]
    bias = torch.randn(shape[1] * groups, generator=generator) * 0.1
    # inputs in [0, 127], as x86's reduce_range observers give: fbgemm's int16 pair sums cannot saturate
    x = torch.quantize_per_tensor(torch.rand(2, shape[0], *[_PROBE_SIZE[dims]] * dims, generator=generator),
                                  1 / 127, 0, torch.quint8)
    expected = float_conv_transpose(x.dequantize(), weight.dequantize(), bias, geometry)
    scale = max(float(expected.max() - expected.min()), 1e-6) / 255
    zero_point = int(min(max(round(-float(expected.min()) / scale), 0), 255))
    try:
        packed = pack_conv_transpose(weight, bias, geometry, engine)
        got = getattr(torch.ops.quantized, f"conv_transpose{dims}d")(x, packed, scale, zero_point)
    except RuntimeError:  # the engine does not take this geometry at all
        return False
    if not torch.equal(unpack_conv_transpose(packed, dims)[0].int_repr(), weight.int_repr()):
        return False  # fbgemm's unpack scrambles some shapes: a state_dict would not load back
    wanted = torch.quantize_per_tensor(expected, scale, zero_point, torch.quint8)
    if got.shape != wanted.shape:
        return False
    steps_off = (got.int_repr().int() - wanted.int_repr().int()).abs().max()
    return int(steps_off) <= _MAX_STEPS_OFF

