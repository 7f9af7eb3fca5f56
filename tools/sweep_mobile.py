"""Sweep cases: mobile families (MobileNetV2/V3, EfficientNet, ShuffleNet, ConvNeXt, SE-ResNet)."""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, conv_bn, images


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6, residual when shapes allow."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, expand: int):
        super().__init__()
        hidden = channels_in * expand
        self.use_res_connect = stride == 1 and channels_in == channels_out
        self.conv = nn.Sequential(*conv_bn(channels_in, hidden, 1), nn.ReLU6(inplace=True),
                                  *conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
                                  *conv_bn(hidden, channels_out, 1))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


@case("mobilenet_v2", "MobileNetV2", images(3, 16, 16), "ReLU6, depthwise, residual add")
class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU6(inplace=True), InvertedResidual(16, 16, 1, 4),
                                      InvertedResidual(16, 24, 2, 4), InvertedResidual(24, 24, 1, 4))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(24, 10))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's SE: avg pool, fc1 (as 1x1 conv), activation, fc2, gate, multiply."""

    def __init__(self, channels: int, squeeze: int, activation=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = activation(), gate()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MobileV3Block(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int, activation):
        super().__init__()
        self.block = nn.Sequential(*conv_bn(channels, hidden, 1), activation(),
                                   *conv_bn(hidden, hidden, kernel, groups=hidden), activation(),
                                   SqueezeExcitation(hidden, 8), *conv_bn(hidden, channels, 1))

    def forward(self, x):
        return self.block(x) + x


@case("mobilenet_v3", "MobileNetV3", images(3, 16, 16), "Hardswish, SE with Hardsigmoid, 5x5 depthwise")
class MobileNetV3(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.Hardswish(), MobileV3Block(16, 32, 3, nn.ReLU),
                                      MobileV3Block(16, 48, 5, nn.Hardswish))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class MBConv(nn.Module):
    def __init__(self, channels: int, expand: int, kernel: int):
        super().__init__()
        hidden = channels * expand
        self.block = nn.Sequential(*conv_bn(channels, hidden, 1), nn.SiLU(inplace=True),
                                   *conv_bn(hidden, hidden, kernel, groups=hidden), nn.SiLU(inplace=True),
                                   SqueezeExcitation(hidden, channels // 4, nn.SiLU, nn.Sigmoid),
                                   *conv_bn(hidden, channels, 1))
        self.stochastic_depth = nn.Identity()

    def forward(self, x):
        return self.stochastic_depth(self.block(x)) + x


@case("efficientnet", "EfficientNet", images(3, 16, 16), "MBConv: SiLU, 5x5 depthwise, SE with Sigmoid")
class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.SiLU(inplace=True), MBConv(16, 4, 3), MBConv(16, 4, 5))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class LiteMBConv(nn.Module):
    """EfficientNet-Lite's block with SE kept: ReLU6 for the activations, the SE gate still a sigmoid."""

    def __init__(self, channels: int, expand: int, kernel: int):
        super().__init__()
        hidden = channels * expand
        self.block = nn.Sequential(*conv_bn(channels, hidden, 1), nn.ReLU6(inplace=True),
                                   *conv_bn(hidden, hidden, kernel, groups=hidden), nn.ReLU6(inplace=True),
                                   SqueezeExcitation(hidden, channels // 4, nn.ReLU6, nn.Sigmoid),
                                   *conv_bn(hidden, channels, 1))

    def forward(self, x):
        return self.block(x) + x


@case("efficientnet_lite", "EfficientNet", images(3, 16, 16), "EfficientNet-Lite: ReLU6, 5x5 depthwise, SE kept")
class EfficientNetLite(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU6(inplace=True), LiteMBConv(16, 4, 3),
                                      LiteMBConv(16, 4, 5))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(*conv_bn(half, half, 1), nn.ReLU(inplace=True), *conv_bn(half, half, 3, groups=half),
                                     *conv_bn(half, half, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch2(x2)), dim=1), 2)


@case("shufflenet", "ShuffleNet", images(3, 16, 16), "chunk, concat, view/transpose/contiguous shuffle")
class ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.ReLU(inplace=True))
        self.stage = nn.Sequential(ShuffleUnit(16), ShuffleUnit(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.stage(self.conv1(x)).mean([2, 3]))


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise, permute to channels-last, LayerNorm, MLP with GELU, layer scale, permute back, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        residual = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.layer_scale * x
        return residual + x.permute(0, 3, 1, 2)


@case("convnext", "ConvNeXt", images(3, 16, 16), "7x7 depthwise, permute, LayerNorm, GELU, layer scale")
class ConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.stages = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.norm, self.head = nn.LayerNorm(16), nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem(x)).mean([-2, -1])))


@case("se_resnet", "SE-ResNet", images(3, 16, 16), "SE block with Linear layers, view, sigmoid gate, expand_as")
class SEResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 16)
        self.conv2, self.bn2 = conv_bn(16, 16)
        self.fc1, self.fc2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(x))
        batch, channels = out.shape[:2]
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(out, 1).view(batch, channels)))))
        out = F.relu(out * gate.view(batch, channels, 1, 1).expand_as(out) + x)
        return self.head(out.mean((2, 3)))
