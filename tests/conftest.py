"""Shared test helpers: the torch.ao reference (skipped cleanly where torch no longer ships it) and SQNR."""
import importlib
import io
import os
import warnings

import pytest
import torch

# Every pass must leave a graph that lints clean (DESIGN.md); in the suite check after each one, not only at the end.
os.environ.setdefault("FXQ_CHECK_PASSES", "1")
# The cost model (on by default) would leave the suite's small layers float on some CPUs and not on others: tests
# compare kernels and numerics, so they quantize every layer the qconfig asks for. tests/test_cost_model.py turns
# it on where it is the subject; FXQ_COST_CACHE=off keeps the suite from writing timings to the user's cache.
os.environ.setdefault("FXQ_COST_MODEL", "off")
os.environ.setdefault("FXQ_COST_CACHE", "off")


def torch_ao():
    """Return torch.ao's FX quantization modules as a namespace, or skip the test with a reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantization = importlib.import_module("torch.ao.quantization")
            quantize_fx = importlib.import_module("torch.ao.quantization.quantize_fx")
    except ImportError as error:  # torch without the deprecated torch.ao package
        pytest.skip(f"torch.ao.quantization is not available in this torch ({error}); nothing to compare with")
    return _Namespace(quantization=quantization, quantize_fx=quantize_fx)


class _Namespace:
    def __init__(self, **items):
        self.__dict__.update(items)


def saved_and_loaded(obj):
    """``obj`` after a torch.save / torch.load round trip through memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def sqnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of `other` against `reference`, in dB (inf when equal)."""
    reference = reference.dequantize() if reference.is_quantized else reference
    other = other.dequantize() if other.is_quantized else other
    noise = (reference.float() - other.float()).pow(2).mean()
    signal = reference.float().pow(2).mean()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(signal / noise))


@pytest.fixture(autouse=True)
def _seed_and_engine():
    torch.manual_seed(0)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = previous


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread than with threads contending on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def quantized_lowering(monkeypatch):
    """convert_fx lowers to quantized tensors and modules (the switch back from the plain default): for tests that
    compare graphs, modules or outputs with PyTorch AO's, which has only that lowering."""
    monkeypatch.setenv("FXQ_LOWERING", "quantized")

