"""Sweep cases: idioms from tutorials and older model code (LeNet's view, normalisation inside the model,
hand-written swish / hardswish, dtype casts, every spelling of add, one module listed twice in a Sequential)."""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, images


@case("lenet", "LeNet", images(1, 28, 28), "the PyTorch tutorial's x.view(-1, 16 * 4 * 4) after max pools")
class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 4 * 4, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 16 * 4 * 4)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@case("normalized_input", "preprocessing", images(3, 16, 16), "(x - mean) / std with buffers, then a conv net")
class NormalizedInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


@case("manual_activations", "activations", images(3, 16, 16), "x * sigmoid(x) and x * relu6(x + 3) / 6 by hand")
class ManualActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv1(x)
        x = x * torch.sigmoid(x)
        x = self.conv2(x)
        x = x * F.relu6(x + 3.0) / 6.0
        return self.fc(x.mean((2, 3)))


@case("dtype_casts", "forward shape", images(16), "x.float(), type_as and .to(dtype) between layers, as HF norms do")
class DtypeCasts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x):
        hidden = self.fc1(x)
        hidden = self.norm(hidden.float()).type_as(hidden)
        return self.fc2(hidden.to(torch.float32))


@case("add_spellings", "forward shape", images(16), "torch.add, Tensor.add, +=, operator.add, sum of a list")
class AddSpellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x):
        y = torch.add(self.a(x), x)
        y = y.add(self.b(y))
        y += self.c(y)
        return sum([self.d(y), y, x])


@case("layernorm_chw", "LayerNorm", images(4, 8, 8), "nn.LayerNorm([C, H, W]) on conv features")
class LayerNormCHW(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(4, 8, 3, padding=1), nn.LayerNorm([8, 8, 8]), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(F.relu(self.norm(self.conv(x))).mean((2, 3)))


@case("sequential_reused_module", "forward shape", images(16), "one nn.Tanh instance listed twice in a Sequential")
class SequentialReused(nn.Module):
    def __init__(self):
        super().__init__()
        act = nn.Tanh()
        self.body = nn.Sequential(nn.Linear(16, 16), act, nn.Linear(16, 16), act)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.body(x))


@case("functional_layers", "forward shape", images(3, 8, 8), "F.conv2d / F.linear on nn.Parameters, as custom layers do")
class FunctionalLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_weight = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.conv_bias = nn.Parameter(torch.zeros(8))
        self.weight, self.bias = nn.Parameter(torch.randn(4, 8) * 0.3), nn.Parameter(torch.randn(4) * 0.1)

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.conv_weight, self.conv_bias, padding=1))
        return F.linear(x.mean((2, 3)), self.weight, self.bias)
