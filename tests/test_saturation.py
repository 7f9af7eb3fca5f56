"""Where the int8 linear kernel saturates full-range products (fbgemm without VNNI), the transformer mapping
narrows the weights to 7 bits; elsewhere they keep 8 (fxq/nn/quantized/saturation.py)."""
import pytest
import torch

import fxq
from conftest import sqnr
from fxq.nn.quantized._packing import pack_linear
from fxq.nn.quantized.saturation import linear_kernel_saturates
from tools.zoo import BertEncoder


def _full_range_product(weight_value: float, engine: str) -> float:
    """quantized::linear of 64 uint8 255s by 64 int8 ``weight_value``s, relative to the exact result."""
    x = torch.quantize_per_tensor(torch.full((1, 64), 255.0), 1.0, 0, torch.quint8)
    weight = torch.quantize_per_tensor(torch.full((1, 64), weight_value), 1.0, 0, torch.qint8)
    exact = 255.0 * weight_value * 64
    return float(torch.ops.quantized.linear(x, pack_linear(weight, None, engine), exact / 200, 0).dequantize()) / exact


def test_the_probe_agrees_with_the_kernel_and_seven_bit_weights_are_exact():
    engine = torch.backends.quantized.engine
    assert (abs(_full_range_product(127.0, engine) - 1) > 0.02) == linear_kernel_saturates(engine)
    assert abs(_full_range_product(63.0, engine) - 1) <= 0.01  # |w1| + |w2| <= 128: every int16 pair sum fits


def test_the_transformer_mapping_takes_its_weight_width_from_the_probe():
    weight = fxq.get_transformer_qconfig_mapping().qconfig_for("fc", (torch.nn.Linear,)).weight()
    assert (weight.quant_max == 63) == linear_kernel_saturates()
    assert fxq.get_transformer_qconfig_mapping(weight_bits=8).qconfig_for("fc", (torch.nn.Linear,)).weight() \
        .quant_max == 127
    with pytest.raises(ValueError, match="weight_bits=9"):
        fxq.get_transformer_qconfig_mapping(weight_bits=9)


def _bert_sqnr(weight_bits: int) -> float:
    torch.manual_seed(768)
    model = BertEncoder(layers=1).eval()
    data = [torch.randn(1, 32, 768) for _ in range(3)]
    mapping = fxq.get_transformer_qconfig_mapping(weight_bits=weight_bits)
    prepared = fxq.prepare_fx(model, mapping, (data[0],))
    with torch.no_grad():
        for x in data[:2]:
            prepared(x)
        return sqnr(model(data[2]), fxq.convert_fx(prepared)(data[2]))


@pytest.mark.skipif(not linear_kernel_saturates(), reason="this CPU's int8 linear kernel does not saturate")
def test_where_the_kernel_saturates_seven_bit_weights_beat_eight(quantized_lowering):
    assert _bert_sqnr(7) >= _bert_sqnr(8) + 3


@pytest.mark.skipif(not linear_kernel_saturates(), reason="this CPU's int8 linear kernel does not saturate")
def test_the_plain_lowering_takes_seven_bit_weights_itself_where_activations_are_full_range():
    assert _bert_sqnr(8) >= _bert_sqnr(7) - 1  # not the collapse of the quantized kernel above
