"""Give the observers of a module that declares its own quantizer tags (``fxq_qtags``) those tags.

A module, typically an observed custom module class, may declare (as a class or instance attribute)::

    fxq_qtags = {"input": "my_tag_hierarchy/my_tag/input", "output": "my_tag_hierarchy/my_tag/output"}

Its own input observers (tagged ``activation/input`` and read by it alone) then carry the ``input`` tag and its
output observers (on its output, or on the items of a tuple it returns) the ``output`` tag, so
``fxq.find_quantizers(prepared, "**/[qtag:my_tag_hierarchy/my_tag]")`` finds them. An observer it shares with
another op keeps the tag it has for that op. Each retagged observer also records its role
(``node.meta["fxq_qtag_role"]``), so mpath anchors it on the right op whatever the tag's last part says.
Requires: every observer in place. Guarantees: node tags only; the graph is unchanged.
Position: last in prepare, so a declared tag wins over the default ones the other passes give.

Before / after (node tags)::

    x -> obs0 [activation/input] -> custom -> obs1 [activation/output]
    x -> obs0 [my_tag_hierarchy/my_tag/input] -> custom -> obs1 [my_tag_hierarchy/my_tag/output]
"""
from __future__ import annotations

import operator
from typing import Any, Iterator

from torch import fx

from fxq.passes.context import PassContext, modules_of

QTAG_KEY = "fxq_qtag"  # the observer's tag (insert_observers writes it; fxq.mpath reads it)
QTAG_ROLE_KEY = "fxq_qtag_role"  # "input" / "output": which op a retagged observer belongs to (fxq.mpath reads it)
DECLARATION = "fxq_qtags"
ROLES = ("input", "output")


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    for node in gm.graph.nodes:
        declared = getattr(modules.get(node.target), DECLARATION, None) if node.op == "call_module" else None
        if declared is None:
            continue
        tags = _checked(declared, node, modules)
        for role, observers in (("input", _own_input_observers(node)), ("output", _output_observers(node))):
            if role not in tags:
                continue
            for observer in observers:
                observer.meta[QTAG_KEY], observer.meta[QTAG_ROLE_KEY] = tags[role], role
                ctx.count(f"{role} observers tagged")
    return gm


def _checked(declared: Any, node: fx.Node, modules: dict) -> dict:
    """The declaration, or a TypeError that names the module and shows the expected form."""
    valid = isinstance(declared, dict) and set(declared) <= set(ROLES) and all(
        isinstance(tag, str) and tag and all(tag.split("/")) for tag in declared.values())
    if not valid:
        owner = type(modules[node.target]).__name__
        raise TypeError(f"module '{node.target}' ({owner}) declares {DECLARATION} = {declared!r}; expected a dict "
                        f"with keys 'input' and/or 'output' and tag paths as values, e.g. {owner}.{DECLARATION} = "
                        f"{{'input': 'my_tags/{owner.lower()}/input', 'output': 'my_tags/{owner.lower()}/output'}}")
    return declared


def _is_observer(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and QTAG_KEY in node.meta


def _own_input_observers(node: fx.Node) -> Iterator[fx.Node]:
    for value in node.all_input_nodes:
        if _is_observer(value) and value.meta[QTAG_KEY] == "activation/input" and set(value.users) == {node}:
            yield value


def _output_observers(node: fx.Node) -> Iterator[fx.Node]:
    """Observers reading ``node``, or reading one item of the tuple it returns."""
    for user in node.users:
        if _is_observer(user):
            yield user
        elif user.op == "call_function" and user.target is operator.getitem:
            yield from (item_user for item_user in user.users if _is_observer(item_user))
