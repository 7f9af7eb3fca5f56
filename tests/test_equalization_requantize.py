"""Equalization keeps the user's activation observer: rebuilt for the scaled tensor, checked against re-observing."""
import io
import warnings

import pytest
import torch
from torch import nn

import fxq
from equalization_cases import (LinearLinear, case_models, compensated, equalized, fxq_quantized, reobserved,
                                spread, sqnr)
from fxq.equalization.histograms import row_histograms
from fxq.equalization.observers import ChannelRangeObserver
from fxq.equalization.requantize import configure_recording
from fxq.observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, ObserverBase

EQ = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig)
WEIGHT = fxq.observers.default_weight_observer


def _qmap(activation):
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation, WEIGHT))


def _outlier_case():
    """linear -> relu -> linear on skewed inputs with rare outliers: a histogram clips them, min/max does not."""
    torch.manual_seed(0)
    model = LinearLinear(nn.ReLU()).eval()
    compensated(model.fc1, spread(16, 0.1, 10))

    def data(n):
        x = torch.randn(n, 16) * spread(16, 0.1, 10)
        x[::512, 3] = 400.0
        return x
    return model, data(2048).chunk(4), data(2048)


def _calibrated(model, batches, qmap):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = fxq.prepare_fx(model, qmap, (batches[0],), _equalization_config=EQ)
    for batch in batches:
        prepared(batch)
    return prepared


def _observers(gm):
    """name -> every quantization observer (the rebuilt input/chain ones and the untouched output one)."""
    return {name: module for name, module in gm.named_modules() if isinstance(module, ObserverBase)}


def test_histogram_observer_is_kept_and_matches_re_observing_the_scaled_tensor():
    model, batches, _ = _outlier_case()
    prepared = _calibrated(model, batches, _qmap(HistogramObserver))
    after = equalized(prepared)
    oracle = dict(reobserved(after, batches).named_modules())
    rebuilt = _observers(after)
    assert sorted(rebuilt) == ["activation_post_process_0", "activation_post_process_1", "activation_post_process_2"]
    for name, observer in rebuilt.items():
        assert type(observer) is HistogramObserver
        ours, truth = observer.calculate_qparams()[0], oracle[name].calculate_qparams()[0]
        assert torch.allclose(ours, truth, rtol=1e-4), name
    # the histogram clips the outliers: replacing it with a MinMaxObserver on the same range (the old behaviour)
    # would have chosen a different scale, so this test tells the two apart
    min_max = MinMaxObserver()
    min_max.min_val, min_max.max_val = rebuilt["activation_post_process_1"].min_val, \
        rebuilt["activation_post_process_1"].max_val
    truth = oracle["activation_post_process_1"].calculate_qparams()[0]
    assert (min_max.calculate_qparams()[0] / truth - 1).abs() > 0.03


@pytest.mark.parametrize("activation", [MinMaxObserver, MovingAverageMinMaxObserver.with_args(averaging_constant=0.3)],
                         ids=["min-max", "moving average"])
def test_min_max_observers_are_rebuilt_exactly(activation):
    model, batches, _ = _outlier_case()
    prepared = _calibrated(model, batches, _qmap(activation))
    after = equalized(prepared)
    oracle = dict(reobserved(after, batches).named_modules())
    for name, observer in _observers(after).items():
        assert type(observer) is type(oracle[name])
        assert torch.allclose(observer.min_val, oracle[name].min_val, rtol=1e-5, atol=1e-7), name
        assert torch.allclose(observer.max_val, oracle[name].max_val, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("name", ["linear->linear", "linear->relu->linear", "conv->conv", "F.linear->F.linear"])
def test_connected_layers_with_histogram_observers_gain_at_least_3db(name):
    model, calibration, test = case_models()[name]
    qmap = _qmap(HistogramObserver)
    expected = model(test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = fxq.prepare_fx(model, qmap, (calibration,))
        none(calibration)
        with_eq = fxq.prepare_fx(model, qmap, (calibration,), _equalization_config=EQ)
        with_eq(calibration)
        assert sqnr(expected, fxq.convert_fx(with_eq)(test)) >= sqnr(expected, fxq.convert_fx(none)(test)) + 3.0


def test_per_channel_histograms_follow_the_histogram_observer_rules():
    # each channel's row is what a HistogramObserver watching only that channel records, widening batches included
    torch.manual_seed(0)
    batches = [torch.randn(64, 3) * torch.tensor([1.0, 5.0, 0.1]) * (1 + i) for i in range(3)]
    record = ChannelRangeObserver(ch_axis=1)
    configure_recording(record, HistogramObserver(bins=32))
    per_channel = [HistogramObserver(bins=32) for _ in range(3)]
    for batch in batches:
        record(batch)
        for channel, observer in enumerate(per_channel):
            observer(batch[:, channel])
    for channel, observer in enumerate(per_channel):
        assert torch.allclose(record.histogram[channel], observer.histogram, atol=1e-3)
        assert record.min_val[channel] == observer.min_val and record.max_val[channel] == observer.max_val


def test_row_histograms_match_histc():
    columns, low, high = torch.randn(4, 100), torch.full((4,), -1.0), torch.full((4,), 1.0)
    columns = columns.clamp(-1, 1)
    expected = torch.stack([torch.histc(row, 16, min=-1, max=1) for row in columns])
    assert torch.equal(row_histograms(columns, low, high, 16), expected)


class NotRebuildable(ObserverBase):
    """An observer whose state equalization cannot rescale (it keeps no range)."""

    def __init__(self):
        super().__init__(dtype=torch.quint8)
        self.qscheme = torch.per_tensor_affine

    def calculate_qparams(self):
        return torch.tensor([0.1]), torch.tensor([0])

    def has_data(self):
        return True


def test_an_input_observer_that_cannot_be_rebuilt_skips_the_layer_with_a_warning():
    model, x = nn.Sequential(nn.Linear(4, 4)).eval(), torch.randn(8, 4)
    with pytest.warns(UserWarning, match="node '_0'.*NotRebuildable.*HistogramObserver"):
        prepared = fxq.prepare_fx(model, _qmap(NotRebuildable), (x,), _equalization_config=EQ)
    assert not any("equalization" in name for name, _ in prepared.named_modules())


def test_histogram_records_survive_a_state_dict_round_trip():
    model, batches, test = _outlier_case()
    qmap = _qmap(HistogramObserver)
    prepared = _calibrated(model, batches, qmap)
    buffer = io.BytesIO()
    torch.save(prepared.state_dict(), buffer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = fxq.prepare_fx(model, qmap, (batches[0],), _equalization_config=EQ)
        fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
        assert torch.equal(fxq.convert_fx(fresh)(test), fxq.convert_fx(prepared)(test))


def test_default_qconfig_results_unchanged_by_the_rebuild():
    # MinMaxObserver inputs: the rebuilt observer holds exactly the scaled range (what the old code wrote)
    model, calibration, test = case_models()["single linear"]
    quantized = fxq_quantized(model, calibration)
    assert sqnr(model(test), quantized(test)) > 30.0
