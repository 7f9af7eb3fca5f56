"""``fxq quantize --distributed``: join the process group torchrun describes, calibrate this rank's share.

    torchrun --nproc-per-node 2 -m fxq.cli quantize fxq.cli.demo:trained_model --input-shape 1,1,8,8 \\
        --calib digits_calib.pt --out digits_int8.pt --distributed

torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each process (for N hosts, run it on each with
``--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT``); gloo carries the merges, on CPU.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Iterator

import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def missing_torchrun_variables() -> list[str]:
    """The variables torchrun would have set that this process's environment lacks."""
    return [name for name in TORCHRUN_VARIABLES if name not in os.environ]


@contextlib.contextmanager
def process_group(timeout_seconds: float) -> Iterator[int]:
    """Initialise gloo from torchrun's environment for the block; yields this process's rank."""
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_seconds))
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()
