"""Models for the mpath tests: the module tree of fastforward's MPath documentation and a small transformer."""
from __future__ import annotations

import torch
from torch import nn


class TreeRoot(nn.ModuleDict):
    """A ModuleDict whose forward calls every leaf, so the same tree can also be traced."""

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple:
        outputs = []
        for _, module in self.named_modules():
            if isinstance(module, nn.Conv2d):
                outputs.append(module(image))
            elif isinstance(module, (nn.Linear, nn.ReLU)):
                outputs.append(module(x))
        return tuple(outputs)


def doc_tree() -> nn.ModuleDict:
    """layer1..layer4 with sublayer1 / sublayer2 / activation and the nested first / second / last.only."""
    def tree(root: bool = False, **children: nn.Module) -> nn.ModuleDict:
        return (TreeRoot if root else nn.ModuleDict)(children)

    def linear() -> nn.Linear:
        return nn.Linear(10, 10)

    def conv() -> nn.Conv2d:
        return nn.Conv2d(3, 3, 3)

    return tree(
        root=True,
        layer1=tree(sublayer1=linear(), sublayer2=conv()),
        layer2=tree(sublayer1=linear(), activation=nn.ReLU(), sublayer2=conv()),
        layer3=tree(sublayer1=linear(), sublayer2=conv()),
        layer4=tree(sublayer1=linear(), sublayer2=tree(first=linear(), second=conv(), last=tree(only=linear()))),
    )


def doc_tree_inputs() -> tuple:
    torch.manual_seed(0)
    return torch.randn(4, 10), torch.randn(2, 3, 8, 8)


class Attention(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))
        self.scale = width ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(self.q(x), self.k(x).transpose(-2, -1)) * self.scale
        return self.out(torch.matmul(scores.softmax(-1), self.v(x)))


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(width), Attention(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, width: int = 16, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def transformer() -> tuple:
    torch.manual_seed(0)
    return Transformer().eval(), (torch.randn(2, 5, 16),)
