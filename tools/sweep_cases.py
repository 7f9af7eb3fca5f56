"""The sweep's case registry: a case is a float model factory, its input maker and a family name.

Model files (tools/sweep_vision.py, tools/sweep_sequence.py, tools/sweep_forms.py) register cases with
``@case(...)``; tools/sweep_models.py imports them all and exposes ``CASES``. Models are built under a seed
derived from the case name, with BatchNorm statistics drawn away from their trivial defaults, so every run of
the sweep sees the same weights.

Example:
    >>> from tools.sweep_models import CASES
    >>> model, batches = build(CASES["resnet_basic"], batches=2)
    >>> model(*batches[0]).shape
    torch.Size([8, 10])
"""
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

InputMaker = Callable[[torch.Generator], tuple]
BATCH = 8


@dataclass(frozen=True)
class SweepCase:
    """One architecture: how to build it, how to draw its inputs, and what it exercises."""
    name: str
    family: str
    factory: Callable[[], nn.Module]
    make_inputs: InputMaker
    note: str = ""
    min_sqnr: Optional[float] = None  # dB the int8 output must reach where torch.ao is no yardstick (it shares a bug)


REGISTRY: Dict[str, SweepCase] = {}


def case(name: str, family: str, inputs: InputMaker, note: str = "", min_sqnr: Optional[float] = None) -> Callable:
    """Register the decorated zero-argument model factory as a sweep case."""
    def register(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in REGISTRY:
            raise ValueError(f"sweep case {name!r} is registered twice")
        REGISTRY[name] = SweepCase(name, family, factory, inputs, note, min_sqnr)
        return factory
    return register


def images(*shape: int) -> InputMaker:
    """Inputs of one float tensor, batch first: ``images(3, 16, 16)`` draws (BATCH, 3, 16, 16)."""
    return lambda generator: (torch.randn(BATCH, *shape, generator=generator),)


def tokens(vocabulary: int, length: int) -> InputMaker:
    """Inputs of one int64 tensor of token ids, (BATCH, length)."""
    return lambda generator: (torch.randint(0, vocabulary, (BATCH, length), generator=generator),)


def several(*makers: InputMaker) -> InputMaker:
    """Inputs that are the concatenation of several makers' tuples (multi-input models)."""
    return lambda generator: tuple(item for maker in makers for item in maker(generator))


def _randomize_norm_statistics(model: nn.Module) -> None:
    """Running statistics and affine terms away from (0, 1), as a trained model has them."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)


def build(sweep_case: SweepCase, batches: int) -> Tuple[nn.Module, List[tuple]]:
    """The case's float model in eval mode and ``batches`` input tuples, all from the case name's seed."""
    seed = zlib.crc32(sweep_case.name.encode())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = sweep_case.factory()
        _randomize_norm_statistics(model)
    generator = torch.Generator().manual_seed(seed)
    return model.eval(), [sweep_case.make_inputs(generator) for _ in range(batches)]


def conv_bn(channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (padding keeps the size at stride 1) followed by BatchNorm2d, the unit most CNNs repeat."""
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(channels_out))
