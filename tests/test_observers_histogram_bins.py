"""fxq.observers.histogram_bins against the torch operations it stands in for, bit for bit.

histc against torch.histc: random data, values on and one ulp beside every bin edge, spans down to
subnormal bin widths and up to 1e38, bin counts that are not powers of two, non-contiguous layouts,
several chunks, and torch.histc's float32 count limit. rebin against torch.ao's upsample-and-bucketize
re-binning, ties of sub-bin centres with new edges included. The observer-level comparison over many
batches with growing ranges lives in tests/test_observers.py.
"""
import random
import threading

import pytest
import torch

from conftest import torch_ao
from fxq.observers import histogram_bins as hb

INF = torch.tensor(float("inf"))


def _float32(value) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def _edge_values(low: float, high: float, bins: int, count: int, generator) -> torch.Tensor:
    """Values drawn from torch.histc's own bin edges and their float32 neighbours on both sides."""
    edges = torch.linspace(low, high, bins + 1)
    picked = edges[torch.randint(0, bins + 1, (count,), generator=generator)]
    values = torch.cat([picked, torch.nextafter(picked, INF), torch.nextafter(picked, -INF)])
    return values.clamp(low, high)


def _random_range(rng: random.Random) -> tuple:
    """A float32 (low, high) with low < high, magnitudes from 1e-40 to 1e30 and relative spans down to one ulp."""
    low = _float32(rng.uniform(-10, 10) * 10 ** rng.randint(-40, 30))
    span = abs(low) * 10 ** rng.randint(-7, 4) * rng.random() + 1e-44
    high = _float32(low + span)
    if not high > low:
        high = float(torch.nextafter(torch.tensor(low), INF))
    return low, high


def _assert_same_as_torch(values: torch.Tensor, bins: int, low: float, high: float) -> None:
    expected = torch.histc(values, bins, min=low, max=high)
    found = hb.histc(values, bins, low, high)
    assert found.dtype == expected.dtype and torch.equal(found, expected), (bins, low, high)


@pytest.mark.parametrize("seed", range(8))
def test_histc_matches_torch_on_bin_edges_and_their_neighbours(seed):
    # The bin of a value next to an edge depends on float32 rounding; the formula must round as histc does.
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(60):
        bins = rng.choice([2048, 2048, 256, 1000, 100, 7, 3, 1])
        low, high = _random_range(rng)
        values = _edge_values(low, high, bins, 3000, generator)
        values = torch.cat([values, torch.tensor([low, high])])
        _assert_same_as_torch(values, bins, low, high)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(50_000, generator=g),
        lambda g: torch.randn(50_000, generator=g).relu(),  # half the values in bin 0
        lambda g: torch.rand(50_000, generator=g) ** 8 * 1e3,  # skewed
        lambda g: torch.randint(-3, 4, (50_000,), generator=g).float(),  # few distinct values, on edges
        lambda g: torch.randn(50_000, generator=g) * 1e37,  # (v - low) * bins near float32's limit
        lambda g: 1.0 + torch.randn(50_000, generator=g) * 1e-7,  # a span of a few ulps
        lambda g: torch.randn(50_000, generator=g) * 1e-35,  # bin widths near the smallest normal float
        lambda g: torch.randn(50_000, generator=g) * 1e-38,  # subnormal bin widths (and values)
    ],
    ids=["normal", "relu", "skewed", "integers", "huge", "few-ulps", "tiny-width", "subnormal-width"],
)
@pytest.mark.parametrize("bins", [2048, 1000, 64])
def test_histc_matches_torch_on_whole_tensors(make, bins):
    values = make(torch.Generator().manual_seed(bins))
    low, high = (value.item() for value in torch.aminmax(values))
    _assert_same_as_torch(values, bins, low, high)
    # A wider range than the data, as after the observer's range has grown.
    _assert_same_as_torch(values, bins, low * 1.5 - 1.0 if low < 0 else low - 1.0, high * 2.0 + 1.0)


def test_histc_reads_non_contiguous_and_channels_last_tensors():
    x = torch.randn(4, 16, 20, 20)
    low, high = (value.item() for value in torch.aminmax(x))
    for view in (x.to(memory_format=torch.channels_last), x.transpose(1, 3), x[:, ::2], x.permute(2, 0, 3, 1)):
        assert not view.is_contiguous()
        _assert_same_as_torch(view, 2048, low, high)


def test_histc_counts_chunk_by_chunk(monkeypatch):
    monkeypatch.setattr(hb, "_CHUNK", 5000)  # 12 chunks, the last one short
    values = torch.randn(57_123)
    low, high = (value.item() for value in torch.aminmax(values))
    _assert_same_as_torch(values, 2048, low, high)


def test_histc_scratch_made_under_inference_mode_serves_outside_it(monkeypatch):
    # Users calibrate under torch.inference_mode(); the reused scratch must stay writable after it.
    monkeypatch.setattr(hb, "_scratch", threading.local())
    with torch.inference_mode():
        inside = torch.randn(10_000)
        _assert_same_as_torch(inside, 2048, -6.0, 6.0)
    _assert_same_as_torch(torch.randn(20_000), 2048, -6.0, 6.0)


def test_histc_leaves_what_it_cannot_reproduce_to_torch():
    # Small, float64, float16 and one-value inputs, and a range that is not float32: torch.histc itself.
    for values, low, high in [
        (torch.randn(100), -5.0, 5.0),
        (torch.randn(10_000, dtype=torch.float64), -6.0, 6.0),
        (torch.randn(10_000).half(), -6.0, 6.0),
        (torch.full((10_000,), 2.5), 2.5, 2.5),
        (torch.randn(10_000), -6.0, 6.1),
    ]:
        assert hb._bin_divisor(values, 2048, low, high) is None
        _assert_same_as_torch(values, 2048, low, high)


def test_histc_keeps_torch_float32_count_saturation():
    # torch.histc counts in float32: a bin past 2**24 values stops at 2**24. The fast count must not "fix" that.
    values = torch.zeros(2**24 + 10)
    values[:5] = 1.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread's count saturates at 2**24 exactly (several threads add their partials)
    try:
        found = hb.histc(values, 2048, 0.0, 1.0)
        assert found[0] == 2**24 and torch.equal(found, torch.histc(values, 2048, min=0.0, max=1.0))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(hb.histc(values, 2048, 0.0, 1.0), torch.histc(values, 2048, min=0.0, max=1.0))


def test_float32_difference_rounds_once():
    rng = random.Random(0)
    for _ in range(2000):
        high = _float32(rng.uniform(-1, 1) * 10 ** rng.randint(-38, 38))
        low = _float32(rng.uniform(-1, 1) * 10 ** rng.randint(-38, 38))
        expected = torch.tensor(high) - torch.tensor(low)
        if torch.isfinite(expected):
            assert hb._float32_difference(high, low) == float(expected), (high, low)


# ---------------------------------------------------------------- rebin


def _ao_rebin(histogram, old_min, old_max, new_min, new_max):
    observer = torch_ao().quantization.HistogramObserver(bins=histogram.numel())
    return observer._upscale_histogram(histogram, old_min, old_max, torch.tensor(new_min), torch.tensor(new_max))


def _assert_rebin_matches_torch_ao(histogram, old_min, old_max, new_min, new_max):
    old_min, old_max = torch.tensor(old_min), torch.tensor(old_max)
    found = hb.rebin(histogram, old_min, old_max, new_min, new_max, rate=16)
    expected = _ao_rebin(histogram, old_min, old_max, new_min, new_max)
    assert torch.equal(found, expected), (float(old_min), float(old_max), new_min, new_max)


@pytest.mark.parametrize("seed", range(6))
def test_rebin_matches_torch_ao_on_random_ranges(seed):
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    for _ in range(15):
        bins = rng.choice([2048, 2048, 256, 100, 3])
        old_min, old_max = _random_range(rng)
        grow_low, grow_high = rng.choice([0.0, rng.random() * 3]), rng.choice([0.0, rng.random() * 3])
        span = old_max - old_min
        new_min, new_max = _float32(old_min - grow_low * span), _float32(old_max + grow_high * span)
        # Fractional counts, as a histogram has after earlier re-binning.
        histogram = (torch.rand(bins, generator=generator) * 1000).round() / 16
        _assert_rebin_matches_torch_ao(histogram, old_min, old_max, new_min, new_max)


def test_rebin_matches_torch_ao_where_sub_bin_centres_fall_on_new_edges():
    # Old [0, 2048] in 2048 bins: centres at (m + 0.5) / 16. New [-2048 + 1/32, 2048 + 1/32]: edges 2 apart,
    # every new edge from the middle on sits exactly on a centre.
    histogram = torch.arange(2048, dtype=torch.float32) % 17
    _assert_rebin_matches_torch_ao(histogram, 0.0, 2048.0, -2048 + 1 / 32, 2048 + 1 / 32)
    _assert_rebin_matches_torch_ao(histogram, 0.0, 2048.0, 0.0, 4096.0)
    _assert_rebin_matches_torch_ao(histogram, 0.0, 2048.0, -1e30, 1e30)  # everything in the middle bins


def test_rebin_matches_torch_ao_when_centres_repeat():
    # A span of a few ulps: thousands of sub-bin centres round to the same float (or step back).
    histogram = torch.rand(2048, generator=torch.Generator().manual_seed(3)) * 100
    one = torch.tensor(1.0)
    _assert_rebin_matches_torch_ao(histogram, 1.0, float(torch.nextafter(one, INF) + 2e-7), 1.0 - 3e-7, 1.0 + 5e-7)


def test_bins_of_sorted_is_bucketize_and_declines_unsorted_input():
    generator = torch.Generator().manual_seed(0)
    centres = torch.sort(torch.randint(0, 50, (3000,), generator=generator).float() / 4).values
    edges = torch.arange(0, 13, 0.25)  # many centres equal to an edge
    expected = torch.bucketize(centres, edges, right=True) - 1
    assert torch.equal(hb._bins_of_sorted(centres, edges), expected)
    assert hb._bins_of_sorted(centres.flip(0), edges) is None
    assert hb._bins_of_sorted(centres, edges.flip(0)) is None
