"""Helpers shared by the fxq.nn tests: weight qparams, quantized inputs and the torch.ao nn modules."""
import importlib
import warnings

import torch

from conftest import torch_ao


def weight_qparams(weight: torch.Tensor, per_channel: bool, symmetric: bool = False) -> dict:
    """Symmetric-range qint8 qparams for `weight` (zero_point 0), tagged affine unless `symmetric`."""
    if per_channel:
        amax = weight.detach().abs().flatten(1).amax(dim=1)
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return {"qscheme": qscheme, "dtype": torch.qint8, "scale": amax / 127,
                "zero_point": torch.zeros(len(amax), dtype=torch.long), "axis": 0}
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    return {"qscheme": qscheme, "dtype": torch.qint8, "scale": weight.detach().abs().max() / 127,
            "zero_point": torch.tensor(0)}


def quantized_input(*shape: int, scale: float = 0.06, zero_point: int = 64) -> torch.Tensor:
    # 7-bit values (0..127), as the x86 qconfig's reduce_range gives: on CPUs without VNNI the x86/fbgemm kernels
    # sum pairs of u8*s8 products in saturating int16, and full-range activations can overflow there.
    return torch.quantize_per_tensor(torch.randn(*shape), scale, zero_point, torch.quint8)


def ao_nn():
    """torch.ao's quantized (nnq), intrinsic quantized (nniq) and reference (nnqr) modules, or skip."""
    torch_ao()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (importlib.import_module("torch.ao.nn.quantized"),
                importlib.import_module("torch.ao.nn.intrinsic.quantized"),
                importlib.import_module("torch.ao.nn.quantized.reference"))


def assert_same_quantized(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bit-identical int8 values and the same output qparams."""
    assert ours.dtype == theirs.dtype
    assert ours.q_scale() == theirs.q_scale() and ours.q_zero_point() == theirs.q_zero_point()
    assert torch.equal(ours.int_repr(), theirs.int_repr())
