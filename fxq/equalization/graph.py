"""Which graph nodes equalization handles, and how an equalized layer's input chain reaches the previous layer.

A *layer* is ``nn.Linear`` / ``nn.Conv1d/2d/3d`` (grouped and depthwise too), their fused ReLU forms, or
``F.linear`` / ``F.conv1d/2d/3d`` with a ``get_attr`` weight. A *connected chain* is what lies between two layers
when every node on it has one user and commutes with a positive per-channel scale:

    layer1 -> [obs] -> relu / leaky_relu / dropout / identity / max or avg pool -> [obs] -> [one shape op] -> layer2

relu(s*x) = s*relu(x) for s > 0; pools commute when the channels are dim 1 (conv outputs: they pool the dims
after it; on a linear's output they would mix features). One shape op (flatten, view, reshape, permute,
transpose, squeeze, unsqueeze) may move channels around: prepare works out which of layer1's channels each input
feature of layer2 comes from (fxq.equalization.channels; a flatten after a conv repeats each channel H*W times).
For such a chain the scale of layer2's input is folded into layer1's weight rows and bias instead of a ``mul``.
An aten op (a torch.export graph) counts as its torch spelling (fxq.patterns.ops.TORCH_SPELLING): aten.relu as
F.relu, aten.view as torch.reshape.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxq.equalization.observers import ChannelRangeObserver, InputEqualizationObserver
from fxq.nn import fused
from fxq.observers import ObserverBase
from fxq.patterns.ops import TORCH_SPELLING

LAYER_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FUSED_LAYERS = (fused.LinearReLU, fused.ConvReLU1d, fused.ConvReLU2d, fused.ConvReLU3d)
LAYER_FUNCTIONS = (F.linear, F.conv1d, F.conv2d, F.conv3d)
# Ops f with f(s * x) = s * f(x) for s > 0 applied per element: any channel layout.
ELEMENTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu, F.dropout)
ELEMENTWISE_METHODS = ("relu", "relu_", "contiguous", "detach")
# Pools commute with a per-channel scale only when the channels are dim 1 and they pool the dims after it.
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                  F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
# Shape ops: they move values, so channel c of layer1 becomes the features channel_map says.
RESHAPE_MODULES = (nn.Flatten,)
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze)
RESHAPE_METHODS = ("flatten", "view", "reshape", "permute", "transpose", "squeeze", "unsqueeze")


def inner_module(module: nn.Module) -> nn.Module:
    """The Linear/Conv inside a fused LinearReLU/ConvReLU, or the module itself."""
    return module[0] if isinstance(module, FUSED_LAYERS) else module


def argument(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if index < len(node.args) else node.kwargs.get(name, default)


def function_of(node: fx.Node) -> Any:
    """A call_function node's target, an aten op as its torch spelling (aten.linear -> F.linear)."""
    return TORCH_SPELLING.get(node.target, node.target)


def is_layer_kind(node: fx.Node, modules: dict) -> bool:
    """Linear/conv by kind (whether or not the details allow equalizing it)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], LAYER_MODULES + FUSED_LAYERS)
    return node.op == "call_function" and function_of(node) in LAYER_FUNCTIONS


def channel_axis(node: fx.Node, modules: dict) -> int:
    """The feature dim of a layer's input and output: last for linear, 1 (channels) for conv."""
    if node.op == "call_module":
        return -1 if isinstance(inner_module(modules[node.target]), nn.Linear) else 1
    return -1 if function_of(node) is F.linear else 1


def groups_of(node: fx.Node, modules: dict) -> Any:
    """A conv's ``groups`` (1 for linear); for a functional conv whatever its ``groups`` argument is."""
    if node.op == "call_module":
        return getattr(inner_module(modules[node.target]), "groups", 1)
    return 1 if function_of(node) is F.linear else argument(node, 6, "groups", 1)


def layer_problem(node: fx.Node, modules: dict, calls: Counter) -> Optional[str]:
    """Why this linear/conv node cannot have its weight rescaled, or None when it can."""
    if node.op == "call_module":
        if calls[node.target] > 1:
            return f"module '{node.target}' is called {calls[node.target]} times (its weight is shared)"
        return None
    if not isinstance(groups_of(node, modules), int):
        return "its groups argument is computed at run time (the grouping of its weight columns is unknown)"
    if weight_attr(node) is None:
        return "its weight is not a model attribute (get_attr)"
    bias = argument(node, 2, "bias")
    if bias is not None and not (isinstance(bias, fx.Node) and bias.op == "get_attr" and len(bias.users) == 1):
        return "its bias is not a model attribute used only by this op"
    return None


def weight_attr(node: fx.Node) -> Optional[fx.Node]:
    """The get_attr node a functional layer's weight comes from, through observers; None otherwise."""
    value = argument(node, 1, "weight")
    while isinstance(value, fx.Node) and value.op == "call_module" and len(value.users) == 1:
        value = value.args[0]
    if isinstance(value, fx.Node) and value.op == "get_attr" and len(value.users) == 1:
        return value
    return None


def is_observer(node: Any, modules: dict) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and isinstance(modules[node.target], ObserverBase)


def is_tracker(node: Any, modules: dict) -> bool:
    """A ChannelRangeObserver node that is not an input equalization observer (it records an intermediate range)."""
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and type(modules[node.target]) is ChannelRangeObserver)


def is_record(node: Any, modules: dict) -> bool:
    """Any equalization observer node (input equalization observer or tracker): it passes its input through."""
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and isinstance(modules[node.target], ChannelRangeObserver))


def _is_kind(node: fx.Node, modules: dict, module_types: tuple, functions: tuple, methods: tuple) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], module_types)
    if node.op == "call_function":
        return function_of(node) in functions
    return node.op == "call_method" and node.target in methods


def is_elementwise(node: fx.Node, modules: dict) -> bool:
    return _is_kind(node, modules, ELEMENTWISE_MODULES, ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS)


def is_pool(node: fx.Node, modules: dict) -> bool:
    return _is_kind(node, modules, POOL_MODULES, POOL_FUNCTIONS, ())


def is_reshape(node: fx.Node, modules: dict) -> bool:
    """A shape op whose arguments other than the tensor are constants (so prepare can replay it on indices)."""
    if not _is_kind(node, modules, RESHAPE_MODULES, RESHAPE_FUNCTIONS, RESHAPE_METHODS):
        return False
    constants = []
    fx.node.map_arg((node.args[1:], node.kwargs), constants.append)
    return not constants


@dataclass
class Chain:
    """The previous layer, the observer nodes between it and the equalized layer, and the shape op if any."""

    layer: fx.Node
    observers: list = field(default_factory=list)  # quantization observer nodes, nearest the equalized layer first
    reshape: Optional[fx.Node] = None
    after_reshape: int = 0  # observers[:after_reshape] see the reshaped tensor (all of them without a shape op)


def previous_layer(layer: fx.Node, modules: dict, calls: Counter) -> Optional[Chain]:
    """Walk back from an equalized layer's input to the layer feeding it through a connected chain."""
    observers, reshape, after, pooled = [], None, None, {"next": False, "previous": False}
    node = argument(layer, 0, "input")
    while isinstance(node, fx.Node) and len(node.users) == 1:
        if is_observer(node, modules):
            observers.append(node)
        elif is_layer_kind(node, modules):
            if layer_problem(node, modules, calls) is not None or not _observers_private(observers, calls):
                return None
            if (pooled["next"] and channel_axis(layer, modules) != 1) or \
                    (pooled["previous"] and channel_axis(node, modules) != 1):
                return None  # a pool over a linear's features mixes channels
            return Chain(node, observers, reshape, len(observers) if after is None else after)
        elif is_pool(node, modules):
            pooled["previous" if reshape is not None else "next"] = True
        elif is_reshape(node, modules) and reshape is None:
            reshape, after = node, len(observers)
        elif not (is_record(node, modules) or is_elementwise(node, modules)):
            return None
        node = node.args[0] if node.args else None
    return None


def _observers_private(observer_nodes: list, calls: Counter) -> bool:
    """Every call of each observer module on the chain is on the chain: rescaling it affects nothing else."""
    on_chain = Counter(node.target for node in observer_nodes)
    return all(calls[target] == count for target, count in on_chain.items())


def tracker_after(observer_node: fx.Node, modules: dict) -> Optional[fx.Node]:
    user = next(iter(observer_node.users), None)
    return user if len(observer_node.users) == 1 and is_tracker(user, modules) else None


def input_equalization_nodes(gm: fx.GraphModule, modules: dict) -> list:
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(modules[n.target], InputEqualizationObserver)]


def call_counts(gm: fx.GraphModule) -> Counter:
    """How many call_module nodes call each module (observers shared between ops are called several times)."""
    return Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
