"""The transformer mapping's static linears switch to per-token activations where calibration shows that one scale
cannot hold their rows (fxq/observers/row_checked.py, passes/per_token_fallback.py)."""
import torch
from torch import nn

import fxq
from conftest import sqnr
from fxq.nn import plain
from fxq.observers.row_checked import RowCheckedHistogramObserver, per_token_wins, static_cost_db


class Causal(nn.Module):
    """A causal sum scaled by position: row t adds the values up to t and divides by t, so the first rows are
    whole value vectors and the last ones far smaller, an exaggerated causal attention context; then an output
    projection."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.value, self.out = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        v = self.value(x)
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).reshape(1, -1, 1)
        return self.out(v.cumsum(1) / steps ** 2)


def _convert(model, batches, mapping):
    prepared = fxq.prepare_fx(model, mapping, batches[0])
    for batch in batches:
        prepared(*batch)
    return prepared, fxq.convert_fx(prepared)


def _batches(count=4):
    return [(torch.randn(2, 64, 32),) for _ in range(count)]


def test_rows_of_very_different_size_run_per_token_and_gain_for_it():
    model, batches, held_out = Causal().eval(), _batches(), torch.randn(2, 64, 32)
    prepared, quantized = _convert(model, batches, fxq.get_transformer_qconfig_mapping())
    costs = {node.args[0].name: static_cost_db(getattr(prepared, node.target)) for node in prepared.graph.nodes
             if node.op == "call_module" and isinstance(getattr(prepared, node.target), RowCheckedHistogramObserver)}
    assert costs["truediv"] >= 1.5 > costs["x"]  # the position-scaled rows, not the model input
    kinds = {type(m) for m in quantized.modules() if type(m).__module__.startswith("fxq")}
    assert plain.DynamicLinear in kinds and plain.Linear in kinds  # value stays static, out goes per token
    again = {type(m) for m in fxq.convert_fx(prepared).modules() if type(m).__module__.startswith("fxq")}
    assert again == kinds  # a second convert of the same prepared model: the same choice
    static = fxq.prepare_fx(model, fxq.get_transformer_qconfig_mapping(), batches[0])
    for batch in batches:
        static(*batch)
    for observer in static.modules():
        if isinstance(observer, RowCheckedHistogramObserver):
            observer.call_rows = []  # no rows kept: the check cannot switch anything
    static = fxq.convert_fx(static)
    assert plain.DynamicLinear not in {type(m) for m in static.modules()}
    reference = model(held_out)
    assert sqnr(reference, quantized(held_out)) > sqnr(reference, static(held_out)) + 3


def test_rows_of_one_size_stay_static():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)).eval()
    _, quantized = _convert(model, [(torch.randn(64, 32),) for _ in range(4)], fxq.get_transformer_qconfig_mapping())
    assert sum(isinstance(m, plain.Linear) for m in quantized.modules()) == 2
    assert not any(isinstance(m, plain.DynamicLinear) for m in quantized.modules())


def test_one_call_scores_the_rows_against_their_own_range():
    observer = RowCheckedHistogramObserver(reduce_range=False)
    observer(torch.cat([torch.full((63, 8), 0.01), torch.full((1, 8), 5.0)]))
    assert per_token_wins(observer)
    steady = RowCheckedHistogramObserver(reduce_range=False)
    steady(torch.randn(64, 8))
    assert not per_token_wins(steady)
    assert not per_token_wins(RowCheckedHistogramObserver())  # no data: no opinion


def test_the_observer_keeps_a_bounded_sample_out_of_its_state_dict():
    observer = RowCheckedHistogramObserver()
    for _ in range(40):
        observer(torch.randn(4, 500, 16))
    assert len(observer.call_ranges) == 40 and len(observer.call_rows) == 16
    assert all(rows.shape == (64, 16) for _, rows in observer.call_rows)
    state = observer.state_dict()
    assert set(state) == set(fxq.observers.HistogramObserver().state_dict()) | {"_extra_state"}
    loaded = RowCheckedHistogramObserver()
    loaded.load_state_dict(state)
    assert loaded.call_ranges == observer.call_ranges and static_cost_db(loaded) == static_cost_db(observer)


def test_ranks_gather_the_rows_one_process_keeps():
    """Distributed calibration: each rank's calls (ranges, sampled rows) are gathered in rank order, so the
    per-token choice is the one a single process makes on the same batches."""
    from fxq.observers.row_checked import RowCheckedMerge
    batches = [torch.randn(3, 70, 8) * (1 + i) for i in range(5)]
    single, first, second = (RowCheckedHistogramObserver(reduce_range=False) for _ in range(3))
    for x in batches:
        single(x)
    for x in batches[:3]:
        first(x)
    for x in batches[3:]:
        second(x)
    merged = RowCheckedHistogramObserver(reduce_range=False)
    RowCheckedMerge("obs", merged).set_records([RowCheckedMerge("obs", o).record_part() for o in (first, second)])
    assert merged.call_ranges == single.call_ranges
    assert [i for i, _ in merged.call_rows] == [i for i, _ in single.call_rows]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(merged.call_rows, single.call_rows))
    assert static_cost_db(merged) == static_cost_db(single)


def test_distributed_calibration_of_a_world_of_one_switches_the_same_linears():
    model, batches = Causal().eval(), _batches()
    prepared = fxq.prepare_fx(model, fxq.get_transformer_qconfig_mapping(), batches[0])
    fxq.calibrate(prepared, batches, progress=False, distributed=True)  # no process group: the merge path, alone
    quantized = fxq.convert_fx(prepared)
    assert any(isinstance(m, plain.DynamicLinear) for m in quantized.modules())
    reference = _convert(model, batches, fxq.get_transformer_qconfig_mapping())[1]
    x = torch.randn(2, 64, 32)
    assert torch.equal(quantized(x), reference(x))
