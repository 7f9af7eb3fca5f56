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
    modes: dict = field(default_factory=dict)  # node name -> fxq.graph.modes mode (None: float)
    chain_ends: dict = field(default_factory=dict)  # anchor name -> last node of a chain observed as one op
    prepare_config: Any = None
    # node name -> (float class swapped for an observed one, quantized input positions, quantized output paths)
    custom_modules: dict = field(default_factory=dict)
    standalone: dict = field(default_factory=dict)  # node name -> (input idxs, output idxs, child FxqState)
    # the graph's node names in order when prepare finished: torch.load re-traces the code and may rename nodes
    # (``relu_1`` -> ``relu``); the order stays, so get_state maps the names above back by position
    node_names: list = field(default_factory=list)
    engines: dict = field(default_factory=dict)  # node name -> quantized engine its weights are packed for

    def renamed(self, new_names: dict) -> "FxqState":
        """A copy with every node-name key (and chain end) replaced through ``new_names``."""
        def keys(table: dict) -> dict:
            return {new_names.get(name, name): value for name, value in table.items()}
        return FxqState(qconfigs=keys(self.qconfigs), modes=keys(self.modes),
                        chain_ends={new_names.get(a, a): new_names.get(b, b) for a, b in self.chain_ends.items()},
                        prepare_config=self.prepare_config, custom_modules=keys(self.custom_modules),
                        standalone=keys(self.standalone), node_names=[new_names.get(n, n) for n in self.node_names],
                        engines=keys(self.engines))


def get_state(gm: Any) -> Optional[FxqState]:
    state = getattr(gm, STATE_ATTRIBUTE, None)
    if state is None or not getattr(state, "node_names", None) or not isinstance(gm, fx.GraphModule):
        return state
    names = [node.name for node in gm.graph.nodes]
    if names == state.node_names or len(names) != len(state.node_names):
        return state
    return state.renamed(dict(zip(state.node_names, names)))


def set_state(gm: fx.GraphModule, state: FxqState) -> None:
    state.node_names = [node.name for node in gm.graph.nodes]
    setattr(gm, STATE_ATTRIBUTE, state)
    meta = getattr(gm, "meta", None)
    if isinstance(meta, dict):
        meta.setdefault(_PRESERVED_ON_DEEPCOPY, {})[STATE_ATTRIBUTE] = state


def clear_state(gm: fx.GraphModule) -> None:
    """Drop the state (a converted model has none: it is not an observed model any more)."""
    if hasattr(gm, STATE_ATTRIBUTE):
        delattr(gm, STATE_ATTRIBUTE)
    getattr(gm, "meta", {}).get(_PRESERVED_ON_DEEPCOPY, {}).pop(STATE_ATTRIBUTE, None)
