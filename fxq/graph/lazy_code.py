"""GraphModules whose Python code is generated once, when prepare is done with the graph.

``fx.GraphModule`` generates and compiles Python for its graph as soon as it is built. prepare rewrites the
traced graph in every pass and regenerates the code at the end, so that first generation is wasted: on a
4000-node chain it was a tenth of prepare_fx. torch's ``_LazyGraphModule`` defers generation until the code or
``forward`` is first used (a pass that runs the model mid-pipeline still gets current code); ``make_eager``
turns it into a plain GraphModule with fresh code, so users get an ordinary GraphModule (deepcopy,
``torch.jit.script`` and pickling behave as ever). Where torch has no ``_LazyGraphModule``, modules are plain.

    >>> import torch
    >>> traced = torch.fx.symbolic_trace(torch.nn.ReLU())
    >>> gm = make_eager(graph_module(traced, traced.graph, "Net", lazy=True))
    >>> type(gm).__name__, isinstance(gm, torch.fx.GraphModule), gm(torch.tensor([-1.0, 2.0]))
    ('Net', True, tensor([0., 2.]))
"""
from __future__ import annotations

from torch import fx, nn

try:
    from torch.fx._lazy_graph_module import _LazyGraphModule
except ImportError:  # a torch without it: every module is plain
    _LazyGraphModule = None

__all__ = ["graph_module", "make_eager"]


def graph_module(root: nn.Module, graph: fx.Graph, class_name: str, lazy: bool) -> fx.GraphModule:
    """``fx.GraphModule(root, graph, class_name)``; with ``lazy``, its code is generated on first use only."""
    cls = _LazyGraphModule if lazy and _LazyGraphModule is not None else fx.GraphModule
    return cls(root, graph, class_name)


def make_eager(gm: fx.GraphModule) -> fx.GraphModule:
    """Regenerate ``gm``'s code from its graph, as a plain GraphModule (the same object)."""
    if _LazyGraphModule is not None and isinstance(gm, _LazyGraphModule):
        # GraphModule gives every instance its own class, named GraphModuleImpl, to hold its forward; swap in a
        # plain one of the same kind, so later copies (which skip GraphModuleImpl classes) build plain modules.
        eager = type("GraphModuleImpl", (fx.GraphModule,), {})
        eager.__name__ = type(gm).__name__
        gm.__class__ = eager
    gm.recompile()
    return gm
