"""The tensors going into and coming out of a leaf module, counted flat through nested tuples and lists.

A custom module may take and return nested tuples, as nn.LSTM does: ``lstm(x, (h0, c0)) -> (output, (h, c))``.
Its ``input_quantized_idxs`` / ``output_quantized_idxs`` count the leaves of those structures in order: inputs
0, 1, 2 are x, h0, c0 and outputs 0, 1, 2 are output, h, c. An output leaf is named by its *path*, the indexes
that reach it (``(1, 0)`` is h); a module returning one tensor has the single path ``()``.
Not a pass: observe_custom_modules and quantize_custom_modules import it.

``unpack_output`` rewrites the graph so each output leaf is one ``getitem`` chain right after the module that
every reader reads through the leaf's observer, and readers of the whole result or of a sub-tuple read a tuple
rebuilt from the observed leaves::

    lstm -> getitem(0) -> fc              lstm -> getitem(0) -> obs0 -> fc
         -> getitem(1) -> output               -> getitem(1) -> getitem(0) -> obs1 -> tuple -> output
                                                             -> getitem(1) -> obs2 /
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Optional

from torch import fx

from fxq.passes.record_values import VALUE_KEY, Value, value_of

Path = tuple  # indexes from a leaf module's result down to one value in it
_SEQUENCES = ("tuple", "list")  # opened; other results (a namedtuple, a dict) are one leaf


def flat_args(args: Any) -> list:
    """The leaves of nested tuple / list arguments, in order."""
    if isinstance(args, (tuple, list)):
        return [leaf for arg in args for leaf in flat_args(arg)]
    return [args]


def map_flat_args(args: tuple, replace: Callable[[int, Any], Any]) -> tuple:
    """``args`` with leaf ``i`` replaced by ``replace(i, leaf)``. Position-exact: Node.replace_input_with would
    also replace a second use of the same node at a position that should stay as it is."""
    positions = iter(range(len(flat_args(args))))

    def rebuild(arg: Any) -> Any:
        if isinstance(arg, (tuple, list)):
            return type(arg)(rebuild(item) for item in arg)
        return replace(next(positions), arg)
    return tuple(rebuild(arg) for arg in args)


def output_paths(value: Value, path: Path = ()) -> list[tuple[Path, Value]]:
    """(path, value) of every leaf of a recorded result, in flat order."""
    if _is_sequence(value):
        return [leaf for index, item in enumerate(value.items) for leaf in output_paths(item, path + (index,))]
    return [(path, value)]


def unpack_output(gm: fx.GraphModule, node: fx.Node, paths: set, observe: Callable[[fx.Node], fx.Node]) -> int:
    """Make every reader of the leaves of ``node``'s result at ``paths`` read them through ``observe(leaf)`` (which
    returns the leaf's observer node with all the leaf's readers moved onto it). Returns how many were observed."""
    value = value_of(node)
    chain, cursor = _canonical_chain(gm, node, value)
    made = set(chain.values())
    read = {path for path, at in chain.items() if any(user not in made for user in at.users)}
    observed = {}
    for path in sorted(paths):  # sorted paths are in flat order
        if path not in chain or not any(path[:length] in read for length in range(len(path) + 1)):
            continue  # nothing reads the leaf, alone or inside a (sub-)tuple
        observed[path] = observe(chain[path])
        cursor.append(observed[path])  # a reused observer may sit further down; a rebuilt tuple reads it here
        cursor = observed[path]
    _rebuild_for_readers(gm, chain, observed, value, cursor)
    for created in reversed(list(chain.values())):
        if created is not node and not created.users:
            gm.graph.erase_node(created)
    return len(observed)


def leaf_node(node: fx.Node, path: Path) -> Optional[fx.Node]:
    """The node of ``path``'s leaf after unpack_output (None when nothing reads that leaf)."""
    for index in path:
        node = next((u for u in node.users if _is_getitem(u, node) and u.args[1] == index), None)
        if node is None:
            return None
    return node


def _canonical_chain(gm: fx.GraphModule, node: fx.Node, value: Value) -> tuple[dict, fx.Node]:
    """One getitem per path in a block right after ``node`` (the user's own ``result[i]`` nodes are folded into
    them); returns path -> node and the block's last node."""
    chain, cursor = {(): node}, node
    for path, item in _interior(value):  # parents before their children
        parent = chain[path]
        for index, child_value in enumerate(item.items):
            with gm.graph.inserting_after(cursor):
                child = gm.graph.call_function(operator.getitem, (parent, index))
            child.meta.update({k: v for k, v in node.meta.items() if k == "fxq_scope"})
            child.meta[VALUE_KEY] = child_value
            for user in [u for u in parent.users if u is not child and _index_of(u, parent, item) == index]:
                user.replace_all_uses_with(child)
                gm.graph.erase_node(user)
            chain[path + (index,)] = cursor = child
    return chain, cursor


def _rebuild_for_readers(gm: fx.GraphModule, chain: dict, observed: dict, value: Value, cursor: fx.Node) -> None:
    """Readers of a whole (sub-)result holding an observed leaf read a tuple of what they should see instead."""
    rebuilt: dict = {}

    def build(path: Path, item: Value) -> fx.Node:
        nonlocal cursor
        if path in observed or not _holds_observed(path, observed):
            return observed.get(path, chain.get(path))
        if path not in rebuilt:
            parts = [build(path + (index,), child) for index, child in enumerate(item.items)]
            with gm.graph.inserting_after(cursor):
                rebuilt[path] = cursor = gm.graph.call_function(list if item.type_name == "list" else tuple,
                                                                (parts,))
        return rebuilt[path]

    made = set(chain.values())
    for path, item in _interior(value):
        readers = [u for u in chain[path].users if u not in made and u not in rebuilt.values()]
        if readers and _holds_observed(path, observed):
            replacement = build(path, item)
            for reader in readers:
                reader.replace_input_with(chain[path], replacement)


def _holds_observed(path: Path, observed: dict) -> bool:
    return any(leaf[:len(path)] == path for leaf in observed)


def _interior(value: Value, path: Path = ()) -> list[tuple[Path, Value]]:
    """(path, value) of every tuple / list in a recorded result, parents first."""
    if not _is_sequence(value):
        return []
    return [(path, value)] + [p for i, item in enumerate(value.items) for p in _interior(item, path + (i,))]


def _is_sequence(value: Value) -> bool:
    return value.type_name in _SEQUENCES and value.items is not None


def _index_of(user: fx.Node, parent: fx.Node, parent_value: Value) -> Optional[int]:
    """``i`` for a reader ``parent[i]`` with a constant int index (a negative one counted from the end)."""
    if not _is_getitem(user, parent) or not isinstance(user.args[1], int):
        return None
    size = len(parent_value.items)
    return user.args[1] % size if -size <= user.args[1] < size else None


def _is_getitem(user: fx.Node, parent: fx.Node) -> bool:
    return (user.op == "call_function" and user.target is operator.getitem and len(user.args) == 2
            and user.args[0] is parent)
