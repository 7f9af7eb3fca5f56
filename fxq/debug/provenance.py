"""Which op of the observed graph each converted node computes, and the qconfig prepare gave that op.

Convert replaces and renames nodes: ``add`` and the ``relu`` after it become one ``quantized.add_relu`` node,
``F.linear`` becomes a call of a new ``linear_quantized_0`` module. So a converted node's name does not say
which float op it stands for, yet ``fxq.compare`` must pair them and ``fxq.dump`` wants to show the qconfig.

Before convert's first pass the pipeline calls :func:`stamp`: every op node of the observed graph gets
``node.meta["fxq_origin"]`` (its own name) and ``node.meta["fxq_qconfig"]`` (``QConfig.short()`` text or None);
every observer gets the stamps of the op it observes. The passes copy node meta onto the nodes they make (the
quantize/dequantize pair from the observer; the lowered op from the quantize node of its output), so a
quantized op and its quantize/dequantize nodes carry the name of the float op whose *output* they hold.
After the last pass :func:`keep` stores the stamps on the GraphModule as a list in graph order: node meta is
lost by ``torch.save`` (torch.fx re-traces the code on load and also renumbers names such as ``dequantize_7``),
a plain attribute is not, and the reloaded graph has the same nodes in the same order.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()).eval()
    >>> prepared = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.randn(4, 2),))
    >>> _ = prepared(torch.randn(4, 2))
    >>> origins = {name: origin for name, (origin, _) in provenance(fxq.convert_fx(prepared)).items() if origin}
    >>> origins["_0"]  # the int8 Linear+ReLU kernel computes the float Linear of the observed graph
    '_0'

"""
from __future__ import annotations

from typing import Optional

from torch import fx

from fxq.graph.node_meta import target_name
from fxq.observers import ObserverBase

ORIGIN_KEY = "fxq_origin"
QCONFIG_KEY = "fxq_qconfig"
ATTRIBUTE = "_fxq_provenance"
# set by a prepare pass that split a fused op: the op name whose output the node now holds (None: no op's whole)
HOLDS_KEY = "fxq_holds"
_CALLS = ("call_module", "call_function", "call_method")


def stamp(gm: fx.GraphModule, qconfigs: dict) -> None:
    """Stamp every op node with its own name and qconfig, every observer with the stamps of what it observes."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op not in _CALLS:
            continue
        if _passes_through(node, modules):
            source = node.args[0] if node.args else None
            if isinstance(source, fx.Node) and ORIGIN_KEY in source.meta:
                node.meta[ORIGIN_KEY], node.meta[QCONFIG_KEY] = source.meta[ORIGIN_KEY], source.meta[QCONFIG_KEY]
            continue
        qconfig = qconfigs.get(node.name)
        node.meta[ORIGIN_KEY] = node.meta.get(HOLDS_KEY, node.name)
        node.meta[QCONFIG_KEY] = qconfig.short() if qconfig is not None else None


def keep(gm: fx.GraphModule) -> None:
    """Store the stamps on ``gm`` (one ``(target, origin, qconfig)`` per node, in graph order)."""
    setattr(gm, ATTRIBUTE, [(target_name(n), n.meta.get(ORIGIN_KEY), n.meta.get(QCONFIG_KEY))
                            for n in gm.graph.nodes])


def provenance(gm: fx.GraphModule) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """Node name -> (origin op name, qconfig text), from node meta or from what :func:`keep` stored.

    Empty when ``gm`` has neither (not made by fxq's convert, or its graph was edited after convert: the stored
    list is used only when the graph still has the same targets in the same order).
    """
    nodes = list(gm.graph.nodes)
    if any(ORIGIN_KEY in n.meta for n in nodes):
        return {n.name: (n.meta.get(ORIGIN_KEY), n.meta.get(QCONFIG_KEY)) for n in nodes}
    kept = getattr(gm, ATTRIBUTE, None)
    if not kept or len(kept) != len(nodes) or any(target != target_name(n) for (target, _, _), n in zip(kept, nodes)):
        return {}
    return {n.name: (origin, qconfig) for n, (_, origin, qconfig) in zip(nodes, kept)}


def _passes_through(node: fx.Node, modules: dict) -> bool:
    """Observers (quantization and equalization ones) return their input: they hold the value of what they watch."""
    from fxq.equalization.observers import ChannelRangeObserver  # fxq.equalization imports the config: import late
    module = modules.get(node.target) if node.op == "call_module" else None
    return isinstance(module, (ObserverBase, ChannelRangeObserver))
