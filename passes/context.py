"""State shared by the passes of one prepare or convert run."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from fxq.patterns.ops import INPLACE_FUNCTIONS


@dataclass
class PassContext:
    """What a pass may read and report. One per prepare_fx / convert_fx call.

    ``stats[pass_name]`` counts what each pass did ("observers inserted": 40); passes add to it with ``count``.
    """

    qconfig_mapping: Any = None
    prepare_config: Any = None
    convert_config: Any = None
    example_inputs: tuple = ()
    equalization_mapping: Any = None  # QConfigMapping of EqualizationQConfig (prepare's _equalization_config)
    qat: bool = False  # prepare_qat_fx: QAT fusion and module swaps
    smoothing: Any = None  # fxq.SmoothQuant options when _equalization_config asks for outlier smoothing
    lowering: str = "quantized"  # convert: "plain" (uint8 tensors, oneDNN kernels) or "quantized" (quantized tensors)
    tracer: str = ""  # prepare: the tracer that made the graph ("fx", "export", "given"), for dumps
    mapping_note: str = ""  # prepare: why the mapping in use is not the one given (choose_default_mapping), for dumps
    state: Any = None  # the fxq state stored on the observed GraphModule (fxq.graph.state.FxqState)
    warnings: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    current_pass: str = ""

    def count(self, what: str, amount: int = 1) -> None:
        self.stats.setdefault(self.current_pass, Counter())[what] += amount


def modules_of(gm: fx.GraphModule) -> dict[str, nn.Module]:
    """Qualified name -> module. Build it once per pass, never per node (it walks the whole module tree).

    Every name a module is reachable by: a quantizer shared between places (``initialize(..., shared=True)``) is
    one module under several names, and graph nodes call it by each; to_reference gives each call of a reused
    weightless module such as a MaxPool2d its own name, bound to the same object.
    """
    return dict(gm.named_modules(remove_duplicate=False))


def attribute_value(gm: fx.GraphModule, target: str):
    """The tensor or module a ``get_attr`` target such as ``"block.weight"`` names on ``gm``."""
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def free_name(owner: nn.Module, name: str) -> str:
    """``name`` with dots made underscores, and '_' appended until ``owner`` has no attribute of that name."""
    name = name.replace(".", "_")
    while hasattr(owner, name):
        name += "_"
    return name


def register_new_buffer(gm: fx.GraphModule, name: str, tensor: torch.Tensor) -> str:
    """Register a copy of ``tensor`` under a free name made from ``name``; returns the name."""
    name = free_name(gm, name)
    gm.register_buffer(name, tensor.detach().clone())
    return name


def delete_unused_submodules(gm: fx.GraphModule) -> None:
    """Drop submodules no node calls or reads (nor any of their parents or children).

    torch.fx's ``GraphModule.delete_all_unused_submodules`` tests membership in a list, which is quadratic in
    the number of modules (1.2 s of a 2,000-block prepare); this keeps the used paths in a set.
    """
    used: set = set()
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        parts = str(node.target).split(".")
        used.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
        if node.op == "call_module":
            try:
                called = gm.get_submodule(str(node.target))
            except AttributeError:
                continue
            used.update(f"{node.target}.{name}" for name, _ in called.named_modules() if name)
    unused = [name for name, _ in gm.named_modules() if name and name not in used]
    for name in unused:
        gm.delete_submodule(name)


# In-place methods whose underscore-less namesake computes something else (x.bernoulli_(p) draws with probability p,
# x.bernoulli() with probabilities x): they stay in place, as effects.
_DIFFERENT_OUT_OF_PLACE = {"bernoulli_", "requires_grad_"}


def out_of_place(node: fx.Node):
    """The out-of-place target of an in-place op (``"mul"`` for ``y.mul_(2)``, F.relu for F.relu(x, inplace=True)),
    None for any other node."""
    if node.op == "call_method" and isinstance(node.target, str):
        name = node.target
        plain = name[:-1]
        if name.endswith("_") and not name.startswith("_") and callable(getattr(torch.Tensor, plain, None)):
            return None if name in _DIFFERENT_OUT_OF_PLACE else plain
        return None
    if node.op != "call_function":
        return None
    if node.target in INPLACE_FUNCTIONS:
        return INPLACE_FUNCTIONS[node.target]
    return node.target if node.kwargs.get("inplace") is True else None


def eliminate_dead_code(gm: fx.GraphModule) -> int:
    """torch.fx's dead-code elimination, except that an in-place op is an effect: ``y.mul_(0.5)`` has no users,
    yet a later reader of ``y`` sees what it did. Returns how many nodes were removed."""
    before = len(gm.graph.nodes)
    gm.graph.eliminate_dead_code(is_impure_node=lambda node: node.is_impure() or out_of_place(node) is not None)
    return before - len(gm.graph.nodes)


def read_attributes(gm: fx.GraphModule) -> set:
    """The targets of the graph's get_attr nodes."""
    return {node.target for node in gm.graph.nodes if node.op == "get_attr"}


def drop_unread_buffers(gm: fx.GraphModule, read_before: set) -> int:
    """Delete the root buffers among ``read_before`` that the graph no longer reads (only removed nodes read them:
    the state_dict need not carry them). Returns how many were deleted."""
    unread = [name for name in read_before - read_attributes(gm) if name in gm._buffers]
    for name in unread:
        del gm._buffers[name]
    return len(unread)
