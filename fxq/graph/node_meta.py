"""Keep fxq's node metadata (scopes, quantizer tags) across ``torch.save`` / ``torch.load``.

torch.fx rebuilds a loaded GraphModule's graph from its generated code: node meta is gone and some names change
(``relu_1`` -> ``relu``), but the nodes come back in the same order. So prepare and convert store the metadata
mpath, the dumps and convert read as a plain attribute, one dict per node in graph order, and :func:`restore`
puts it back on a graph that lost it.

    >>> import io, torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(1, 2),))
    >>> buffer = io.BytesIO(); torch.save(prepared, buffer); _ = buffer.seek(0)
    >>> len(fxq.find_quantizers(torch.load(buffer, weights_only=False), "**/[qtag:activation]"))
    2
"""
from __future__ import annotations

from torch import fx, nn
from torch.fx.node import _get_qualified_name

ATTRIBUTE = "_fxq_node_meta"
KEPT_KEYS = ("fxq_scope", "fxq_qtag", "fxq_qtag_role")
_KEPT_MARK = "fxq_meta_kept"  # on every node while its meta is the one stored; gone after torch.load


def keep(gm: fx.GraphModule) -> None:
    """Store the kept keys of every node's meta on ``gm``, in graph order, with each node's op and target."""
    setattr(gm, ATTRIBUTE, [(_signature(n), {k: n.meta[k] for k in KEPT_KEYS if k in n.meta})
                            for n in gm.graph.nodes])
    for node in gm.graph.nodes:
        node.meta[_KEPT_MARK] = True


def restore(model: nn.Module) -> None:
    """Put the stored metadata back on the nodes of a graph that lost it (a loaded model) and is still the stored
    one (same ops and targets in the same order); do nothing otherwise."""
    stored = getattr(model, ATTRIBUTE, None)
    if not isinstance(model, fx.GraphModule) or not stored:
        return
    if any(_KEPT_MARK in n.meta for n in model.graph.nodes):  # stops at the first node of a graph in memory
        return  # never lost (in memory, perhaps retagged by the user since): leave it as it is
    nodes = list(model.graph.nodes)
    if len(nodes) != len(stored) or any(_signature(n) != signature for n, (signature, _) in zip(nodes, stored)):
        return
    for node, (_, meta) in zip(nodes, stored):
        node.meta.update(meta)
        node.meta[_KEPT_MARK] = True


def _signature(node: fx.Node) -> tuple:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.op, target  # a function by name: its repr holds an address that differs in another process


def target_name(node: fx.Node) -> str:
    """Deterministic text for a node's target: a qualified name for callables, the string otherwise."""
    if isinstance(node.target, str):
        return node.target
    try:
        return _get_qualified_name(node.target).replace("_operator.", "operator.")
    except Exception:  # an exotic callable: its name is still stable, its repr may hold an address
        return getattr(node.target, "__name__", type(node.target).__name__)
