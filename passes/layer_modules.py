"""On a torch.export graph, turn the linear, conv and layer-norm calls equalization and SmoothQuant rescale into
module calls (``nn.Linear`` / ``nn.Conv*d`` / ``nn.LayerNorm`` holding the same weight tensors), per
patterns/layer_modules.py.

Input-weight equalization and SmoothQuant fold their factors into the weights of such modules; an exported graph
has ``aten.linear(x, w, b)``, ``aten.conv2d(x, w, b, ...)`` and ``aten.layer_norm(x, shape, w, b, eps)`` on
``get_attr`` weights instead, so without this pass they would find nothing to rescale. Each such call whose weight
(and bias) are attributes no other node reads becomes ``module(x)``: the node keeps its name, position and meta
(scope, ``nn_module_stack``, recorded value), and records the aten op it was (``fxq_aten_target``) so that
assign_qconfig looks it up as before: ``set_module_name``, ``set_object_type`` and
``set_module_name_object_type_order`` select it as they selected the call. The module takes the place of the
plain holder module torch.export left at the weights' path when that holder holds nothing else (so the state_dict
keys stay the float model's); otherwise it becomes a new child of the holder, and the old attributes go. A call on
a shared or computed weight stays a call (equalization then skips it, naming it).

Requires: an exported graph (``ctx.tracer == "export"``) after fuse (GPT-2's addmm is an aten.linear on its
transposed weight by then); runs only when ``_equalization_config`` asks for equalization or smoothing.
Guarantees: the graph computes the same values; no get_attr node of a converted weight is left; a converted
linear / conv followed by a relu is fused with it (LinearReLU, ConvReLU2d) as fuse fuses a traced graph's modules.
Position: after fuse and choose_default_mapping (which reads the aten calls), before assign_qconfig.

Before / after::

    w = self.q.weight; b = self.q.bias; linear = aten.linear(x, w, b)   ->   linear = self.q(x)   # nn.Linear
"""
from __future__ import annotations

from collections import Counter
from torch import fx, nn

from fxq.passes.context import PassContext, free_name, modules_of
from fxq.patterns.fusion import FUSION
from fxq.patterns.layer_modules import ATEN_TARGET_KEY, LAYER_MODULES, LayerModule


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if ctx.tracer != "export" or (ctx.equalization_mapping is None and ctx.smoothing is None):
        return gm
    modules = modules_of(gm)
    readers = Counter(node.target for node in gm.graph.nodes if node.op == "get_attr")
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        match = LAYER_MODULES.match(node, modules)
        if match is None:
            continue
        layer = match.rule.action(gm, node)
        if layer is None or any(readers[attr.target] != 1 for attr in layer.attributes.values()):
            ctx.count("calls left (shared or computed weights)")
            continue
        path = _place(gm, layer)
        modules[path] = layer.module
        _call_module(gm, node, path, layer)
        ctx.count(f"{type(layer.module).__name__} calls made modules")
        if _fuse_activation(gm, node, modules):
            ctx.count(f"fused {type(modules[path]).__name__}")
    return gm


def _fuse_activation(gm: fx.GraphModule, node: fx.Node, modules: dict) -> bool:
    """Fuse the new module with the relu after it (patterns/fusion.py's module rows: Linear -> relu => LinearReLU),
    as fuse does on a symbolically traced graph: the relu's output then has the one observer, not the layer's."""
    match = FUSION.match(node, modules)
    if match is None or any(extra.op == "call_module" for extra in match.nodes[1:]):
        return False  # a batch norm after it: torch.export's was folded already, or it is not one fuse would fold
    fused = match.rule.action(modules[node.target], *[None] * (len(match.nodes) - 1))
    parent_path, _, name = node.target.rpartition(".")
    setattr(gm.get_submodule(parent_path), name, fused)
    modules[node.target] = fused
    for extra in reversed(match.nodes[1:]):
        extra.replace_all_uses_with(node)
        gm.graph.erase_node(extra)
    return True


def _place(gm: fx.GraphModule, layer: LayerModule) -> str:
    """Put the module where its weights were; returns its path. The holder torch.export made for them is replaced
    when it holds only them; otherwise the module is a new child of the holder and the attributes are deleted."""
    owners = {attr.target.rpartition(".")[0] for attr in layer.attributes.values()}
    owner_path = owners.pop() if len(owners) == 1 else ""
    if owner_path and _holds_only(gm.get_submodule(owner_path), layer):
        parent_path, _, name = owner_path.rpartition(".")
        setattr(gm.get_submodule(parent_path), name, layer.module)
        return owner_path
    for attr in layer.attributes.values():
        path, _, name = attr.target.rpartition(".")
        delattr(gm.get_submodule(path), name)
    owner = gm.get_submodule(owner_path)
    name = free_name(owner, next(iter(layer.attributes.values())).target.rpartition(".")[2] + "_module")
    owner.add_module(name, layer.module)
    return f"{owner_path}.{name}" if owner_path else name


def _holds_only(holder: nn.Module, layer: LayerModule) -> bool:
    """A plain holder (torch.export's placeholder for a module it traced through) with no children, whose
    parameters and buffers are exactly the layer's attributes."""
    names = {attr.target.rpartition(".")[2] for attr in layer.attributes.values()}
    held = set(holder._parameters) | set(holder._buffers)
    return type(holder) is nn.Module and not holder._modules and held == names


def _call_module(gm: fx.GraphModule, node: fx.Node, path: str, layer: LayerModule) -> None:
    """Make ``node`` the module call in place (same name, position, users and meta) and erase the get_attrs."""
    aten_target = node.target
    node.op, node.target = "call_module", path
    node.args, node.kwargs = (layer.input,), {}
    node.meta[ATEN_TARGET_KEY] = aten_target
    for attr in layer.attributes.values():
        gm.graph.erase_node(attr)
