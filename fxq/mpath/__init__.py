"""mpath: select graph nodes (or modules) with path queries such as ``encoder/**/[cls:torch.nn.Linear]``.

A query is segments separated by ``/``, matched from the root of the model:

==========================  ==============================================================================
``name``                    the module attribute (or node) with that name
``*`` / ``**``              exactly one level / zero or more levels
``[cls:torch.nn.Linear]``   an instance of the class (also ``[class:...]``)
``[re:layer[12\\]]``         the name fully matches the regex (``\\]`` is a literal ``]``; also ``[regex:...]``)
``~test``                   the element does not match ``test``
``[op:call_function]``      an fx node of that op kind
``[target:torch.matmul]``   a node calling that function (a bare name: that method or function name)
``[qtag:activation/output]``  an observer whose quantizer tag starts with that tag path (also ``[quantizer:]``)
``{a/b, c}``                any one of the alternatives
==========================  ==============================================================================

Over a GraphModule a node's path is its module scope followed by the node (see :mod:`fxq.mpath.index`); over a
plain module tree it is the module path. Results come in graph order (named_modules order for a module tree).

>>> import torch, fxq
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> fxq.mpath.search("**/[cls:torch.nn.Linear]", fxq.graph.tracer.trace(model)).names
['_0', '_2']
"""
from __future__ import annotations

from torch import fx, nn

from fxq.mpath.collection import Match, NodeCollection, QuantizerCollection
from fxq.mpath.errors import MPathError
from fxq.mpath.fragments import Element, register_fragment
from fxq.mpath.index import QTAG_KEY, index_of
from fxq.mpath.program import Program, compile_query

__all__ = ["search", "find_quantizers", "matches", "compile", "register_fragment", "MPathError", "NodeCollection",
           "QuantizerCollection", "Match", "Element", "Program"]


def compile(query: str) -> Program:  # noqa: A001 - mirrors re.compile
    """Parse and compile ``query`` once (cached by text); raises :class:`MPathError` with a caret on error."""
    return compile_query(query)


def search(query: str, model: nn.Module) -> NodeCollection:
    """The nodes of a GraphModule (or modules of a plain module tree) whose path matches ``query``.

    >>> import torch, fxq
    >>> tree = torch.nn.ModuleDict({"a": torch.nn.ModuleDict({"fc": torch.nn.Linear(2, 2)})})
    >>> fxq.mpath.search("**/[cls:torch.nn.Linear]", tree)
    NodeCollection([<0: a.fc: Linear>])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxq.mpath.search(query, model): model must be an nn.Module or GraphModule, "
                        f"got {type(model).__name__}")
    index = index_of(model)
    return NodeCollection(index, index.match(compile_query(query)))


def find_quantizers(model: fx.GraphModule, query: str) -> QuantizerCollection:
    """The observer nodes of a prepared model matching ``query`` (nodes without a quantizer tag are dropped).

    >>> # fxq.find_quantizers(prepared, "**/[cls:torch.nn.Linear]/[qtag:activation/output]").initialize(
    >>> #     fxq.observers.HistogramObserver, dtype=torch.quint8)
    """
    if not isinstance(model, fx.GraphModule):
        raise TypeError("fxq.find_quantizers(model, query): model must be a prepared GraphModule "
                        f"(from fxq.prepare_fx), got {type(model).__name__}")
    index = index_of(model)
    found = [node for node in index.match(compile_query(query)) if QTAG_KEY in node.meta]
    return QuantizerCollection(index, found)


def matches(query: str, gm: fx.GraphModule) -> set[str]:
    """The names of the nodes of ``gm`` that ``query`` selects: the helper configs use to accept queries.

    >>> import torch, fxq
    >>> fxq.mpath.matches("[op:placeholder]", fxq.graph.tracer.trace(torch.nn.ReLU()))
    {'input_1'}
    """
    return set(search(query, gm).names)
