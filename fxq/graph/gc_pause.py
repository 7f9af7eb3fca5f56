"""Python's cyclic garbage collector paused while fxq builds graphs.

Tracing and the passes allocate tens of thousands of small container objects (nodes, modules, their dicts). Each
burst of allocations starts a collection that walks every live object, and the live set grows with the graph, so
the collector's share grows with model size: on a 4000-node chain it was a third of prepare_fx. Nothing the
passes build becomes garbage before they end; the cycles they leave are collected once the collector resumes.

    >>> import gc
    >>> from fxq.graph.gc_pause import collector_paused
    >>> with collector_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its previous state after (nesting is safe)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
