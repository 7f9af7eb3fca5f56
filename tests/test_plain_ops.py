"""fxq::quantize_per_tensor / dequantize_per_tensor: the integers of torch's quantize, ties included, traceable."""
import pytest
import torch

from fxq.nn.plain import ops
from no_quantized_tensors import QuantizedTensorCreated, no_quantized_tensors


def _values_with_ties(scale: float, count: int) -> torch.Tensor:
    # random values, exact half steps (ties for round-half-to-even) and values far outside the range
    halves = (torch.randint(-600, 600, (count,)).float() + 0.5) * scale
    extremes = torch.tensor([1e9, -1e9, float("inf"), -float("inf"), 0.0, -0.0])
    values = torch.cat([torch.randn(count) * 3, halves, extremes])
    return values[torch.randperm(len(values))]


@pytest.mark.parametrize("dtype, quantized_dtype, low, high", [
    (torch.uint8, torch.quint8, 0, 255), (torch.int8, torch.qint8, -128, 127)])
def test_quantize_matches_torch_bit_for_bit(dtype, quantized_dtype, low, high):
    for trial in range(12):
        scale = float(torch.rand(()) * 0.1 + 1e-3)
        zero_point = int(torch.randint(low, high + 1, ()))
        x = _values_with_ties(scale, int(torch.randint(1, 2000, ())))
        expected = torch.quantize_per_tensor(x, scale, zero_point, quantized_dtype)
        ours = ops.quantize_per_tensor(x, torch.tensor(scale, dtype=torch.float64), torch.tensor(zero_point), low,
                                       high, dtype)
        assert ours.dtype == dtype
        assert torch.equal(ours, expected.int_repr()), (scale, zero_point)
        assert torch.equal(ops.dequantize_per_tensor(ours, torch.tensor(scale), torch.tensor(zero_point)),
                           expected.dequantize())


def test_quantize_narrow_range_clamps():
    # 7-bit activations: quant range 0..127 of uint8
    q = ops.quantize_per_tensor(torch.tensor([-5.0, 0.0, 100.0]), torch.tensor(0.1), torch.tensor(64), 0, 127)
    assert q.tolist() == [14, 64, 127]


def test_quantize_keeps_shape_and_layout_of_non_contiguous_input():
    x = torch.randn(4, 6).t()
    q = ops.quantize_per_tensor(x, torch.tensor(0.05), torch.tensor(128))
    assert q.shape == (6, 4)
    assert torch.equal(q, torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).int_repr())


def test_bad_range_or_dtype_is_refused():
    with pytest.raises(ValueError, match="must lie within"):
        ops.quantize_per_tensor(torch.zeros(2), torch.tensor(0.1), torch.tensor(0), 0, 300)
    with pytest.raises(ValueError, match="torch.uint8 or torch.int8"):
        ops.quantize_per_tensor(torch.zeros(2), torch.tensor(0.1), torch.tensor(0), 0, 255, torch.int32)


def test_ops_create_no_quantized_tensor():
    with no_quantized_tensors():
        q = ops.quantize_per_tensor(torch.randn(8), torch.tensor(0.1), torch.tensor(128))
        ops.dequantize_per_tensor(q, torch.tensor(0.1), torch.tensor(128))


def test_the_helper_catches_a_quantized_tensor():
    with pytest.raises(QuantizedTensorCreated):
        with no_quantized_tensors():
            torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.quint8)


class _QuantizeDequantize(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.05))
        self.register_buffer("zero_point", torch.tensor(128))

    def forward(self, x):
        q = torch.ops.fxq.quantize_per_tensor(x, self.scale, self.zero_point, 0, 255, torch.uint8)
        return torch.ops.fxq.dequantize_per_tensor(q, self.scale, self.zero_point)


def test_ops_trace_with_torch_export():
    # the fake implementations let export trace through; the graph keeps the fxq ops as single nodes
    module, x = _QuantizeDequantize(), torch.randn(3, 5)
    exported = torch.export.export(module, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"fxq.quantize_per_tensor.default", "fxq.dequantize_per_tensor.default"} <= targets
    assert torch.equal(exported.module()(x), module(x))


def test_fake_implementations_give_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 7)
        q = torch.ops.fxq.quantize_per_tensor(x, torch.tensor(0.1), torch.tensor(3), -128, 127, torch.int8)
        assert (q.shape, q.dtype) == ((2, 7), torch.int8)
        assert torch.ops.fxq.dequantize_per_tensor(q, torch.tensor(0.1), torch.tensor(3)).dtype == torch.float32
