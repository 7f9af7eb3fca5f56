"""Bench-size models built by hand (no torchvision), for tools/bench.py.

Each factory returns ``(model.eval(), example_inputs)`` with batch size 1, built under a fixed
seed. ``MODELS`` maps the names bench.py accepts to factories (``narrow_chain`` is 100 blocks);
``narrow_chain(n)`` builds the deep-and-narrow models that measure how prepare time grows with graph size;
``BATCH_LIMITS`` caps a model's larger latency batch.

Example:
    >>> model, example_inputs = MODELS["resnet18"]()
    >>> model(*example_inputs).shape
    torch.Size([1, 1000])
"""
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

BenchEntry = Tuple[nn.Module, tuple]


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build under a fixed seed, with non-trivial BatchNorm statistics, without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
                    module.weight.uniform_(0.5, 1.0)  # keep deep nets from blowing up
    return model.eval()


def _conv_bn(channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(channels_out)]


# ---------------------------------------------------------------------------------------------
# ResNet-18 / ResNet-50


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, channels_in: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(channels_in, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.relu = nn.ReLU()
        self.downsample = _downsample(channels_in, width, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, channels_in: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(channels_in, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, width * 4, 1)
        self.relu = nn.ReLU()
        self.downsample = _downsample(channels_in, width * 4, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _downsample(channels_in: int, channels_out: int, stride: int):
    if stride == 1 and channels_in == channels_out:
        return None
    return nn.Sequential(*_conv_bn(channels_in, channels_out, 1, stride))


class ResNet(nn.Module):
    def __init__(self, block, depths, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, channels = [], 64
        for index, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def _image() -> tuple:
    return (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)


def resnet18() -> BenchEntry:
    return _seeded(18, lambda: ResNet(BasicBlock, (2, 2, 2, 2))), _image()


def resnet50() -> BenchEntry:
    return _seeded(50, lambda: ResNet(Bottleneck, (3, 4, 6, 3))), _image()


# ---------------------------------------------------------------------------------------------
# MobileNetV2


class InvertedResidual(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = channels_in * expansion
        layers: List[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(channels_in, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, channels_out, 1)
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and channels_in == channels_out

    def forward(self, x):
        return x + self.body(x) if self.use_skip else self.body(x)


# (expansion, channels, repeats, first stride), as in the MobileNetV2 paper.
MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: List[nn.Module] = [*_conv_bn(3, 32, 3, 2), nn.ReLU6()]
        channels = 32
        for expansion, width, repeats, stride in MOBILENET_V2_STAGES:
            for index in range(repeats):
                layers.append(InvertedResidual(channels, width, stride if index == 0 else 1, expansion))
                channels = width
        layers += [*_conv_bn(channels, 1280, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenet_v2() -> BenchEntry:
    return _seeded(2, MobileNetV2), _image()


# ---------------------------------------------------------------------------------------------
# EfficientNet-B0 / EfficientNet-Lite0: MBConv blocks with 3x3 and 5x5 depthwise convs and squeeze-and-excitation


class SqueezeExcitation(nn.Module):
    """Channel gate: global average -> 1x1 conv -> activation -> 1x1 conv -> sigmoid, times the input."""

    def __init__(self, channels: int, squeezed: int, activation: Callable[[], nn.Module]):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.act = nn.Conv2d(channels, squeezed, 1), activation()
        self.expand, self.gate = nn.Conv2d(squeezed, channels, 1), nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """1x1 expansion, kxk depthwise, squeeze-and-excitation, 1x1 projection; a skip where the shape allows."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, expansion: int,
                 activation: Callable[[], nn.Module]):
        super().__init__()
        hidden = channels_in * expansion
        layers: List[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(channels_in, hidden, 1), activation()]
        layers += [*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), activation()]
        layers.append(SqueezeExcitation(hidden, max(1, channels_in // 4), activation))
        layers += _conv_bn(hidden, channels_out, 1)
        self.body = nn.Sequential(*layers)
        self.use_skip = stride == 1 and channels_in == channels_out

    def forward(self, x):
        return x + self.body(x) if self.use_skip else self.body(x)


# (expansion, kernel, first stride, channels, repeats), the EfficientNet-B0 stages (Lite0 keeps them).
EFFICIENTNET_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNet(nn.Module):
    """EfficientNet-B0's layout with a choice of activation: SiLU as in B0, ReLU6 as in the Lite variants.

    Unlike the published Lite0, the Lite flavour keeps squeeze-and-excitation: it is the part that stresses a
    quantizer (a sigmoid gate multiplied into the feature map), so the bench keeps it.
    """

    def __init__(self, activation: Callable[[], nn.Module], classes: int = 1000):
        super().__init__()
        layers: List[nn.Module] = [*_conv_bn(3, 32, 3, 2), activation()]
        channels = 32
        for expansion, kernel, stride, width, repeats in EFFICIENTNET_B0_STAGES:
            for index in range(repeats):
                layers.append(MBConv(channels, width, kernel, stride if index == 0 else 1, expansion, activation))
                channels = width
        layers += [*_conv_bn(channels, 1280, 1), activation()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def efficientnet_lite() -> BenchEntry:
    """EfficientNet-Lite0-style: ReLU6 everywhere, SE kept, 224x224 input."""
    return _seeded(3, lambda: EfficientNet(nn.ReLU6)), _image()


def efficientnet_b0() -> BenchEntry:
    """EfficientNet-B0-style: SiLU everywhere, 224x224 input."""
    return _seeded(4, lambda: EfficientNet(nn.SiLU)), _image()


# ---------------------------------------------------------------------------------------------
# BERT-base encoder (post-norm), from Linear / LayerNorm / matmul / softmax / GELU


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.gelu = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden)

    def split_heads(self, x):
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x):
        batch, seq, hidden = x.shape
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5)
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        context = context.permute(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(self.gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    def __init__(self, layers: int = 12, hidden: int = 768, heads: int = 12, intermediate: int = 3072):
        super().__init__()
        self.layers = nn.ModuleList(BertLayer(hidden, heads, intermediate) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def bert(layers: int = 12, seq: int = 128) -> BenchEntry:
    """BERT-base encoder on already-embedded inputs of shape (1, seq, 768)."""
    hidden_states = torch.randn(1, seq, 768, generator=torch.Generator().manual_seed(0))
    return _seeded(768, lambda: BertEncoder(layers)), (hidden_states,)


# ---------------------------------------------------------------------------------------------
# narrow_chain: n x (Linear(32, 32) + ReLU), for prepare-time scaling


def narrow_chain(n: int) -> BenchEntry:
    """n blocks of Linear(32, 32) + ReLU: a graph of 2n nodes whose per-node work is tiny."""
    def make() -> nn.Sequential:
        return nn.Sequential(*(layer for _ in range(n) for layer in (nn.Linear(32, 32), nn.ReLU())))

    return _seeded(n, make), (torch.randn(1, 32, generator=torch.Generator().manual_seed(0)),)


MODELS: Dict[str, Callable[[], BenchEntry]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite": efficientnet_lite,
    "efficientnet_b0": efficientnet_b0,
    "bert": bert,
    "narrow_chain": lambda: narrow_chain(100),  # int8 loses to float here in torch.ao (issue 8)
}

# The largest latency batch per model: BERT at seq 128 is already 128 rows a sample.
BATCH_LIMITS: Dict[str, int] = {"bert": 4}
