"""Sweep cases: convolutional vision families, written the way their reference implementations write them.

Each class keeps the idiom that matters for quantization (a reused ``self.relu``, a concat, a squeeze-excite
multiply, a channel shuffle, a permute around LayerNorm) at a size that converts in well under a second.
"""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, conv_bn, images


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ``self.relu`` module called twice, residual add, optional downsample."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(channels_in, channels_out, 3, stride)
        self.conv2, self.bn2 = conv_bn(channels_out, channels_out, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(channels_in, channels_out, 1, stride) if stride != 1 or channels_in != channels_out else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (1x1 -> 3x3 grouped -> 1x1), ResNeXt-style when ``groups`` > 1."""

    def __init__(self, channels_in: int, width: int, groups: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(channels_in, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, groups=groups)
        self.conv3, self.bn3 = conv_bn(width, channels_in, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


class ResNet(nn.Module):
    def __init__(self, block: str = "basic", groups: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 16, 3)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        if block == "basic":
            self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, stride=2))
        else:
            self.layer1 = nn.Sequential(Bottleneck(16, 16, groups), Bottleneck(16, 16, groups))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32 if block == "basic" else 16, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer1(x))
        return self.fc(torch.flatten(x, 1))


case("resnet_basic", "ResNet", images(3, 16, 16), "BasicBlock, self.relu reused, +=")(lambda: ResNet("basic"))
case("resnet_bottleneck", "ResNet", images(3, 16, 16), "Bottleneck")(lambda: ResNet("bottleneck"))
case("resnext", "ResNet", images(3, 16, 16), "grouped 3x3 conv")(lambda: ResNet("bottleneck", groups=4))


@case("resnet_shared_pool", "ResNet", images(3, 16, 16), "one MaxPool2d called twice (issue 14 bug 1)")
class SharedPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.block = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.stem(x)))
        x = self.pool(self.block(x))
        return self.fc(torch.flatten(x, 1))


class Fire(nn.Module):
    def __init__(self, channels_in: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(channels_in, squeeze, 1), nn.ReLU(inplace=True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True)
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


@case("squeezenet", "SqueezeNet", images(3, 16, 16), "fire modules: 1x1/3x3 expand concat, ceil_mode pool")
class SqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16), Fire(32, 8, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, 10, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class DenseLayer(nn.Module):
    def __init__(self, channels_in: int, growth: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(channels_in), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(channels_in, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        concatenated = torch.cat(features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concatenated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


@case("densenet", "DenseNet", images(3, 16, 16), "pre-activation BN-ReLU-conv, concat of a growing list")
class DenseNet(nn.Module):
    def __init__(self, growth: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layers = nn.ModuleList(DenseLayer(16 + i * growth, growth) for i in range(3))
        self.norm = nn.BatchNorm2d(16 + 3 * growth)
        self.classifier = nn.Linear(16 + 3 * growth, 10)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        out = F.relu(self.norm(torch.cat(features, 1)), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(channels_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


@case("inception", "Inception", images(3, 16, 16), "four branches, avg-pool branch, concat")
class InceptionA(nn.Module):
    def __init__(self, channels_in: int = 3):
        super().__init__()
        self.branch1x1 = BasicConv2d(channels_in, 8, kernel_size=1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(channels_in, 6, kernel_size=1), BasicConv2d(6, 8, kernel_size=5, padding=2)
        self.branch3x3_1 = BasicConv2d(channels_in, 8, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(8, 8, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(channels_in, 4, kernel_size=1)
        self.fc = nn.Linear(28, 10)

    def forward(self, x):
        branches = [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), self.branch3x3_2(self.branch3x3_1(x)),
                    self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))]
        out = torch.cat(branches, 1)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@case("vgg", "VGG", images(3, 16, 16), "conv stack, flatten, dropout classifier")
class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
