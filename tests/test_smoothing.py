"""SmoothQuant (fxq.SmoothQuant): float model unchanged, shared factors, int8 gains, no harm where it cannot help."""
import pytest
import torch
from torch import nn

import fxq
from conftest import sqnr
from fxq.equalization.smoothing import ALPHA_GRID, choose_alpha, smoothing_scale
from fxq.passes import flows, smooth
from zoo import ZOO

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


class OutlierBlock(nn.Module):
    """A LayerNorm with outlier channels feeding q, k, v, an FFN and a non-linear user; the FFN's GELU output
    has outlier channels too."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.up, self.gelu, self.down = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        with torch.no_grad():
            self.norm.weight[[3, 17]] = torch.tensor([60.0, -35.0])
            self.up.weight[[5, 40]] *= 40

    def forward(self, x):
        h = self.norm(x)
        mixed = self.query(h) * torch.sigmoid(self.key(h)) + self.value(h)  # stands in for attention
        return mixed + self.down(self.gelu(self.up(h))) + 0.01 * h  # h: a user that is not a linear


def _prepared(model, config, data, mapping=None):
    prepared = fxq.prepare_fx(model, mapping or fxq.get_default_qconfig_mapping(), (data[0],),
                              _equalization_config=config)
    for batch in data:
        prepared(batch)
    return prepared


def _linears_only():
    """int8 linears, everything else float (MinMax observers: fast; smoothing rebuilds them exactly)."""
    qconfig = fxq.QConfig(fxq.observers.MinMaxObserver.with_args(reduce_range=False),
                          fxq.observers.PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                          qscheme=torch.per_channel_symmetric))
    return fxq.QConfigMapping().set_object_type(nn.Linear, qconfig)


def _data(seed=0, batches=4):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 16, 32, generator=generator) for _ in range(batches)]


def _model():
    torch.manual_seed(0)
    return OutlierBlock().eval()


def test_float_model_unchanged_after_folding():
    # the smooth pass alone: weights, biases and observers change, the float function does not (1e-5 of the
    # output's range: the outlier channels reach ~100, where float32 rounding alone is ~1e-5)
    model, data = _model(), _data()
    folded = flows.convert(_prepared(model, fxq.SmoothQuant(alpha=0.5), data), passes=[smooth.run])
    assert any(name.endswith("_smoothing_scale") for name, _ in folded.named_buffers())
    for x in data:
        expected = model(x)
        assert float((folded(x) - expected).abs().max() / expected.abs().max()) < 1e-5


def test_norm_is_folded_and_qkv_share_one_factor():
    model, data = _model(), _data()
    folded = flows.convert(_prepared(model, fxq.SmoothQuant(alpha=0.5), data), passes=[smooth.run])
    scale = folded.get_buffer("norm_smoothing_scale")
    assert scale.max() / scale.min() > 5  # the outlier channels got a large factor
    for name in ("query", "key", "value"):  # each column j multiplied by the same s[j]
        ratio = folded.get_submodule(name).weight / model.get_submodule(name).weight
        torch.testing.assert_close(ratio, scale.expand_as(ratio), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded.norm.weight * scale, model.norm.weight, rtol=1e-5, atol=1e-5)
    assert not any(n.target is torch.div and "norm" in str(n.args) for n in folded.graph.nodes)  # no op added


def test_user_model_not_mutated():
    model, data = _model(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxq.convert_fx(_prepared(model, fxq.SmoothQuant(), data))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("alpha", [0.5, "search"])
def test_smoothing_gains_sqnr_on_outliers(alpha):
    model, data = _model(), _data()
    test = _data(seed=1, batches=2)
    plain = fxq.convert_fx(_prepared(model, None, data, _linears_only()))
    smoothed = fxq.convert_fx(_prepared(model, fxq.SmoothQuant(alpha=alpha), data, _linears_only()))
    gain = min(sqnr(model(x), smoothed(x)) - sqnr(model(x), plain(x)) for x in test)
    assert gain >= 0.8  # measured: 1.0 dB (alpha 0.5), 1.9 dB (search); the linears' outputs stay per-tensor


def test_select_and_exclude_queries():
    model, data = _model(), _data()
    only_norm = flows.convert(_prepared(model, fxq.SmoothQuant(select="norm"), data), passes=[smooth.run])
    names = {name for name, _ in only_norm.named_buffers() if name.endswith("_smoothing_scale")}
    assert names == {"norm_smoothing_scale"}
    excluded = flows.convert(_prepared(model, fxq.SmoothQuant(exclude=["norm"]), data), passes=[smooth.run])
    assert "norm_smoothing_scale" not in {name for name, _ in excluded.named_buffers()}


def test_bad_alpha_says_what_to_pass():
    with pytest.raises(ValueError, match="alpha must be a number in"):
        fxq.SmoothQuant(alpha=1.5)


def test_choose_alpha_declines_when_activations_are_flat():
    # no outliers in activations or weights: nothing to gain, so it is not applied
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=generator)
    weight = torch.randn(8, 16, generator=generator)
    assert choose_alpha(x, x.abs().amax(0), [weight], ALPHA_GRID) is None
    x[:, 4] *= 80
    assert choose_alpha(x, x.abs().amax(0), [torch.randn(8, 16, generator=generator)], ALPHA_GRID) is not None


def test_smoothing_scale_is_one_for_dead_channels():
    scale = smoothing_scale(torch.tensor([0.0, 4.0]), torch.tensor([1.0, 0.0]), 0.5)
    assert scale.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name", ["mlp", "conv_bn_relu", "residual", "inverted_residual", "cat_pool"])
def test_never_lowers_sqnr_on_cnn_zoo(name):
    # where smoothing does nothing useful it does nothing (same converted numbers, or better)
    model, example, calibration = ZOO[name]()
    data = [example[0]] + [c[0] if isinstance(c, tuple) else c for c in calibration]
    plain = fxq.convert_fx(_prepared(model, None, data))
    smoothed = fxq.convert_fx(_prepared(model, fxq.SmoothQuant(), data))
    reference = model(*example)
    assert sqnr(reference, smoothed(*example)) >= sqnr(reference, plain(*example)) - 1e-6
