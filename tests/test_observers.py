"""fxq.observers against torch.ao's same-named observers: same data, same kwargs, same scale and zero point.

Also the lifecycle (state_dict, deepcopy, pickling of with_args constructors), has_data, the
defaults, and the argument checks. The HistogramObserver's vectorised range search has its own
file-level cases below, compared with torch.ao's loop on many seeds.
"""
import copy
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxq.observers as obs
from conftest import torch_ao
from fxq.observers.histogram_search import quantization_errors, search_range

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

# ---------------------------------------------------------------- data


def _batches(name: str, shape=(4, 3, 5)) -> list:
    """Three calibration batches of one kind; later batches widen or shift the range."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    randn = lambda scale=1.0, shift=0.0: torch.randn(shape, generator=g) * scale + shift  # noqa: E731
    return {
        "random": lambda: [randn(), randn(2.0, 0.5), randn(0.5)],
        "constant": lambda: [torch.full(shape, 3.0)] * 3,
        "zeros": lambda: [torch.zeros(shape)] * 3,
        "huge": lambda: [randn(1e30), randn(1e29), torch.full(shape, -1e30)],
        "tiny": lambda: [1.0 + randn(1e-7), 1.0 + randn(1e-7), 1.0 + randn(1e-8)],
        "negative": lambda: [-randn().abs() - 1, -randn(3.0).abs() - 0.5, -randn().abs()],
        "positive": lambda: [randn().abs() + 2, randn(4.0).abs() + 1, randn().abs()],
        "float64": lambda: [randn().double(), randn(3.0).double() + 1, randn().double() * 1e-3],
    }[name]()


DATA = ["random", "constant", "zeros", "huge", "tiny", "negative", "positive", "float64"]

PER_TENSOR_KWARGS = [
    {},
    {"dtype": torch.qint8},
    {"qscheme": torch.per_tensor_symmetric},
    {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric},
    {"reduce_range": True},
    {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric, "reduce_range": True},
    {"quant_min": 0, "quant_max": 15},
    {"quant_min": 0, "quant_max": 127, "qscheme": torch.per_tensor_symmetric},
    {"dtype": torch.qint8, "quant_min": -127, "quant_max": 127, "eps": 2**-12, "reduce_range": True},
]


def _ao_class(name: str):
    return getattr(torch_ao().quantization, name)


def _calibrate(observer, batches):
    for batch in batches:
        assert observer(batch) is batch  # observers pass their input through untouched
    return observer


def assert_same_qparams(ours, theirs):
    """Identical scale and zero point: values, dtypes and shapes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (scale, zero_point), (ao_scale, ao_zero_point) = ours.calculate_qparams(), theirs.calculate_qparams()
    assert scale.dtype == ao_scale.dtype and zero_point.dtype == ao_zero_point.dtype
    assert torch.equal(scale, ao_scale), (scale, ao_scale)
    assert torch.equal(zero_point, ao_zero_point), (zero_point, ao_zero_point)


def _both(name: str, kwargs: dict, batches: list):
    ours = _calibrate(getattr(obs, name)(**kwargs), batches)
    theirs = _calibrate(_ao_class(name)(**kwargs), batches)
    return ours, theirs


# ---------------------------------------------------------------- per-tensor observers


@pytest.mark.parametrize("kwargs", PER_TENSOR_KWARGS, ids=str)
@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("name", ["MinMaxObserver", "MovingAverageMinMaxObserver"])
def test_min_max_observers_match_torch_ao(name, data, kwargs):
    ours, theirs = _both(name, kwargs, _batches(data))
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert_same_qparams(ours, theirs)


@pytest.mark.parametrize("constant", [0.01, 0.5, 1.0])
def test_moving_average_constant_matches_torch_ao(constant):
    kwargs = {"averaging_constant": constant, "is_dynamic": constant == 1.0}
    ours, theirs = _both("MovingAverageMinMaxObserver", kwargs, _batches("random"))
    assert torch.equal(ours.max_val, theirs.max_val)
    assert_same_qparams(ours, theirs)


# torch.ao's range search takes ~1 s on the huge data set, so that one gets a few representative kwargs.
HISTOGRAM_CASES = [(data, kwargs) for data in DATA for kwargs in PER_TENSOR_KWARGS if data != "huge"] + [
    ("huge", PER_TENSOR_KWARGS[index]) for index in (0, 3, 8)
]


@pytest.mark.parametrize("data, kwargs", HISTOGRAM_CASES, ids=str)
def test_histogram_observer_matches_torch_ao(data, kwargs):
    bins = 2048 if data == "random" else 128  # torch.ao's own search is slow; the full size once per kwargs
    ours, theirs = _both("HistogramObserver", {"bins": bins, **kwargs}, _batches(data, shape=(64, 8)))
    assert torch.equal(ours.histogram, theirs.histogram)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert_same_qparams(ours, theirs)


def _growing_batches(kind: str, count: int = 24) -> list:
    """Batches large enough for the fast counting path (>= 4096 values) whose range grows, shrinks and shifts."""
    g = torch.Generator().manual_seed(sum(map(ord, kind)))
    scales = (torch.rand(count, generator=g) * 3).exp()  # 1 .. 20, up and down from batch to batch
    shifts = torch.randn(count, generator=g)
    make = {
        "drift": lambda k: torch.randn(8, 16, 40, generator=g) * scales[k] + shifts[k],
        "relu": lambda k: (torch.randn(8, 16, 40, generator=g) * scales[k]).relu(),
        "outliers": lambda k: torch.cat([torch.randn(5000, generator=g), torch.tensor([scales[k] ** 3 * shifts[k]])]),
        "channels_last": lambda k: (torch.randn(2, 8, 24, 24, generator=g) * scales[k]).to(
            memory_format=torch.channels_last
        ),
    }[kind]
    return [make(k) for k in range(count)]


@pytest.mark.parametrize("bins", [2048, 1000, 64])
@pytest.mark.parametrize("kind", ["drift", "relu", "outliers", "channels_last"])
def test_histogram_matches_torch_ao_over_many_growing_batches(kind, bins):
    """Many re-binnings in a row: the histogram stays bit-identical, so the search sees what torch.ao's sees."""
    ours, theirs = _both("HistogramObserver", {"bins": bins, "reduce_range": True}, _growing_batches(kind))
    assert torch.equal(ours.histogram, theirs.histogram)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    if bins <= 1000:  # torch.ao's own search loop is slow at 2048 bins; the search is compared on its own above
        assert_same_qparams(ours, theirs)


def _random_histogram_data(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(20, 3000, (1,), generator=g))
    kinds = [
        lambda: torch.randn(n, generator=g),
        lambda: torch.rand(n, generator=g) ** 3 * 10,  # skewed
        lambda: torch.cat([torch.randn(n, generator=g), torch.tensor([40.0, -25.0])]),  # outliers
        lambda: torch.randint(0, 5, (n,), generator=g).float(),  # few distinct values
        lambda: -torch.rand(n, generator=g).exp(),
        lambda: torch.randn(n, generator=g) * torch.rand(n, generator=g) * 1e3,
    ]
    return kinds[seed % len(kinds)]()


@pytest.mark.parametrize("seed", range(40))
def test_histogram_range_search_matches_torch_ao_loop(seed):
    """The vectorised search picks the same clipped range as torch.ao's Python loop, bit for bit."""
    x = _random_histogram_data(seed)
    bins = [2048, 256, 64, 17, 3][seed % 5]
    theirs = _calibrate(_ao_class("HistogramObserver")(bins=bins), [x, x * 1.7 + 0.3])
    expected = theirs._non_linear_param_search()
    found = search_range(theirs.histogram, theirs.min_val, theirs.max_val, theirs.dst_nbins)
    assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1])


@pytest.mark.parametrize("seed", range(6))
def test_histogram_candidate_errors_are_bit_identical_to_torch_ao(seed):
    """Batched scoring of candidate ranges gives exactly torch.ao's per-range float32 error."""
    x = _random_histogram_data(seed)
    bins = [2048, 256, 64][seed % 3]
    theirs = _calibrate(_ao_class("HistogramObserver")(bins=bins), [x, x * 1.3 - 0.2])
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, bins, (20,), generator=g), torch.randint(0, bins, (20,), generator=g)
    starts, ends = torch.minimum(a, b), torch.maximum(a, b)
    errors = quantization_errors(theirs.histogram, theirs.min_val, theirs.max_val, theirs.dst_nbins, starts, ends)
    expected = [theirs._compute_quantization_error(int(s), int(e)) for s, e in zip(starts, ends)]
    assert errors.tolist() == expected


def test_histogram_search_matches_torch_ao_on_a_long_walk():
    # Two spikes make torch.ao walk ~50,000 steps in Python; the vectorised search must end where it does.
    # (How much faster it is belongs to tools/bench.py, not to a timed unit test.)
    x = torch.cat([torch.zeros(1000), torch.ones(1000)])
    ours, theirs = _both("HistogramObserver", {}, [x])
    assert_same_qparams(ours, theirs)


@settings(max_examples=12, deadline=None)
@given(
    values=st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=100),
    scale=st.floats(1e-3, 10.0),
    dtype=st.sampled_from([torch.quint8, torch.qint8]),
    symmetric=st.booleans(),
)
def test_histogram_property_matches_torch_ao(values, scale, dtype, symmetric):
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    x = torch.tensor(values)
    ours, theirs = _both("HistogramObserver", {"bins": 64, "dtype": dtype, "qscheme": qscheme}, [x, x * scale])
    assert torch.equal(ours.histogram, theirs.histogram)
    assert_same_qparams(ours, theirs)


def test_histogram_ignores_infinities_like_torch_ao():
    x = torch.tensor([1.0, float("inf"), -2.0, float("-inf"), 0.5])
    ours, theirs = _both("HistogramObserver", {"bins": 64}, [x, torch.tensor([float("inf")]), x * 3])
    assert torch.equal(ours.histogram, theirs.histogram)
    assert_same_qparams(ours, theirs)


def test_histogram_rejects_nan_with_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        obs.HistogramObserver()(torch.tensor([1.0, float("nan")]))
    observer = obs.HistogramObserver()
    observer(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):  # also once a range is recorded and the rest lies within it
        observer(torch.tensor([1.0, float("nan")]))


def test_small_batches_within_and_beyond_the_range_match_torch_ao():
    # Small batches are counted against the recorded range first; those that do not fit take the full path.
    g = torch.Generator().manual_seed(0)
    batches = [torch.full((7,), 0.5), torch.rand(30, generator=g)]  # one value only, then a real range
    batches += [torch.rand(int(n), generator=g) * 0.9 for n in torch.randint(1, 300, (20,), generator=g)]
    batches += [torch.tensor([0.0, 1.0]), torch.tensor([0.2, 1.0 + 2**-23]), torch.tensor([-3.0, 0.1]),
                torch.tensor([0.3, float("inf")]), torch.rand(5, 40, generator=g).t()]
    ours, theirs = _both("HistogramObserver", {"bins": 256}, batches)
    assert torch.equal(ours.histogram, theirs.histogram)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert_same_qparams(ours, theirs)


# ---------------------------------------------------------------- per-channel observers

PER_CHANNEL_KWARGS = [
    {},
    {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
    {"qscheme": torch.per_channel_symmetric, "quant_min": 0, "quant_max": 255},
    {"dtype": torch.qint8, "reduce_range": True},
    {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "quant_min": -127, "quant_max": 127},
    {"qscheme": torch.per_channel_affine_float_qparams},
]


@pytest.mark.parametrize("kwargs", PER_CHANNEL_KWARGS, ids=str)
@pytest.mark.parametrize("ch_axis", [0, 1, -1])
@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("name", ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"])
def test_per_channel_observers_match_torch_ao(name, data, ch_axis, kwargs):
    ours, theirs = _both(name, {"ch_axis": ch_axis, **kwargs}, _batches(data))
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert_same_qparams(ours, theirs)


def test_per_channel_rejects_a_changing_channel_count():
    observer = _calibrate(obs.PerChannelMinMaxObserver(ch_axis=1), [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="saw 4 channels, but earlier inputs had 3"):
        observer(torch.zeros(2, 4))


# ---------------------------------------------------------------- observers that record nothing


def test_fixed_qparams_and_placeholders_match_torch_ao():
    for name in ["default_fixed_qparams_range_0to1_observer", "default_fixed_qparams_range_neg1to1_observer"]:
        ours, theirs = getattr(obs, name)(), getattr(torch_ao().quantization, name)()
        assert_same_qparams(_calibrate(ours, _batches("random")), theirs)
        assert ours.has_data()
    placeholder = obs.default_dynamic_quant_observer()
    assert (placeholder.dtype, placeholder.is_dynamic, placeholder.quant_max) == (torch.quint8, True, 255)
    with pytest.raises(RuntimeError, match="no qparams"):
        placeholder.calculate_qparams()
    with pytest.raises(RuntimeError, match="no qparams"):
        obs.NoopObserver().calculate_qparams()
    assert obs.NoopObserver().dtype == torch.float16


# ---------------------------------------------------------------- defaults

DEFAULTS = [
    "default_observer",
    "default_weight_observer",
    "default_per_channel_weight_observer",
    "default_histogram_observer",
    "default_placeholder_observer",
    "default_dynamic_quant_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "weight_observer_range_neg_127_to_127",
    "per_channel_weight_observer_range_neg_127_to_127",
    "default_fixed_qparams_range_0to1_observer",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_affine_fixed_qparams_observer",
]


@pytest.mark.parametrize("name", DEFAULTS)
def test_defaults_have_torch_ao_settings_and_numbers(name):
    ours, theirs = getattr(obs, name)(), getattr(torch_ao().quantization.observer, name)()
    assert type(ours).__name__ == type(theirs).__name__
    for attribute in ["dtype", "qscheme", "quant_min", "quant_max", "is_dynamic", "ch_axis", "bins"]:
        assert getattr(ours, attribute, None) == getattr(theirs, attribute, None), attribute
    if isinstance(getattr(ours, "eps", None), torch.Tensor):
        assert torch.equal(ours.eps, theirs.eps)
    if ours.has_data() or hasattr(ours, "min_val"):
        batches = [torch.randn(6, 5), torch.randn(6, 5) * 3]
        assert_same_qparams(_calibrate(ours, batches), _calibrate(theirs, batches))


# ---------------------------------------------------------------- has_data, repr, defaults without data


@pytest.mark.parametrize("name", ["MinMaxObserver", "PerChannelMinMaxObserver", "HistogramObserver"])
def test_has_data_and_the_no_data_default(name):
    ours, theirs = getattr(obs, name)(), _ao_class(name)()
    assert not ours.has_data() and "no data" in repr(ours)
    with pytest.warns(UserWarning, match="has seen no data"):
        ours.calculate_qparams()
    assert_same_qparams(ours, theirs)  # (1.0, 0), like torch.ao
    ours(torch.tensor([]))
    assert not ours.has_data()
    ours(torch.tensor([[1.0, -2.0]]))
    assert ours.has_data() and "min_val=" in repr(ours)


def test_observer_qparams_as_python():
    observer = _calibrate(obs.MinMaxObserver(), [torch.tensor([-1.0, 3.0])])
    scale, zero_point = obs.observer_qparams_as_python(observer)
    assert (type(scale), type(zero_point)) == (float, int)
    assert scale == pytest.approx(4.0 / 255.0) and zero_point == 64
    with pytest.raises(ValueError, match="per-tensor"):
        obs.observer_qparams_as_python(_calibrate(obs.PerChannelMinMaxObserver(), [torch.randn(3, 2)]))


# ---------------------------------------------------------------- state_dict, deepcopy


@pytest.mark.parametrize(
    "ctor",
    [
        obs.MinMaxObserver,
        obs.MovingAverageMinMaxObserver,
        obs.PerChannelMinMaxObserver.with_args(ch_axis=1),
        obs.MovingAveragePerChannelMinMaxObserver,
        obs.HistogramObserver.with_args(bins=256),
    ],
    ids=repr,
)
def test_state_dict_round_trip_and_deepcopy(ctor):
    calibrated = _calibrate(ctor(), _batches("random"))
    fresh = ctor()
    fresh.load_state_dict(calibrated.state_dict())
    assert_same_qparams(fresh, calibrated)
    copied = copy.deepcopy(calibrated)
    assert_same_qparams(copied, calibrated)
    max_before = calibrated.max_val.clone()
    copied(torch.full((4, 3, 5), 100.0))  # the copy calibrates on its own
    assert bool((copied.max_val > max_before).all()) and torch.equal(calibrated.max_val, max_before)


@pytest.mark.parametrize("name", ["PerChannelMinMaxObserver", "HistogramObserver", "MinMaxObserver"])
def test_loads_torch_ao_state_dicts(name):
    theirs = _calibrate(_ao_class(name)(), _batches("random"))
    ours = getattr(obs, name)()
    ours.load_state_dict(theirs.state_dict())
    assert_same_qparams(ours, theirs)


def test_histogram_state_dict_with_other_bins_says_how_to_fix():
    calibrated = _calibrate(obs.HistogramObserver(bins=64), _batches("random"))
    with pytest.raises(RuntimeError, match=r"with_args\(bins=64\)"):
        obs.HistogramObserver(bins=128).load_state_dict(calibrated.state_dict())


# ---------------------------------------------------------------- with_args constructors


def test_with_args_chains_prints_and_overrides():
    ctor = obs.MinMaxObserver.with_args(dtype=torch.qint8).with_args(qscheme=torch.per_tensor_symmetric)
    assert repr(ctor) == "MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)"
    assert ctor.observer_class is obs.MinMaxObserver
    assert ctor.kwargs == {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}
    first, second = ctor(), ctor()
    assert first is not second and first.min_val is not second.min_val
    assert (first.dtype, first.qscheme) == (torch.qint8, torch.per_tensor_symmetric)
    assert ctor(dtype=torch.quint8).dtype == torch.quint8  # call-time overrides win
    assert ctor.with_args(dtype=torch.quint8)().dtype == torch.quint8


def test_with_args_constructors_pickle_deepcopy_and_compare():
    ctor = obs.HistogramObserver.with_args(reduce_range=True, bins=512)
    for clone in (pickle.loads(pickle.dumps(ctor)), copy.deepcopy(ctor)):
        assert clone == ctor and hash(clone) == hash(ctor)
        assert clone().bins == 512 and clone().quant_max == 127
    assert ctor != obs.HistogramObserver.with_args(reduce_range=False, bins=512)
    assert ctor != obs.MinMaxObserver.with_args(reduce_range=True)
    assert obs.constructor_parts(ctor) == (obs.HistogramObserver, {"reduce_range": True, "bins": 512})
    assert obs.constructor_parts(obs.MinMaxObserver) == (obs.MinMaxObserver, {})


def test_with_args_rejects_unknown_keywords_early():
    with pytest.raises(TypeError, match="unknown keyword.*reduce_rang.*accepts: .*reduce_range"):
        obs.MinMaxObserver.with_args(reduce_rang=True)


def test_with_callable_args_are_called_per_construction():
    calls = []
    ctor = obs.MinMaxObserver.with_callable_args(eps=lambda: calls.append(1) or 0.5).with_args(dtype=torch.qint8)
    observer = ctor()
    assert float(observer.eps) == 0.5 and observer.dtype == torch.qint8 and len(calls) == 1
    ctor()
    assert len(calls) == 2


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: obs.MinMaxObserver(dtype=torch.float32), r"dtype=torch.float32.*one of .*torch.quint8"),
        (lambda: obs.MinMaxObserver(qscheme=torch.per_channel_affine), r"qscheme=torch.per_channel_affine.*one of"),
        (lambda: obs.HistogramObserver(qscheme=torch.per_channel_symmetric), r"qscheme=.*per_tensor_symmetric"),
        (lambda: obs.PerChannelMinMaxObserver(qscheme=torch.per_tensor_affine), r"qscheme=.*per_channel_affine"),
        (lambda: obs.MinMaxObserver(qscheme=torch.per_tensor_symmetric, reduce_range=True), "symmetric quint8"),
        (lambda: obs.MinMaxObserver(quant_min=1, quant_max=127), "must contain 0"),
        (lambda: obs.MinMaxObserver(quant_min=0), "give both quant_min and quant_max"),
        (lambda: obs.MinMaxObserver(dtype=torch.qint8, quant_min=0, quant_max=255), r"does not fit dtype torch.qint8"),
        (lambda: obs.PerChannelMinMaxObserver(is_dynamic=True), "is_dynamic=True"),
        (lambda: obs.HistogramObserver(is_dynamic=True), "is_dynamic=True"),
        (lambda: obs.MovingAverageMinMaxObserver(is_dynamic=True), "averaging_constant=1"),
        (lambda: obs.HistogramObserver(bins=0), "bins must be a positive int"),
    ],
)
def test_bad_arguments_raise_value_errors_that_name_them(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_out_of_range_channel_axis_is_named():
    with pytest.raises(ValueError, match=r"ch_axis=3.*\[-2, 1\]"):
        obs.PerChannelMinMaxObserver(ch_axis=3)(torch.zeros(2, 2))
