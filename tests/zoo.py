"""A zoo of small hand-built models for the end-to-end tests.

Every factory returns ``(model.eval(), example_inputs, calibration)``: the float model, one tuple
of example inputs for ``prepare_fx`` and a list of input tuples to calibrate with. Everything is
seeded locally, so a factory returns bit-identical models and data on every call and leaves the
global RNG untouched. Each model is small enough that torch.ao's prepare + calibrate + convert
takes well under two seconds.

Example:
    >>> model, example_inputs, calibration = ZOO["mlp"]()
    >>> model(*example_inputs).shape
    torch.Size([4, 10])
"""
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ZooEntry = Tuple[nn.Module, tuple, List[tuple]]

CALIBRATION_BATCHES = 4


def _inputs(seed: int, *shape: int) -> Tuple[tuple, List[tuple]]:
    """Example inputs and calibration batches of one shape, from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(*shape, generator=generator),) for _ in range(CALIBRATION_BATCHES + 1)]
    return batches[0], batches[1:]


def _build(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Construct a module under a fixed seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                _randomize_batchnorm(module)
    return model.eval()


def _randomize_batchnorm(bn: nn.BatchNorm2d) -> None:
    # Fresh BN is the identity (mean 0, var 1, weight 1, bias 0), which would let a broken
    # conv-bn fold pass unnoticed; random statistics make folding change the numbers.
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)


# ---------------------------------------------------------------------------------------------
# mlp: Linear/ReLU stack


class MLP(nn.Module):
    def __init__(self, sizes=(32, 64, 64, 10)):
        super().__init__()
        layers = []
        for width_in, width_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers[:-1])  # no ReLU after the classifier

    def forward(self, x):
        return self.layers(x)


def mlp() -> ZooEntry:
    example, calibration = _inputs(1, 4, 32)
    return _build(1, MLP), example, calibration


# ---------------------------------------------------------------------------------------------
# conv_bn_relu: Conv2d + BatchNorm2d + ReLU blocks


def _conv_bn_relu(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )


class ConvBnRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = _conv_bn_relu(3, 8)
        self.block2 = _conv_bn_relu(8, 16, stride=2)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def conv_bn_relu() -> ZooEntry:
    example, calibration = _inputs(2, 1, 3, 16, 16)
    return _build(2, ConvBnRelu), example, calibration


# ---------------------------------------------------------------------------------------------
# residual: ResNet basic block, relu after `out + identity`


class BasicBlock(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu(out)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn_relu(3, 8)
        self.block = BasicBlock(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def residual() -> ZooEntry:
    example, calibration = _inputs(3, 1, 3, 16, 16)
    return _build(3, Residual), example, calibration


# ---------------------------------------------------------------------------------------------
# inverted_residual: MobileNetV2-style expand / depthwise / project with a skip add


class InvertedResidual(nn.Module):
    def __init__(self, channels: int = 8, expansion: int = 4):
        super().__init__()
        hidden = channels * expansion
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                    nn.Hardswish())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.Hardswish())
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.project(self.depthwise(self.expand(x)))


class InvertedResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn_relu(3, 8)
        self.block = InvertedResidual(8)

    def forward(self, x):
        return self.block(self.stem(x))


def inverted_residual() -> ZooEntry:
    example, calibration = _inputs(4, 1, 3, 16, 16)
    return _build(4, InvertedResidualNet), example, calibration


# ---------------------------------------------------------------------------------------------
# transformer_block: pre-norm encoder block from Linear, LayerNorm, matmul, softmax, GELU


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x):
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        batch, seq, dim = x.shape
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim ** 0.5)
        weights = F.softmax(scores, dim=-1)
        context = torch.matmul(weights, v).transpose(1, 2).reshape(batch, seq, dim)
        return self.out(context)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(self.gelu(self.fc1(self.norm2(x))))


def transformer_block() -> ZooEntry:
    example, calibration = _inputs(5, 1, 8, 32)
    return _build(5, TransformerBlock), example, calibration


# ---------------------------------------------------------------------------------------------
# functional: F.linear / F.conv2d with nn.Parameter weights


class Functional(nn.Module):
    """Functional convs and a linear; `ordinary_conv2=False` is the variant torch.ao can convert.

    The second conv, written the ordinary way ``F.conv2d(x, self.w2, self.b2, padding=1)``, makes
    torch.ao's convert_fx crash (its conv2d_prepack call misses the defaulted stride). The variant
    spells every conv argument out as a positional tuple, which computes exactly the same thing.
    """

    def __init__(self, ordinary_conv2: bool = True):
        super().__init__()
        self.ordinary_conv2 = ordinary_conv2
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.b1 = nn.Parameter(torch.randn(8) * 0.1)
        self.w2 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.1)
        self.b2 = nn.Parameter(torch.randn(8) * 0.1)
        self.w3 = nn.Parameter(torch.randn(6, 8) * 0.3)
        self.b3 = nn.Parameter(torch.randn(6) * 0.1)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.b1, (1, 1), (1, 1), (1, 1), 1))
        if self.ordinary_conv2:
            x = F.conv2d(x, self.w2, self.b2, padding=1)
        else:
            x = F.conv2d(x, self.w2, self.b2, (1, 1), (1, 1), (1, 1), 1)
        x = torch.mean(F.relu(x), dim=(2, 3))
        return F.linear(x, self.w3, self.b3)


def functional(ordinary_conv2: bool = True) -> ZooEntry:
    example, calibration = _inputs(6, 1, 3, 12, 12)
    return _build(6, lambda: Functional(ordinary_conv2)), example, calibration


def functional_torch_ao_variant() -> ZooEntry:
    """`functional` with every conv argument positional: same numbers, and torch.ao converts it."""
    return functional(ordinary_conv2=False)


# ---------------------------------------------------------------------------------------------
# cat_pool: two conv branches, torch.cat, max / avg / adaptive pools, flatten, linear


class CatPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU())
        self.max_pool = nn.MaxPool2d(2)
        self.avg_pool = nn.AvgPool2d(2)
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.adaptive = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.avg_pool(self.conv(self.max_pool(x)))
        return self.fc(torch.flatten(self.adaptive(x), 1))


def cat_pool() -> ZooEntry:
    example, calibration = _inputs(7, 1, 3, 16, 16)
    return _build(7, CatPool), example, calibration


ZOO: Dict[str, Callable[[], ZooEntry]] = {
    "mlp": mlp,
    "conv_bn_relu": conv_bn_relu,
    "residual": residual,
    "inverted_residual": inverted_residual,
    "transformer_block": transformer_block,
    "functional": functional,
    "cat_pool": cat_pool,
}

# Zoo models torch.ao cannot convert as written, and the equivalent model it is compared on.
TORCH_AO_VARIANTS: Dict[str, Callable[[], ZooEntry]] = {
    "functional": functional_torch_ao_variant,
}
