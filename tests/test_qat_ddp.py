"""QAT under DistributedDataParallel: two gloo processes on loopback train a prepare_qat_fx model on different
data; parameters stay identical, every fake-quant sees the same scale / zero point / statistics on both ranks at
each forward (DDP broadcasts buffers, which is why the switches are buffers), and the result converts."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fxq

STEPS = 3


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


def _quantizer_state(prepared) -> dict:
    return {f"{name}.{key}": value.clone() for name, module in prepared.named_modules()
            if isinstance(module, fxq.FakeQuantizeBase) for key, value in module.state_dict().items()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same model on both ranks
        prepared = fxq.prepare_qat_fx(Net().train(), fxq.get_default_qat_qconfig_mapping("x86"),
                                      (torch.randn(4, 1, 8, 8),))
        model = nn.parallel.DistributedDataParallel(prepared)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        seen_at_forward = []
        hook = model.module.register_forward_pre_hook(lambda module, args: seen_at_forward.append(
            _quantizer_state(module)))
        torch.manual_seed(100 + rank)  # different data on each rank
        for _ in range(STEPS):
            loss = model(torch.randn(8, 1, 8, 8) * (1 + rank)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        hook.remove()
        parameters = {k: v.detach().clone() for k, v in prepared.named_parameters()}
        converted = fxq.convert_fx(prepared.eval().disable_observer())
        torch.save({"seen": seen_at_forward, "parameters": parameters,
                    "output": converted(torch.ones(2, 1, 8, 8))}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch without gloo")
def test_qat_under_ddp_keeps_quantizers_and_parameters_in_step(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert len(ranks[0]["seen"]) == STEPS
    for step, (first, second) in enumerate(zip(ranks[0]["seen"], ranks[1]["seen"])):
        assert first.keys() == second.keys() and any("scale" in key for key in first)
        for key in first:
            assert torch.equal(first[key], second[key]), f"step {step}: {key} differs between ranks"
    assert ranks[0]["seen"][-1] != {}  # the quantizers did observe (scales moved off their initial 1.0)
    assert any(float(v.flatten()[0]) != 1.0 for k, v in ranks[0]["seen"][-1].items() if k.endswith(".scale"))
    for name, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][name]), f"parameter {name} differs between ranks"
    assert ranks[0]["output"].shape == (2, 3)
