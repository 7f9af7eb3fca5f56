"""fxq.quantize_with_budget: the fewest float layers that keep the metric within the budget, and why."""
import pytest
import torch
from torch import nn

import fxq
import fxq.nn.fused

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _model_with_one_fragile_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    with torch.no_grad():
        model[0].weight[0] *= 300  # one huge output channel: layer "2" gets an input int8 cannot resolve
    return model


def _setup():
    model = _model_with_one_fragile_layer()
    generator = torch.Generator().manual_seed(1)
    data = [torch.randn(64, 16, generator=generator) for _ in range(3)]
    expected = model(data[0])
    metric = lambda m: -float((m(data[0]) - expected).pow(2).mean() / expected.pow(2).mean())  # noqa: E731
    return model, data, metric


def test_keeps_the_fewest_layers_float_within_budget():
    model, data, metric = _setup()
    all_int8 = fxq.quantize_with_budget(model, data, metric, max_drop=10.0)
    assert all_int8.float_layers == [] and all_int8.rows == []
    budget = 0.5 * (all_int8.float_metric - all_int8.metric)  # half of what all-int8 loses
    tight = fxq.quantize_with_budget(model, data, metric, max_drop=budget)
    assert tight.float_metric - tight.metric <= budget
    assert len(tight.float_layers) >= 1
    ranked = [row[0] for row in tight.rows]
    assert tight.float_layers == ranked[:len(tight.float_layers)]  # most sensitive first
    for layer in tight.float_layers:
        assert type(tight.model.get_submodule(layer)) in (nn.Linear, fxq.nn.fused.LinearReLU)  # left float
        assert f"| {layer} |" in tight.table()
    fewer = fxq.quantize_with_budget(model, data, metric, max_drop=10.0,
                                     qconfig_mapping=_mapping_with_float(tight.float_layers[:-1]))
    assert fewer.float_metric - fewer.metric > budget  # one float layer fewer would not have met the budget


def _mapping_with_float(layers):
    mapping = fxq.get_default_qconfig_mapping()
    for layer in layers:
        mapping.set_module_name(layer, None)
    return mapping


def test_user_model_not_mutated():
    model, data, metric = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxq.quantize_with_budget(model, data, metric, max_drop=0.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
