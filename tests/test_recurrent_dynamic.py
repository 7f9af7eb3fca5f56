"""Dynamic LSTM / GRU (int8 and float16 weights) and the reference forms of the recurrent and embedding layers."""
import copy

import pytest
import torch
from torch import nn

import fxq
from conftest import saved_and_loaded, sqnr, torch_ao


class Tagger(nn.Module):
    """A recurrent layer whose whole output tuple is used, then a Linear head on the sequence output."""

    def __init__(self, kind, **options):
        super().__init__()
        self.rnn = getattr(nn, kind)(16, 32, **options)
        self.head = nn.Linear(32 * (2 if options.get("bidirectional") else 1), 5)

    def forward(self, x):
        output, state = self.rnn(x)
        return self.head(output), state


def _convert(model, mapping, example, reference=False):
    prepared = fxq.prepare_fx(model, mapping, example)
    prepared(*example)
    return (fxq.convert_to_reference_fx if reference else fxq.convert_fx)(prepared)


def _flat(outputs):
    return torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(outputs)])


CASES = [("LSTM", {"num_layers": 2}), ("LSTM", {"bidirectional": True, "batch_first": True}),
         ("GRU", {"num_layers": 2, "bidirectional": True}), ("GRU", {"batch_first": True, "bias": False})]


@pytest.mark.parametrize("kind, options", CASES)
def test_dynamic_recurrent_matches_torch_ao(kind, options, quantized_lowering):
    tao = torch_ao()
    model = Tagger(kind, **options).eval()
    example = (torch.randn(6, 7, 16),)
    ours = _convert(model, fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig), example)
    assert ours.rnn._get_name() == f"DynamicQuantized{kind}"
    theirs_map = tao.quantization.QConfigMapping().set_global(tao.quantization.default_dynamic_qconfig)
    if not options.get("bias", True):  # torch.ao's dynamic RNN asserts bias=True: compare with float only
        theirs = None
    else:
        theirs = tao.quantize_fx.convert_fx(tao.quantize_fx.prepare_fx(copy.deepcopy(model), theirs_map, example))
    with torch.no_grad():
        reference, mine = _flat(model(*example)), _flat(ours(*example))
        assert sqnr(reference, mine) > 30
        if theirs is not None:
            assert sqnr(_flat(theirs(*example)), mine) >= 40
            assert sqnr(reference, mine) >= sqnr(reference, _flat(theirs(*example))) - 0.5


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_float16_recurrent_weights(kind):
    model = Tagger(kind, num_layers=2).eval()
    example = (torch.randn(6, 3, 16),)
    ours = _convert(model, fxq.QConfigMapping().set_global(fxq.float16_dynamic_qconfig), example)
    assert ours.rnn.dtype == torch.float16 and ours.rnn.weight_ih_l0.dtype == torch.float32
    with torch.no_grad():
        assert sqnr(_flat(model(*example)), _flat(ours(*example))) > 50


def test_reference_lstm_reads_quantize_dequantized_weights_and_matches_the_int8_cells(quantized_lowering):
    model = Tagger("LSTM", num_layers=2).eval()
    example = (torch.randn(6, 3, 16),)
    mapping = fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig)
    reference = _convert(model, mapping, example, reference=True)
    assert reference.rnn._get_name() == "ReferenceQuantizedLSTM"
    weight = reference.rnn.quantized_weight("weight_hh_l1")
    assert weight.dtype == torch.qint8 and not torch.equal(weight.dequantize(), model.rnn.weight_hh_l1)
    assert torch.equal(reference.rnn.dequantized_weight("weight_hh_l1"), weight.dequantize())  # no qint8 needed
    with torch.no_grad():
        # the reference quantizes weights only; the cells also quantize activations per step
        assert sqnr(_flat(reference(*example)), _flat(_convert(model, mapping, example)(*example))) > 30


def test_dynamic_lstm_takes_an_initial_state_and_unbatched_input():
    lstm = nn.LSTM(8, 12).eval()
    quantized = _convert(nn.Sequential(lstm).eval(), fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig),
                         (torch.randn(5, 2, 8),)).get_submodule("0")
    state = (torch.randn(1, 2, 12), torch.randn(1, 2, 12))
    x = torch.randn(5, 2, 8)
    expected, (h, c) = lstm(x, state)
    out, (qh, qc) = quantized(x, state)
    assert sqnr(expected, out) > 30 and sqnr(c, qc) > 30
    single, (h1, _) = quantized(x[:, 0], (state[0][:, 0], state[1][:, 0]))
    assert single.shape == (5, 12) and h1.shape == (1, 12)
    assert sqnr(expected[:, 0], single) > 30  # not equal to out[:, 0]: activation ranges are per call


def test_dynamic_lstm_survives_save_load_and_deepcopy():
    model = Tagger("LSTM").eval()
    example = (torch.randn(4, 2, 16),)
    quantized = _convert(model, fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig), example)
    expected = _flat(quantized(*example))
    loaded = saved_and_loaded(quantized)
    assert torch.equal(_flat(loaded(*example)), expected)
    assert torch.equal(_flat(copy.deepcopy(quantized)(*example)), expected)
    fresh = _convert(Tagger("LSTM").eval(), fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig), example)
    fresh.load_state_dict(quantized.state_dict())
    assert torch.equal(_flat(fresh(*example)), expected)


def test_weight_only_embedding_reference_is_readable_and_lowers_to_the_same_numbers():
    model = nn.Sequential(nn.Embedding(40, 24), nn.Linear(24, 6)).eval()
    indices = torch.randint(0, 40, (3, 7))
    reference = _convert(model, fxq.get_weight_only_qconfig_mapping(), (indices,), reference=True)
    assert reference.get_submodule("0")._get_name() == "ReferenceQuantizedEmbedding"
    assert reference.get_submodule("0").weight_qscheme == torch.per_channel_affine_float_qparams
    lowered = _convert(model, fxq.get_weight_only_qconfig_mapping(), (indices,))
    assert lowered.get_submodule("0")._get_name() == "WeightOnlyInt8Embedding"
    with torch.no_grad():
        rows_reference = reference.get_submodule("0")(indices)
        assert torch.allclose(rows_reference, lowered.get_submodule("0")(indices), atol=1e-6)
        assert sqnr(model(indices), lowered(indices)) > 30


@pytest.mark.parametrize("kind, options", CASES)
def test_plain_dynamic_recurrent_makes_no_quantized_tensor_and_beats_the_quantized_cells(kind, options):
    """The default (plain) lowering: int8 projections on oneDNN around a float recurrence; PyTorch AO's cells keep
    qint8 weights, which torch 2.13 deprecates."""
    from fxq.nn import plain
    from no_quantized_tensors import no_quantized_tensors

    model = Tagger(kind, **options).eval()
    example = (torch.randn(6, 7, 16),)
    mapping = fxq.QConfigMapping().set_global(fxq.default_dynamic_qconfig)
    prepared = fxq.prepare_fx(model, mapping, example)
    prepared(*example)
    with no_quantized_tensors(), torch.no_grad():
        ours = fxq.convert_fx(prepared)
        mine = _flat(ours(*example))
    assert isinstance(ours.rnn, getattr(plain.recurrent, kind))
    with torch.no_grad():
        reference = _flat(model(*example))
        cells = _flat(fxq.convert_fx(prepared, {"lowering": "quantized"})(*example))
        assert sqnr(reference, mine) >= sqnr(reference, cells) - 0.5
        assert torch.equal(_flat(saved_and_loaded(ours)(*example)), mine)
        assert torch.equal(_flat(copy.deepcopy(ours)(*example)), mine)


def test_plain_lstm_takes_unbatched_input_and_an_initial_state_as_nn_lstm_does():
    from fxq.nn import plain, reference_recurrent

    torch.manual_seed(0)
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True).eval()
    ref = reference_recurrent.LSTM.from_float(lstm, fxq.observers.default_per_channel_weight_observer)
    plain_lstm = plain.recurrent.LSTM.from_reference(ref)
    x, state = torch.randn(5, 8), (torch.randn(4, 16), torch.randn(4, 16))
    with torch.no_grad():
        expected, (h, c) = lstm(x, state)
        got, (h2, c2) = plain_lstm(x, state)
    assert got.shape == expected.shape and h2.shape == h.shape and c2.shape == c.shape
    assert sqnr(expected, got) > 30 and sqnr(c, c2) > 30
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 8)])
    with pytest.raises(NotImplementedError, match="packed sequences"):
        plain_lstm(packed)
