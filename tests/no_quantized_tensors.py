"""A dispatch mode that fails the moment any op returns a quantized tensor (torch.quint8 / qint8 / qint32 ...).

torch 2.13 deprecates quantized tensor dtypes; code meant to run without them (fxq.nn.plain) is checked by
running it inside ``no_quantized_tensors()``, which sees every aten and custom op, including those called from
C++ kernels through the dispatcher. The deprecation warning is also turned into an error there.

    with no_quantized_tensors():
        module = plain.Linear.from_reference(ref, 0.05, 64, 0.1, 128)
        module(x)
"""
import contextlib
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

QUANTIZED_DTYPES = (torch.quint8, torch.qint8, torch.qint32, torch.quint4x2, torch.quint2x4)


class QuantizedTensorCreated(AssertionError):
    pass


class NoQuantizedTensors(TorchDispatchMode):
    """Raises QuantizedTensorCreated when an op's output (or a quantized input) has a quantized dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.ops_seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops_seen.append(str(func))
        _check(func, "input", (args, kwargs))
        out = func(*args, **kwargs)
        _check(func, "output", out)
        return out


def _check(func, role: str, values) -> None:
    for value in tree_flatten(values)[0]:
        if isinstance(value, torch.Tensor) and value.dtype in QUANTIZED_DTYPES:
            raise QuantizedTensorCreated(f"{func} has a quantized {role} of dtype {value.dtype}")
        if isinstance(value, torch.dtype) and value in QUANTIZED_DTYPES:
            raise QuantizedTensorCreated(f"{func} was asked for quantized dtype {value}")


@contextlib.contextmanager
def no_quantized_tensors():
    """Fail on any quantized tensor created (or consumed) in the block, and on the deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*quantized tensor creation functions.*")
        with NoQuantizedTensors() as mode:
            yield mode
