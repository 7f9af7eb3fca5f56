"""Distributed calibration vs one process, same total data: wall time, merge share, and whether the states agree.

    python tools/bench_distributed.py                       # ResNet-50 (tools/zoo.py), 256 samples, 2 ranks
    python tools/bench_distributed.py --image-size 112 --rounds 3 --qconfigs histogram,minmax

Each setting runs in fresh spawned processes (each builds the same seeded model and data, prepares, then times
only the calibration: ranks start together after a barrier; the wall time is the slowest rank's, and "CPU s" the
largest CPU time of a rank, which is what the wall time would be on otherwise idle cores). Settings take turns round
by round, so load from other work on the machine hits them alike; the table shows medians. "merge" is the time in
the merges themselves, "wait" the time in the status exchanges (waiting for the slowest rank).

    1 proc x 1 thread     plain fxq.calibrate (one pass; a histogram re-bins as its range grows)
    1 proc x 1 thread (exact)   fxq.calibrate(distributed=True) as a world of one (histograms: two passes)
    1 proc x 2 threads    plain fxq.calibrate
    2 procs x 1 thread    fxq.calibrate on a gloo group, each rank half the batches
    2 procs x 1 thread (one pass)   the same with exact_histograms=False (histograms merged approximately)
"""
import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.zoo import MODELS  # noqa: E402

SETTINGS = {  # name: (processes, threads per process, distributed, exact histograms)
    "1 proc x 1 thread": (1, 1, False, True),
    "1 proc x 1 thread (exact)": (1, 1, True, True),
    "1 proc x 2 threads": (1, 2, False, True),
    "2 procs x 1 thread": (2, 1, True, True),
    "2 procs x 1 thread (one pass)": (2, 1, True, False),
}


def isa_flags() -> str:
    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    return " ".join(flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags) or "-"


def qconfig_mapping(kind: str):
    import fxq
    if kind == "histogram":
        return fxq.get_default_qconfig_mapping("x86")  # HistogramObserver activations, per-channel weights
    return fxq.QConfigMapping().set_global(fxq.default_per_channel_qconfig)  # MinMaxObserver activations


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, kind: str, setting: str) -> None:
    import fxq
    from fxq.debug.ranks import shard
    processes, threads, distributed, exact = SETTINGS[setting]
    torch.set_num_threads(threads)
    model, _ = MODELS[args.model]()
    generator = torch.Generator().manual_seed(0)
    data = [torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator)
            for _ in range(args.samples // args.batch)]
    prepared = fxq.prepare_fx(model, qconfig_mapping(kind), (data[0][:1],))
    if processes > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=world, timeout=timedelta(seconds=1800))
        torch.distributed.barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    summary = fxq.calibrate(prepared, shard(data, rank, world), progress=False, distributed=distributed,
                            exact_histograms=exact)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    observers = {k: v for k, v in prepared.state_dict().items() if "post_process" in k}
    scales = {name: float(module.calculate_qparams()[0]) for name, module in prepared.named_modules()
              if isinstance(module, fxq.observers.ObserverBase) and module.has_data() and module.dtype == torch.quint8}
    torch.save({"seconds": seconds, "cpu": cpu, "merge": summary.merge_seconds, "wait": summary.wait_seconds,
                "state": observers, "scales": scales},
               Path(args.out_dir) / f"{kind}-{setting}-{rank}.pt")
    if processes > 1:
        torch.distributed.destroy_process_group()


def run_setting(args: argparse.Namespace, kind: str, setting: str) -> dict:
    world = SETTINGS[setting][0]
    context, port = multiprocessing.get_context("spawn"), free_port()
    processes = [context.Process(target=rank_main, args=(rank, world, port, args, kind, setting))
                 for rank in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"{setting}: a rank exited with {process.exitcode}")
    ranks = [torch.load(Path(args.out_dir) / f"{kind}-{setting}-{rank}.pt") for rank in range(world)]
    return {"seconds": max(r["seconds"] for r in ranks), "merge": max(r["merge"] for r in ranks),
            "wait": max(r["wait"] for r in ranks), "cpu": max(r["cpu"] for r in ranks),
            "state": ranks[0]["state"], "scales": ranks[0]["scales"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def worst_scale_change(scales: dict, exact: dict) -> float:
    """The largest relative difference of an activation scale from the exact one-process merge's, in percent."""
    return 100 * max((abs(scales[name] / exact[name] - 1) for name in exact), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", choices=sorted(MODELS))
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--qconfigs", default="histogram,minmax")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated; on a loaded machine '1 proc x 2 threads' can take 10x longer")
    args = parser.parse_args()
    settings = args.settings.split(",")
    args.out_dir = tempfile.mkdtemp(prefix="fxq_bench_distributed_")
    try:
        report(args, settings)
    finally:
        shutil.rmtree(args.out_dir)


def report(args: argparse.Namespace, settings: list) -> None:
    print(f"{args.model}, {args.samples} samples of 3x{args.image_size}x{args.image_size} in batches of {args.batch}, "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs; ISA: {isa_flags()}")
    for kind in args.qconfigs.split(","):
        runs = {setting: [] for setting in settings}
        for _ in range(args.rounds):
            for setting in settings:
                runs[setting].append(run_setting(args, kind, setting))
        base = statistics.median(r["seconds"] for r in runs["1 proc x 1 thread"])
        base_cpu = statistics.median(r["cpu"] for r in runs["1 proc x 1 thread"])
        exact = runs["1 proc x 1 thread (exact)"][0]
        print(f"\n{kind} activation observers")
        print(f"  {'setting':28} {'calibrate s':>12} {'vs 1x1':>7} {'CPU s':>7} {'vs 1x1':>7} {'merge s':>8} "
              f"{'merge %':>8} {'wait s':>7}  state == exact 1 proc (worst scale change)")
        for setting, results in runs.items():
            seconds = statistics.median(r["seconds"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            merge = statistics.median(r["merge"] for r in results)
            wait = statistics.median(r["wait"] for r in results)
            same = all(same_state(r["state"], exact["state"]) for r in results)
            change = max(worst_scale_change(r["scales"], exact["scales"]) for r in results)
            print(f"  {setting:28} {seconds:12.2f} {seconds / base:7.2f} {cpu:7.2f} {cpu / base_cpu:7.2f} {merge:8.3f} "
                  f"{100 * merge / seconds:8.2f} {wait:7.2f}  {'yes' if same else 'no'} ({change:.2f}%)")


if __name__ == "__main__":
    main()
