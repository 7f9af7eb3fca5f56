"""The fxq state of an observed model: everything convert_fx needs, kept in one place on the GraphModule.

It is a plain attribute (``gm._fxq_state``), so it survives ``torch.save`` of the observed model (torch.fx
regenerates node metadata on load, so nothing convert needs lives there). GraphModule's ``__deepcopy__``
rebuilds the module and keeps only the attributes listed in ``gm.meta["_user_preserved_attributes"]``, so
the state is listed there too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import fx

STATE_ATTRIBUTE = "_fxq_state"
_PRESERVED_ON_DEEPCOPY = "_user_preserved_attributes"  # torch.fx.graph_module's key in GraphModule.meta


@dataclass
class FxqState:
    """``qconfigs``: node name -> QConfig (None: float); ``modes``: node name -> mode;
    ``prepare_config``: the PrepareCustomConfig used."""

    qconfigs: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)  # node name -> fxq.modes mode (None: float)
    chain_ends: dict = field(default_factory=dict)  # anchor name -> last node of a chain observed as one op
    prepare_config: Any = None
    # node name -> (float class swapped for an observed one, quantized input positions, quantized output paths)
    custom_modules: dict = field(default_factory=dict)
    standalone: dict = field(default_factory=dict)  # node name -> (input idxs, output idxs, child FxqState)


def get_state(gm: Any) -> Optional[FxqState]:
    return getattr(gm, STATE_ATTRIBUTE, None)


def set_state(gm: fx.GraphModule, state: FxqState) -> None:
    setattr(gm, STATE_ATTRIBUTE, state)
    meta = getattr(gm, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault(_PRESERVED_ON_DEEPCOPY, {})[STATE_ATTRIBUTE] = state


def clear_state(gm: fx.GraphModule) -> None:
    """Drop the state (a converted model has none: it is not an observed model any more)."""
    if hasattr(gm, STATE_ATTRIBUTE):
        delattr(gm, STATE_ATTRIBUTE)
    getattr(gm, "meta", {}).get(_PRESERVED_ON_DEEPCOPY, {}).pop(STATE_ATTRIBUTE, None)
