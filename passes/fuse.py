"""Fuse chains of float modules (conv -> bn -> relu, linear -> relu, ...) into one module, per patterns/fusion.py.

Requires: a traced GraphModule in eval mode (batch norm is folded into the preceding weights, which is only
exact with frozen statistics); or, under prepare_qat_fx (``ctx.qat``), in training mode, with patterns/qat.py's
table, which keeps batch norm as a module of the fused chain. Guarantees: the fused module replaces the first module of the chain at the same
path; the other nodes of the chain are gone; the float outputs are unchanged up to rounding.
On an aten-level graph (torch.export) the layers are calls on attributes: patterns/functional_fusion.py's rows
fold batch norm into conv / linear weights and turn ``addmm`` (transformers' Conv1D) into ``linear``.
Position: after record_values, before assign_qconfig.

Before / after::

    conv = self.conv(x); bn = self.bn(conv); relu = F.relu(bn)   ->   conv = self.conv(x)   # ConvReLU2d
"""
from __future__ import annotations

import logging
from collections import Counter

from torch import fx

from fxq.graph.exported import is_exported
from fxq.passes.context import PassContext, delete_unused_submodules, modules_of
from fxq.patterns.functional_fusion import FUSION_FUNCTIONAL
from fxq.patterns.fusion import FUSION
from fxq.patterns.matcher import op_of
from fxq.patterns.qat import FUSION_QAT

log = logging.getLogger(__name__)


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    if ctx.qat:  # prepare_qat_fx: batch norm keeps training inside the fused chain (patterns/qat.py)
        return _fuse_with(gm, ctx, FUSION_QAT)
    if gm.training:
        ctx.warnings.append("the model is in training mode: batch norm is not folded, and calibrating would update "
                            "its running statistics and apply dropout; call model.eval() before prepare_fx")
        return gm
    return _fuse_with(gm, ctx, FUSION)


def _fuse_with(gm: fx.GraphModule, ctx: PassContext, table) -> fx.GraphModule:
    if is_exported(gm):  # an aten-level graph: its layers are calls on attributes, not modules
        return _fuse_functions(gm, ctx)
    modules = modules_of(gm)
    # A call whose result nothing reads does not count: the modules fusion starts from (conv, linear, bn) have no
    # side effects, so swapping the fused module under a dead call changes nothing that is used.
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module" and n.users)
    erased: set = set()
    for node in list(gm.graph.nodes):
        if node in erased or node.op != "call_module" or calls[node.target] != 1:
            continue  # erased by an earlier fusion, or a module called from several places (fusing would change them all)
        match = table.match(node, modules)
        if match is None:
            _log_if_users_block_fusion(node, modules, table)
            continue
        parts = [modules[n.target] if n.op == "call_module" else None for n in match.nodes]
        fused = match.rule.action(*parts)
        _replace_module(gm, modules, node.target, fused)
        for extra in reversed(match.nodes[1:]):
            extra.replace_all_uses_with(node)
            gm.graph.erase_node(extra)
            erased.add(extra)
            if extra.op == "call_module" and calls[extra.target] == 1:  # a QAT chain holds the bn: named_modules
                # would hide its old path from delete_unused_submodules
                gm.delete_submodule(extra.target)
        ctx.count(f"fused {match.rule.name}")
    delete_unused_submodules(gm)
    return gm


def _fuse_functions(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    """Rows of patterns/functional_fusion.py, then the attributes the rewrites stopped reading are dropped."""
    modules = modules_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or getattr(node, "_erased", False):  # a batch norm folded just before
            continue
        for match in FUSION_FUNCTIONAL.matches(node, modules):
            if match.rule.action(gm, match):
                ctx.count(f"fused {match.rule.name}")
                break
    _drop_unread_attributes(gm)
    return gm


def _drop_unread_attributes(gm: fx.GraphModule) -> None:
    """Erase get_attr nodes nothing reads and delete their parameters and buffers when no other node reads them:
    the converted model keeps no float copy of a weight it runs folded or transposed."""
    dead = [node for node in gm.graph.nodes if node.op == "get_attr" and not node.users]
    for node in dead:
        gm.graph.erase_node(node)
    read = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    for target in {node.target for node in dead} - read:
        owner_path, _, name = target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if name in owner._parameters or name in owner._buffers:
            delattr(owner, name)


def _log_if_users_block_fusion(node: fx.Node, modules: dict, table) -> None:
    """A pattern that would have matched but for a value with other users is skipped: say so at debug level."""
    if len(node.users) < 2:
        return
    for rule in table.rules_for(op_of(node, modules)):
        blocked = [u for u in node.users if len(rule.pattern) > 1 and u.args and u.args[0] is node
                   and op_of(u, modules) in rule.ops_at(1)]
        if blocked:
            log.debug("fusion %s skipped at %s: its output has %d users (%s); fusing it into %s would change what "
                      "the others read", rule.name, node.name, len(node.users),
                      ", ".join(u.name for u in node.users), blocked[0].name)
            return


def _replace_module(gm: fx.GraphModule, modules: dict, path: str, module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(modules[parent_path] if parent_path else gm, name, module)
    modules[path] = module
