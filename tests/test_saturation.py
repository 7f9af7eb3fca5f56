"""Where the int8 linear kernel saturates full-range products (fbgemm without VNNI), the transformer mapping keeps
every neighbour pair of weights in range (fxq/observers/pair_limited.py) when the probe finds the pair layout
(fxq/nn/weight_pairs.py), and narrows the weights to 7 bits when it does not; elsewhere they keep 8."""
import pytest
import torch

import fxq
from conftest import sqnr
from fxq.nn.quantized._packing import pack_linear
from fxq.nn.quantized.saturation import linear_kernel_saturates
from fxq.nn.weight_pairs import kernel_pairs_saturate
from fxq.observers import PairLimitedPerChannelObserver
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


def test_the_transformer_mapping_takes_its_weights_from_the_probes():
    weight = fxq.get_transformer_qconfig_mapping().qconfig_for("fc", (torch.nn.Linear,)).weight()
    pairs = linear_kernel_saturates() and kernel_pairs_saturate()
    assert isinstance(weight, PairLimitedPerChannelObserver) == pairs
    assert (weight.quant_max == 63) == (linear_kernel_saturates() and not pairs)
    reduced = fxq.get_transformer_qconfig_mapping(reduce_range=True).qconfig_for("fc", (torch.nn.Linear,)).weight()
    assert type(reduced) is fxq.observers.PerChannelMinMaxObserver and reduced.quant_max == 127  # 7-bit inputs fit
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


def _kernel_error(ints: torch.Tensor, engine: str) -> float:
    """Largest |kernel - exact| of full-range uint8 inputs (zero point 128, as after a LayerNorm) times ``ints``."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, ints.shape[1])).float()
    weight = torch._make_per_tensor_quantized_tensor(ints.to(torch.int8), 1.0, 0)
    y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x, 1.0, 0, pack_linear(weight, None, engine))
    return float((y.double() - x.double() @ ints.double().t()).abs().max())


@pytest.mark.skipif(not kernel_pairs_saturate(), reason="this CPU's int8 linear kernel does not saturate pairs")
def test_pair_limited_weights_are_exact_on_the_kernel_and_wider_than_seven_bits():
    # the probe's pair layout is the kernel's: pair-limited 8-bit weights never saturate, plain 8-bit ones do
    torch.manual_seed(1)
    weight = torch.randn(96, 256)
    observer = PairLimitedPerChannelObserver()
    observer(weight)
    scale = observer.calculate_qparams()[0].reshape(-1, 1)
    ints = (weight / scale).round().clamp(-127, 127)
    plain = (weight / (weight.abs().amax(1, keepdim=True) / 127)).round()
    engine = torch.backends.quantized.engine
    assert _kernel_error(ints, engine) == 0 and _kernel_error(plain, engine) > 1000
    assert float(ints.abs().amax(1).float().mean()) > 80  # more than 7 bits on average (7-bit weights stop at 63)


def test_pair_limited_scale_bounds_every_same_sign_pair():
    # [1, 1] is the largest same-sign pair of row 0 (2.0); row 1's pairs mix signs, so its largest weight sets it
    observer = PairLimitedPerChannelObserver()
    observer(torch.tensor([[1.0, 1.0, -0.5, 0.2, 0.3], [1.0, -1.0, 0.3, 0.3, -0.9]]))
    assert torch.allclose(observer.calculate_qparams()[0] * 127, torch.tensor([2.0, 1.0]))


def test_seven_bit_refit_has_no_channel_gain_error():
    """Rounding 8-bit integers again onto a 7-bit grid moves each channel's largest weight by up to half a step,
    a gain the same for every input that compounds through a network; the refit starts from the float weight."""
    from fxq.nn import reference
    from fxq.nn.plain._base import seven_bit_weights
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 64)
    observer = fxq.observers.PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(layer.weight)
    scale, zero_point = observer.calculate_qparams()
    ref = reference.Linear.from_float(layer, {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8,
                                              "axis": 0, "scale": scale, "zero_point": zero_point})
    narrowed = seven_bit_weights(ref)
    gain = (narrowed.get_weight() * layer.weight).sum(1) / layer.weight.pow(2).sum(1)
    assert narrowed.integer_weight().abs().max() <= 63
    assert float((gain - 1).abs().max()) < 2e-3  # re-rounding the 8-bit grid gave 1/127 = 8e-3 in some channels


@pytest.mark.skipif(not linear_kernel_saturates(), reason="this CPU's int8 kernels do not saturate")
def test_functional_seven_bit_conv_weights_are_not_rounded_again():
    """torch.export's aten.conv2d takes its weight from quantize_per_channel, which carries no quant range: the
    plain lowering must read the integers, not the declared range, to see that 7-bit weights already fit."""
    from fxq.config import QConfig
    from fxq.config.defaults import mapping_with_op_exceptions
    from fxq.observers import HistogramObserver, PerChannelMinMaxObserver, default_weight_observer
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
                                  for _ in range(4)]).eval()
    x = torch.rand(2, 8, 12, 12)
    weights = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                 quant_min=-63, quant_max=63)
    mapping = mapping_with_op_exceptions(QConfig(HistogramObserver.with_args(reduce_range=False), weights), None,
                                         lambda o: QConfig(o, default_weight_observer))
    results = {}
    for tracer in ("fx", "export"):
        prepared = fxq.prepare_fx(model, mapping, (x,), {"tracer": tracer})
        prepared(x)
        results[tracer] = sqnr(model(x), fxq.convert_fx(prepared)(x))
    assert results["export"] >= results["fx"] - 0.5, results


def _plain_conv_error(ints: torch.Tensor) -> float:
    """Largest |kernel - exact| of oneDNN's plain int8 conv on full-range uint8 inputs times ``ints``."""
    from fxq.nn import reference
    from fxq.nn.plain.conv import Conv2d
    conv = torch.nn.Conv2d(ints.shape[1], ints.shape[0], ints.shape[2:], bias=False)
    conv.weight.data = ints.float()
    ones = torch.ones(ints.shape[0])
    ref = reference.Conv2d.from_float(conv, {"qscheme": torch.per_channel_symmetric, "dtype": torch.qint8, "axis": 0,
                                             "scale": ones, "zero_point": torch.zeros(len(ones), dtype=torch.long)})
    x = torch.randint(200, 256, (2, ints.shape[1], 6, 6)).to(torch.uint8)
    exact = torch.nn.functional.conv2d(x.double(), ints.double())
    return float((Conv2d.from_reference(ref, 1.0, 0, None)(x).double() - exact).abs().max())


@pytest.mark.skipif(not kernel_pairs_saturate("plain"), reason="this CPU's int8 kernels do not saturate pairs")
def test_pair_limited_conv_weights_are_exact_on_the_plain_conv_kernel():
    # oneDNN pairs a conv's input channels (2i, 2i+1) at each tap, as the linear pairs its columns
    torch.manual_seed(2)
    weight = torch.randn(8, 16, 3, 3)
    observer = PairLimitedPerChannelObserver()
    observer(weight)
    ints = (weight / observer.calculate_qparams()[0].reshape(-1, 1, 1, 1)).round().clamp(-127, 127)
    full = (weight / (weight.flatten(1).abs().amax(1).reshape(-1, 1, 1, 1) / 127)).round()
    assert _plain_conv_error(ints) < 1e-3 * 255 * 127 and _plain_conv_error(full) > 1000
    assert float(ints.flatten(1).abs().amax(1).float().mean()) > 80
