"""Run the traced float model once on the example inputs and record what each node produces.

Only dtypes and shapes are recorded, so plain convolutions and linears are not computed: their output
shape comes from their shape rule (a Linear) or PyTorch's meta kernels (a Conv) and zeros of that shape
flow on (in ResNet-50 the convolutions were 70% of prepare_fx). Should anything downstream fail on those
zeros, the pass runs again computing every layer, and that run's error is the one reported.

Requires: a freshly traced GraphModule and ``ctx.example_inputs``.
Guarantees: ``node.meta["fxq_value"]`` is a :class:`Value` (tensor dtype and shape, or the Python type; for a
tuple or list also its items) for every node; buffers hold what they held before (a BatchNorm in training mode
keeps its statistics); example inputs that do not fit the model raise a ValueError naming the node that failed.
Position: first in prepare.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import fx, nn
from torch.nn.modules import module as module_hooks

from fxq.passes.context import PassContext
from fxq.graph.tracer import scope_of

VALUE_KEY = "fxq_value"


@dataclass(frozen=True)
class Value:
    """What a node produced on the example inputs."""

    type_name: str
    dtype: Optional[torch.dtype] = None
    shape: Optional[tuple] = None
    items: Optional[tuple] = None  # the Values inside a tuple / list (a custom module's (output, (h, c)))

    @property
    def is_float_tensor(self) -> bool:
        return self.dtype is not None and self.dtype.is_floating_point


def value_of(node: fx.Node) -> Value:
    return node.meta.get(VALUE_KEY) or Value("unknown")


def is_float_tensor(arg: Any) -> bool:
    return isinstance(arg, fx.Node) and value_of(arg).is_float_tensor


class _Recorder(fx.Interpreter):
    failed_node: Optional[fx.Node] = None

    def __init__(self, gm: fx.GraphModule, compute_layers: bool) -> None:
        super().__init__(gm)
        self.compute_layers = compute_layers

    def run_node(self, node: fx.Node) -> Any:
        self.failed_node = node
        result = super().run_node(node)
        node.meta[VALUE_KEY] = _describe(result)
        return result

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        if not self.compute_layers:
            zeros = _zeros_like_output(self.fetch_attr(target), args, kwargs)
            if zeros is not None:
                return zeros
        return super().call_module(target, args, kwargs)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WORTH_A_META_KERNEL = 2**20  # multiply-adds (at stride 1) above which a conv costs more than its ~70 us meta kernel


def _zeros_like_output(module: nn.Module, args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    """Zeros shaped like what a plain Linear / Conv would return for args, or None to run the module itself.

    Only exact classes (a subclass may compute more), without hooks (they would not see the call), and only
    for inputs the module would accept as they are (same dtype and device as its weight).
    """
    kind = type(module)
    if kind is not nn.Linear and kind not in _CONVS or kwargs or len(args) != 1 or _has_hooks(module):
        return None
    x, weight = args[0], module.weight
    if not isinstance(x, torch.Tensor) or x.dtype != weight.dtype or x.device != weight.device or x.is_quantized:
        return None
    if kind is nn.Linear:  # its meta kernel takes ~1 ms; the shape rule is simple
        if x.dim() == 0 or x.shape[-1] != module.in_features:
            return None  # computing it raises the error the user should see
        shape = (*x.shape[:-1], module.out_features)
    else:
        if x.numel() // max(1, module.in_channels) * weight.numel() < _WORTH_A_META_KERNEL:
            return None
        bias = None if module.bias is None else module.bias.to("meta")
        shape = module._conv_forward(x.to("meta"), weight.to("meta"), bias).shape
    return torch.zeros(shape, dtype=x.dtype, device=x.device)


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module_hooks._global_forward_hooks
                or module_hooks._global_forward_pre_hooks)


def _misfit(node: fx.Node, error: Exception) -> ValueError:
    scope = scope_of(node)
    reason = str(error).split("\n\nWhile executing")[0]  # drop the interpreter's own note
    return ValueError(
        f"example_inputs do not fit the model: node '{node.name}' ({node.op} {_target(node)}) in module "
        f"'{scope.path or '<root>'}' raised {type(error).__name__}: {reason}. Pass example_inputs as a "
        f"tuple of tensors that the model's forward accepts, e.g. (torch.randn(1, 3, 224, 224),)")


def _target(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _describe(result: Any) -> Value:
    if isinstance(result, torch.Tensor):
        return Value("Tensor", result.dtype, tuple(result.shape))
    if isinstance(result, (tuple, list)):
        return Value(type(result).__name__, items=tuple(_describe(item) for item in result))
    return Value(type(result).__name__)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    inputs = tuple(ctx.example_inputs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n for n in placeholders if not n.args]  # a placeholder with args has a default value
    if not len(required) <= len(inputs) <= len(placeholders):
        names = ", ".join(n.target for n in placeholders)
        raise ValueError(f"example_inputs has {len(inputs)} item(s) but the model's forward takes "
                         f"({names}); pass one example per argument, as a tuple")
    with torch.no_grad(), _buffers_kept(gm):
        try:
            _Recorder(gm, compute_layers=False).run(*inputs)
        except Exception:
            recorder = _Recorder(gm, compute_layers=True)
            try:
                recorder.run(*inputs)
            except Exception as error:
                raise _misfit(recorder.failed_node, error) from error
    ctx.count("nodes recorded", len(gm.graph.nodes))
    return gm


@contextlib.contextmanager
def _buffers_kept(gm: fx.GraphModule) -> Iterator[None]:
    """Undo what the recording run writes into buffers: a BatchNorm in training mode would otherwise fold the
    example (or the zeros standing in for a layer) into its running statistics. Eval-mode modules write nothing."""
    saved = [(buffer, buffer.clone()) for module in gm.modules() if module.training
             for buffer in module._buffers.values() if buffer is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
