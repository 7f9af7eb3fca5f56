"""Distributed calibration and sensitivity on 2 and 3 gloo processes on loopback: every rank ends with observer
state bit-identical to one process on the same data, converted outputs too; uneven and empty shards; a failing
rank fails every rank with its error; a rank that dies makes the others fail by the group's timeout, not hang."""
import functools
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import fxq
from fxq.debug.distributed import calibrate_on_ranks
from fxq.debug.ranks import shard
from fxq.observers import HistogramObserver
from fxq.observers.merge_table import UnmergeableObserverError, observer_mergers

import distributed_workers as workers
from conftest import sqnr

SPAWN_TIMEOUT = 120  # seconds for a whole run; the scenarios themselves take a few


SCENARIOS = {2: ["merge_everything", "one_rank_raises"], 3: ["merge_everything", "one_rank_dies"]}
SIZES = {2: [5, 2], 3: [4, 0, 3]}  # uneven; rank 1 of 3 has no data


@functools.lru_cache(maxsize=None)  # one group per world size serves every test below
def _spawn(world: int) -> list:
    """What each rank saved ({scenario: result}) after running SCENARIOS[world] on one gloo group on loopback."""
    out_dir = Path(tempfile.mkdtemp(prefix="fxq_distributed_"))
    context = multiprocessing.get_context("spawn")
    port = workers.free_port()
    processes = [context.Process(target=workers.worker, args=(rank, world, port, SCENARIOS[world], str(out_dir),
                                                               SIZES[world])) for rank in range(world)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + SPAWN_TIMEOUT
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not hung, f"ranks {hung} still running after {SPAWN_TIMEOUT} s"
    results = [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
    shutil.rmtree(out_dir)
    return results


@functools.lru_cache(maxsize=None)  # deterministic: computed once for both worlds
def _world_of_one(kind: str, equalize: bool = False) -> dict:
    prepared = workers.prepare(kind, equalize)
    fxq.calibrate(prepared, workers.batches(), progress=False, distributed=True)  # no process group: a world of one
    return workers.model_result(prepared)


@functools.lru_cache(maxsize=None)
def _plain(kind: str, equalize: bool = False) -> dict:
    prepared = workers.prepare(kind, equalize)
    fxq.calibrate(prepared, workers.batches(), progress=False)
    return workers.model_result(prepared)


def _assert_identical(result: dict, reference: dict) -> None:
    assert result["state"].keys() == reference["state"].keys()
    for key, value in reference["state"].items():
        assert torch.equal(result["state"][key], value), key
    for got, expected in zip(result["outputs"], reference["outputs"], strict=True):
        assert torch.equal(got, expected)


def _bare_reference() -> dict:
    observers = workers.bare_observers()
    calibrate_on_ranks(observers, workers.vector_batches(), lambda batches: workers.run_bare(observers, batches))
    return observers.state_dict()


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_end_bit_identical_to_one_process(world):
    results = [result["merge_everything"] for result in _spawn(world)]
    for result in results:
        assert "error" not in result, result.get("traceback")
    references = {"histogram": _world_of_one("histogram"), "moving_average": _plain("moving_average"),
                  "equalized_histogram": _world_of_one("histogram", equalize=True),
                  "equalized_moving_average": _plain("moving_average", equalize=True)}
    bare = _bare_reference()
    for result in results:  # every rank, not only rank 0
        assert result["histogram_summary"] == result["moving_average_summary"] == (7, world, {})
        for kind, reference in references.items():
            _assert_identical(result[kind], reference)
        for key, value in bare.items():
            assert torch.equal(result["bare"][key], value), key


def test_sensitivity_on_3_ranks_ranks_as_one_process():
    results = [result["merge_everything"] for result in _spawn(3)]
    model, data = workers.build_model(), workers.batches()
    with torch.no_grad():
        score = lambda m: -float(sum((m(x) - model(x)).pow(2).mean() for x in data[:2]))  # noqa: E731
        ranking = [(entry.layer, entry.metric, entry.change)
                   for entry in fxq.sensitivity(model, workers.qconfig_mapping("histogram"), data[:3], score)]
    assert len(ranking) == 3 and len({change for _, _, change in ranking}) == 3
    assert all(result["sensitivity"] == ranking for result in results)


def test_moving_average_merge_equals_one_process_in_rank_order():
    merged, plain = _world_of_one("moving_average"), _plain("moving_average")
    _assert_identical(merged, plain)


def test_histogram_merge_equals_one_observer_fed_all_values_at_once():
    prepared = workers.prepare("histogram")
    fxq.calibrate(prepared, workers.batches(), progress=False, distributed=True)
    recorded = workers.prepare("histogram")
    inputs = {}
    for name, module in recorded.named_modules():
        if isinstance(module, HistogramObserver):
            module.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, []).append(args[0]))
    fxq.calibrate(recorded, workers.batches(), progress=False, distributed=False)
    modules = dict(prepared.named_modules())
    assert len(inputs) >= 3
    for name, values in inputs.items():
        alone = HistogramObserver(quant_min=0, quant_max=127)
        alone(torch.cat([v.reshape(-1) for v in values]))
        for buffer in ("histogram", "min_val", "max_val"):
            assert torch.equal(getattr(alone, buffer), getattr(modules[name], buffer)), (name, buffer)
        # seen one batch at a time, the observer re-bins as the range grows: a different (approximate) histogram
        assert not torch.equal(dict(recorded.named_modules())[name].histogram, alone.histogram)


def test_a_failing_rank_fails_every_rank_with_its_error():
    for result in _spawn(2):
        error = result["one_rank_raises"]["error"]
        assert error.startswith("DistributedError: fxq.calibrate: rank 1 of 2 failed: ValueError: observer "
                                "'activation_post_process_0' on node 'x'"), error
        assert "calibration batch 2 (counting the prepared model's calls from 1) holds NaN values" in error


def test_a_rank_that_dies_does_not_hang_the_others():
    results = _spawn(3)
    assert "one_rank_dies" not in results[1]  # it exited before saving
    for rank in (0, 2):
        result = results[rank]["one_rank_dies"]
        assert "error" in result and result["seconds"] < 30, result  # the group's timeout is 8 s


def test_an_observer_without_merge_states_is_named():
    class Peak(nn.Module):
        def forward(self, x):
            return x

        def calculate_qparams(self):
            return torch.tensor([1.0]), torch.tensor([0])

    with pytest.raises(UnmergeableObserverError, match=r"test_distributed\..*Peak \(observer 'obs'\).*merge_states"):
        observer_mergers(nn.ModuleDict({"obs": Peak()}))


def test_a_subclass_that_records_differently_needs_merge_states():
    class Clipped(fxq.observers.MinMaxObserver):
        def forward(self, x):
            return super().forward(x.clamp(-1, 1))

    with pytest.raises(UnmergeableObserverError, match="Clipped"):
        observer_mergers(nn.ModuleDict({"obs": Clipped()}))


def test_distributed_calibration_refuses_observers_that_hold_data():
    prepared = workers.prepare("histogram")
    fxq.calibrate(prepared, workers.batches(2), progress=False)
    with pytest.raises(ValueError, match="already holds statistics"):
        fxq.calibrate(prepared, workers.batches(2), progress=False, distributed=True)
    assert "forward" not in vars(dict(prepared.named_modules())["activation_post_process_0"])  # patches undone


@pytest.mark.parametrize("count, world", [(7, 2), (7, 3), (2, 3), (0, 2)])
def test_shards_are_contiguous_and_cover_everything(count, world):
    items = list(range(count))
    shards = [shard(items, rank, world) for rank in range(world)]
    assert sum(shards, []) == items and max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("one_pass", [False, True])
def test_torchrun_quantize_distributed_saves_what_one_process_makes(tmp_path, one_pass):
    from fxq.cli.demo import load_demo, save_calibration, to_input
    save_calibration(str(tmp_path / "calib.pt"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fxq.cli",
               "quantize", "fxq.cli.demo:trained_model", "--input-shape", "1,1,8,8", "--calib", "calib.pt",
               "--out", "int8.pt", "--distributed", "--timeout", "60"] + (["--one-pass"] if one_pass else [])
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SPAWN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on 2 ranks" in done.stdout
    model, data = load_demo()
    prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping("x86"), (torch.randn(1, 1, 8, 8),))
    fxq.calibrate(prepared, list(to_input(data["calib_images"]).split(32)), progress=False, distributed=True)
    images = to_input(data["test_images"])
    saved = torch.load(tmp_path / "int8.pt", weights_only=False)
    if one_pass:  # histograms merged approximately
        assert sqnr(fxq.convert_fx(prepared)(images), saved(images)) >= 30
    else:
        assert torch.equal(saved(images), fxq.convert_fx(prepared)(images))


def test_quantize_distributed_outside_torchrun_is_a_usage_error(capsys, monkeypatch):
    from fxq.cli.main import main
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["quantize", "fxq.cli.demo:trained_model", "--input-shape", "1,1,8,8", "--random-calib",
                 "--out", "never.pt", "--distributed"]) == 2
    assert "launch with `torchrun --nproc-per-node 2 -m fxq.cli quantize" in capsys.readouterr().err
    assert main(["quantize", "fxq.cli.demo:trained_model", "--input-shape", "1,1,8,8", "--random-calib",
                 "--out", "never.pt", "--one-pass"]) == 2
    assert "add --distributed" in capsys.readouterr().err


def test_histogram_counts_stay_exact_past_float32_integers():
    # float32 adds 1 to 2**24 as 0: counted batch by batch in float32, a split of the same data into other shares
    # (ranks) would round differently. The merge counts in float64 and rounds the total once.
    observer = HistogramObserver(bins=4)
    first = torch.cat([torch.zeros(2**24 - 1), torch.ones(1)])
    batches = [first] + [torch.zeros(1)] * 3
    calibrate_on_ranks(observer, batches, lambda shard: len([observer(x) for x in shard]))
    assert observer.histogram.dtype == torch.float32
    assert observer.histogram.tolist() == [float(torch.tensor(2**24 + 2, dtype=torch.float32)), 0.0, 0.0, 1.0]
    one_by_one = HistogramObserver(bins=4)
    for x in batches:
        one_by_one(x)
    assert one_by_one.histogram[0] == 2**24  # each later 1 was lost


@pytest.mark.parametrize("world", [2, 3])
def test_one_pass_histograms_merge_close_to_exact_and_identical_on_every_rank(world):
    """exact_histograms=False: one pass; every rank re-bins its histogram onto the common range and the sum is
    approximate. Bound: each scale within 3% of the exact merge's, zero points within 3, outputs >= 30 dB."""
    results = [result["merge_everything"]["one_pass_histogram"] for result in _spawn(world)]
    for result in results[1:]:
        _assert_identical(result, results[0])
    exact = workers.prepare("histogram")
    fxq.calibrate(exact, workers.batches(), progress=False, distributed=True)
    exact_qparams, exact_outputs = workers.histogram_qparams(exact), workers.model_result(exact)["outputs"]
    assert results[0]["qparams"].keys() == exact_qparams.keys()
    for name, (scale, zero_point) in results[0]["qparams"].items():
        assert abs(scale / exact_qparams[name][0] - 1) <= 0.03 and abs(zero_point - exact_qparams[name][1]) <= 3
    for got, expected in zip(results[0]["outputs"], exact_outputs):
        assert sqnr(expected, got) >= 30


@pytest.mark.parametrize("exact, passes", [(True, 2), (False, 1)])
def test_one_pass_histograms_run_each_batch_once(exact, passes):
    prepared, calls = workers.prepare("histogram"), []
    prepared.register_forward_pre_hook(lambda module, args: calls.append(1))
    fxq.calibrate(prepared, workers.batches(), progress=False, distributed=True, exact_histograms=exact)
    assert len(calls) == passes * len(workers.batches())
