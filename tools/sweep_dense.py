"""Sweep cases: dense prediction and other signal shapes (UNet, FPN, GANs, super-resolution, detection head,
Conv1d audio, Conv3d video)."""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, images


def double_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
                         nn.ReLU(inplace=True), nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Two-level UNet; the decoder upsamples with ConvTranspose2d or with bilinear interpolation."""

    def __init__(self, transposed: bool):
        super().__init__()
        self.inc, self.down = double_conv(3, 8), double_conv(8, 16)
        self.transposed = transposed
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2) if transposed else nn.Conv2d(16, 8, 1)
        self.decode, self.outc = double_conv(16, 8), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down(F.max_pool2d(x1, 2))
        if self.transposed:
            up = self.up(x2)
        else:
            up = self.up(F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False))
        return self.outc(self.decode(torch.cat([x1, up], dim=1)))


case("unet_transposed", "UNet", images(3, 16, 16), "ConvTranspose2d decoder, skip concat")(lambda: UNet(True))
case("unet_bilinear", "UNet", images(3, 16, 16), "bilinear interpolate decoder, skip concat")(lambda: UNet(False))


@case("fpn", "FPN", images(3, 32, 32), "lateral 1x1, nearest upsample + add, dict of levels")
class FPN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                                   nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()),
                                   nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())])
        self.inner = nn.ModuleList(nn.Conv2d(c, 8, 1) for c in (8, 16, 32))
        self.layer = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))

    def forward(self, x):
        features = []
        for stage in self.body:
            x = stage(x)
            features.append(x)
        last = self.inner[2](features[2])
        results = [self.layer[2](last)]
        for level in (1, 0):
            lateral = self.inner[level](features[level])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer[level](last))
        return {"p2": results[0], "p3": results[1], "p4": results[2]}


@case("dcgan_generator", "GAN", images(16, 1, 1), "ConvTranspose2d + BN + ReLU, Tanh output", min_sqnr=20)
class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.ConvTranspose2d(16, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
                                  nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
                                  nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


@case("gan_discriminator", "GAN", images(3, 16, 16), "strided convs, LeakyReLU, sigmoid, view(-1)")
class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(16, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


@case("super_resolution", "ESPCN", images(1, 16, 16), "Tanh trunk, PixelShuffle upsampling")
class SuperResolution(nn.Module):
    def __init__(self, upscale: int = 2):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 5, padding=2), nn.Conv2d(16, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, upscale ** 2, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(upscale)

    def forward(self, x):
        return self.pixel_shuffle(self.conv3(torch.tanh(self.conv2(torch.tanh(self.conv1(x))))))


@case("detection_head", "YOLO", images(3, 16, 16), "permute/reshape to anchors, sigmoid on a slice, cat")
class DetectionHead(nn.Module):
    def __init__(self, anchors: int = 3, classes: int = 4):
        super().__init__()
        self.anchors, self.outputs = anchors, classes + 5
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1))
        self.head = nn.Conv2d(16, anchors * self.outputs, 1)

    def forward(self, x):
        p = self.head(self.backbone(x))
        batch, _, height, width = p.shape
        p = p.view(batch, self.anchors, self.outputs, height, width).permute(0, 1, 3, 4, 2).contiguous()
        boxes, scores = p[..., :4], torch.sigmoid(p[..., 4:])
        return torch.cat([boxes, scores], -1).reshape(batch, -1, self.outputs)


@case("audio_conv1d", "Conv1d audio", images(1, 400), "Conv1d + BatchNorm1d + ReLU stack, global pool")
class AudioNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 16, 80, stride=4), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(4),
                                      nn.Conv1d(16, 16, 3), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(4))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(self.features(x).mean(-1)), dim=-1)


@case("keyword_dscnn", "Conv1d audio", images(10, 49), "depthwise-separable Conv1d on MFCC frames")
class KeywordSpotting(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(10, 32, 3, padding=1)
        self.depthwise = nn.Conv1d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv1d(32, 32, 1)
        self.norm, self.fc = nn.BatchNorm1d(32), nn.Linear(32, 12)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.norm(self.pointwise(self.depthwise(x))))
        return self.fc(F.adaptive_avg_pool1d(x, 1).squeeze(-1))


@case("video_conv3d", "Conv3d", images(3, 4, 16, 16), "Conv3d + BatchNorm3d + ReLU, 3d pools")
class VideoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(8), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.block = nn.Sequential(nn.Conv3d(8, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(inplace=True))
        self.avgpool, self.fc = nn.AdaptiveAvgPool3d(1), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.avgpool(self.block(self.pool(self.stem(x)))).flatten(1))
