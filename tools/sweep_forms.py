"""Sweep cases: forward shapes users write (dict / tuple returns, in-place ops, ``torch.max(x, dim)``, split /
chunk / getitem, keyword arguments with defaults, reused modules) and the normalisation layers."""
import torch
import torch.nn.functional as F
from torch import nn

from tools.sweep_cases import case, images, several


@case("dict_output", "forward shape", images(3, 16, 16), "returns {'logits', 'embedding'}")
class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        embedding = self.backbone(x)
        return {"logits": self.head(embedding), "embedding": F.normalize(embedding, dim=1)}


@case("tuple_output", "forward shape", images(16), "returns (logits, hidden) from a shared trunk")
class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk, self.cls, self.reg = nn.Linear(16, 32), nn.Linear(32, 4), nn.Linear(32, 2)

    def forward(self, x):
        hidden = F.relu(self.trunk(x))
        return self.cls(hidden), torch.sigmoid(self.reg(hidden))


@case("inplace_ops", "forward shape", images(3, 16, 16), "relu_, add_, mul_ whose results are read later", min_sqnr=25)
class InplaceOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv1(x).relu_()
        y = self.conv2(x)
        y.add_(x)
        y = y.mul_(0.5)
        return self.fc(F.relu(y, inplace=True).mean((2, 3)))


@case("inplace_effect", "forward shape", images(8, 8, 8), "y.mul_(0.5) not read again by name (issue 14 bug 5)",
      min_sqnr=25)
class InplaceEffect(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y.mul_(0.5)
        return y + x


@case("max_dim_tuple", "forward shape", images(8, 16), "torch.max(x, dim) values and indices, .max(1)[0]")
class MaxDim(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        features = F.relu(self.conv(x))
        pooled, indices = torch.max(features, dim=2)
        best = self.fc(pooled).max(1)[0]
        return best, indices


@case("split_chunk_getitem", "forward shape", images(12, 8), "split, chunk, slicing, GLU-style gate")
class SplitChunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 24)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        a, b = self.proj(x).chunk(2, dim=-1)
        gated = a * torch.sigmoid(b)
        first, second, rest = torch.split(gated, [4, 4, 4], dim=-1)
        mixed = torch.cat([first + second, rest, gated[:, :, -4:]], dim=-1)
        return self.fc(mixed[:, 0] + mixed[:, -1])


@case("forward_kwargs", "forward shape", images(16), "forward(x, scale=2.0, shift=0.5): defaults used")
class ForwardKwargs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x, scale: float = 2.0, shift: float = 0.5):
        hidden = F.relu(self.fc1(x))
        return self.fc2(hidden) * scale + shift


@case("forward_flag_kwarg", "forward shape", images(16), "forward(x, return_hidden=False) branches on the flag")
class ForwardFlagKwarg(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x, return_hidden: bool = False):
        hidden = F.relu(self.fc1(x))
        logits = self.fc2(hidden)
        return (logits, hidden) if return_hidden else logits


@case("view_after_conv", "forward shape", images(3, 8, 8), "x.view(x.size(0), -1) after a conv (issue 14 bug 7)")
class ViewAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


@case("scalar_arith", "forward shape", images(16), "x + 1, x * 2 and a scaled residual (issue 14 bugs 3, 6)")
class ScalarArith(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        y = self.fc1(x) * 2 + 1
        return self.fc2(y * 0.5 + x)


@case("shared_activation", "forward shape", images(16), "one activation module at two unfused places (bug 1)")
class SharedActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.act, self.dropout = nn.Hardswish(), nn.Dropout(0.1)

    def forward(self, x):
        x = self.dropout(self.act(self.fc1(x) + x))
        x = self.dropout(self.act(self.fc2(x) + x))
        return self.fc3(x)


@case("siamese", "forward shape", several(images(16), images(16)), "two inputs through one shared encoder")
class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, left, right):
        a, b = self.encoder(left), self.encoder(right)
        return torch.abs(a - b).sum(1), F.cosine_similarity(a, b)


@case("residual_mlp_bn1d", "MLP", images(16), "Linear + BatchNorm1d + ReLU with residuals")
class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU()) for _ in range(3))
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.out(x)


class NormNet(nn.Module):
    """conv -> norm -> activation twice, then a pooled head; the norm and activation vary per case."""

    def __init__(self, norm, activation):
        super().__init__()
        self.conv1, self.norm1, self.act1 = nn.Conv2d(3, 8, 3, padding=1), norm(8), activation()
        self.conv2, self.norm2, self.act2 = nn.Conv2d(8, 8, 3, padding=1), norm(8), activation()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.act1(self.norm1(self.conv1(x)))
        x = self.act2(self.norm2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


case("groupnorm", "GroupNorm", images(3, 16, 16), "GroupNorm(4 groups) + ReLU")(
    lambda: NormNet(lambda c: nn.GroupNorm(4, c), nn.ReLU))
case("instancenorm", "InstanceNorm", images(3, 16, 16), "InstanceNorm2d(affine) + ReLU (issue 14 bug 6)")(
    lambda: NormNet(lambda c: nn.InstanceNorm2d(c, affine=True), nn.ReLU))
case("prelu", "PReLU", images(3, 16, 16), "BatchNorm2d + PReLU (issue 14 bug 6)")(lambda: NormNet(nn.BatchNorm2d, nn.PReLU))
case("elu_leaky", "activations", images(3, 16, 16), "BatchNorm2d + ELU")(lambda: NormNet(nn.BatchNorm2d, nn.ELU))
