"""Pattern tables (fusion, observation, lowering) and the matcher they share.

Teaching fxq a new op from outside the package (the job PyTorch AO's BackendConfig does) is one call::

    import fxq.patterns as patterns
    patterns.register_op(MySwish, observe=patterns.Observe("own"), lower=MyQuantizedSwish)

``observe`` says how calibration observes the op (``Observe("own")``: inputs and output get observers;
``Observe("shared")``: the output keeps the input's qparams; ``Observe("fixed", fixed=(scale, zero_point))``).
``lower`` is a quantized module class with ``from_float(float_module, scale, zero_point)`` (for a module op),
a kernel ``kernel(q, *extra, scale, zero_point)`` (for a function op), or a rewrite ``(lowering, match) -> bool``
as the rows of patterns/lowering.py are. Registered module classes become tracer leaves.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from torch import nn

from fxq.patterns.matcher import Match, Rule, Table, chain, row
from fxq.patterns.observation import FIXED, OBSERVATION, OWN, SHARED, Observe

__all__ = ["register_op", "Observe", "OWN", "SHARED", "FIXED", "Table", "Rule", "Match", "row", "chain",
           "OBSERVATION", "lowering_table", "fusion_table"]


def lowering_table() -> Table:
    from fxq.patterns.lowering import LOWERING
    return LOWERING


def fusion_table() -> Table:
    from fxq.patterns.fusion import FUSION
    return FUSION


def register_op(op: Any, observe: Optional[Observe] = None, lower: Any = None) -> None:
    """Observe and lower ``op`` (a module class, a function, or a method name) with no edit to fxq.

    >>> import torch
    >>> class Square(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x * x
    >>> register_op(Square, observe=Observe(OWN))       # observed; stays float between dequantize/quantize
    """
    from fxq.patterns.lowering import module_from_float, unary
    from fxq.graph.tracer import REGISTERED_LEAF_CLASSES

    if isinstance(op, type) and issubclass(op, nn.Module):
        REGISTERED_LEAF_CLASSES.add(op)
    if observe is not None:
        OBSERVATION.add(row(op, observe, name=_name(op)))
    if lower is None:
        return
    if isinstance(lower, type):
        rewrite = module_from_float(lower)
    elif _is_rewrite(lower):
        rewrite = lower
    else:
        rewrite = unary(lower)
    lowering_table().add(row(op, rewrite, name=_name(op)))


def _is_rewrite(fn: Callable) -> bool:
    try:
        return list(inspect.signature(fn).parameters)[:2] == ["low", "match"] or \
            list(inspect.signature(fn).parameters)[:2] == ["lowering", "match"]
    except (TypeError, ValueError):  # builtins (torch.ops kernels) have no inspectable signature
        return False


def _name(op: Any) -> str:
    return getattr(op, "__qualname__", getattr(op, "__name__", str(op)))
