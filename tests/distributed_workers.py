"""What the spawned ranks of tests/test_distributed.py run (a module of its own: spawn imports it in each child).

Every scenario builds the same model and data from fixed seeds, so the test process can compute the
single-process reference itself. A rank writes what it ends with (observer state, converted outputs, errors) to
``out_dir/rank{r}.pt``.
"""
import copy
import os
import socket
import time
import traceback
from datetime import timedelta

import torch
from torch import nn

import fxq
from fxq.debug.distributed import calibrate_on_ranks
from fxq.equalization.observers import InputEqualizationObserver
from fxq.observers import (FixedQParamsObserver, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                           MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver)


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x):
        y = self.conv1(x)
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(y, 1))


class RunningMax(nn.Module):
    """A user observer with its own state and a merge_states method."""

    def __init__(self):
        super().__init__()
        self.register_buffer("peak", torch.tensor(float("-inf")))

    def forward(self, x):
        self.peak = torch.maximum(self.peak, x.detach().abs().max())
        return x

    def calculate_qparams(self):
        return self.peak / 127, torch.tensor(0)

    def merge_states(self, states):
        self.peak = torch.stack([state["peak"] for state in states]).max()


def build_model() -> nn.Module:
    torch.manual_seed(0)
    model = SmallNet().eval()
    with torch.no_grad():
        model.conv1[1].running_mean.uniform_(-0.5, 0.5)
        model.conv1[1].running_var.uniform_(0.5, 2.0)
    return model


def batches(count: int = 7) -> list:
    generator = torch.Generator().manual_seed(1)
    # growing scales: later batches widen every range, so a histogram re-bins when it sees them one by one
    return [torch.randn(3, 3, 6, 6, generator=generator) * (1 + i) + 0.1 * i for i in range(count)]


def bare_observers() -> nn.Module:
    """Observers of every kind fxq ships, side by side on a (N, 4) input."""
    equalization = InputEqualizationObserver()
    equalization.bins, equalization.keep_batches = 32, True
    return nn.ModuleList([
        MinMaxObserver(), PerChannelMinMaxObserver(ch_axis=1), MovingAverageMinMaxObserver(averaging_constant=0.3),
        MovingAveragePerChannelMinMaxObserver(averaging_constant=0.3, ch_axis=1), HistogramObserver(bins=64),
        PlaceholderObserver(dtype=torch.float16), FixedQParamsObserver(scale=1 / 256, zero_point=0),
        equalization, RunningMax()])


def vector_batches(count: int = 7) -> list:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(5, 4, generator=generator) * (1 + i) for i in range(count)]


def run_bare(observers: nn.Module, shard: list) -> int:
    for x in shard:
        for observer in observers:
            observer(x)
    return len(shard)


def qconfig_mapping(kind: str):
    if kind == "histogram":
        return fxq.get_default_qconfig_mapping("x86")
    activation = MovingAverageMinMaxObserver.with_args(averaging_constant=0.25, quant_min=0, quant_max=127)
    weight = fxq.default_per_channel_qconfig.weight
    return fxq.QConfigMapping().set_global(fxq.QConfig(activation=activation, weight=weight))


def prepare(kind: str, equalize: bool = False):
    example = (batches(1)[0],)
    equalization = fxq.QConfigMapping().set_global(fxq.default_equalization_qconfig) if equalize else None
    return fxq.prepare_fx(build_model(), qconfig_mapping(kind), example, _equalization_config=equalization)


def model_result(prepared) -> dict:
    converted = fxq.convert_fx(copy.deepcopy(prepared))
    with torch.no_grad():
        outputs = [converted(x) for x in batches()]
    return {"state": prepared.state_dict(), "outputs": outputs}


def histogram_qparams(prepared) -> dict:
    """{observer name: (scale, zero point)} of every HistogramObserver."""
    return {name: tuple(float(v) for v in module.calculate_qparams()) for name, module in prepared.named_modules()
            if isinstance(module, HistogramObserver)}


def split(items: list, sizes: list) -> list:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [items[start:start + size] for start, size in zip(starts, sizes)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, world: int, port: int, scenarios: list, out_dir: str, sizes: list) -> None:
    """Run ``scenarios`` in order on one process group; after each, save {scenario: result or its error}."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world, timeout=timedelta(seconds=8))
    results = {}
    for scenario in scenarios:
        result = results[scenario] = {}
        try:
            SCENARIOS[scenario](rank, sizes, result)
        except Exception as error:
            result["error"] = f"{type(error).__name__}: {error}"
            result["traceback"] = traceback.format_exc()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def merge_everything(rank: int, sizes: list, result: dict) -> None:
    for kind in ("histogram", "moving_average"):
        prepared = prepare(kind)
        summary = fxq.calibrate(prepared, split(batches(), sizes)[rank], progress=False)  # a group is initialised
        result[kind] = model_result(prepared)
        result[f"{kind}_summary"] = (summary.batches, summary.ranks, summary.without_data)
    for kind in ("histogram", "moving_average"):
        prepared = prepare(kind, equalize=True)
        fxq.calibrate(prepared, split(batches(), sizes)[rank], progress=False, distributed=True)
        result[f"equalized_{kind}"] = model_result(prepared)
    prepared = prepare("histogram")
    fxq.calibrate(prepared, split(batches(), sizes)[rank], progress=False, exact_histograms=False)
    result["one_pass_histogram"] = {**model_result(prepared), "qparams": histogram_qparams(prepared)}
    observers = bare_observers()
    calibrate_on_ranks(observers, split(vector_batches(), sizes)[rank], lambda shard: run_bare(observers, shard))
    result["bare"] = observers.state_dict()
    if len(sizes) < 3:
        return  # sensitivity once, on 3 ranks: 4 trials split unevenly
    data = batches()
    score = lambda model: -float(sum((model(x) - build_model()(x)).pow(2).mean() for x in data[:2]))  # noqa: E731
    ranking = fxq.sensitivity(build_model(), qconfig_mapping("histogram"), data[:3], score, distributed=True)
    result["sensitivity"] = [(entry.layer, entry.metric, entry.change) for entry in ranking]


def one_rank_raises(rank: int, sizes: list, result: dict) -> None:
    shard = split(batches(), sizes)[rank]
    if rank == 1:
        shard[-1] = torch.full_like(shard[-1], float("nan"))  # the histogram observer refuses NaN
    fxq.calibrate(prepare("histogram"), shard, progress=False)


def one_rank_dies(rank: int, sizes: list, result: dict) -> None:
    if rank == 1:
        os._exit(3)  # no exception, no goodbye: only the process group's timeout can tell the others
    start = time.monotonic()
    try:
        fxq.calibrate(prepare("histogram"), split(batches(), sizes)[rank], progress=False)
    finally:
        result["seconds"] = time.monotonic() - start


SCENARIOS = {"merge_everything": merge_everything, "one_rank_raises": one_rank_raises, "one_rank_dies": one_rank_dies}
