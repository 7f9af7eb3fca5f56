"""Static linears whose rows one scale cannot hold get activations quantized per token, per call.

For an input observer of the transformer mapping (fxq.observers.row_checked.RowCheckedHistogramObserver) whose
every user is a static linear reading it as its input, ask :func:`per_token_wins`: where the rows' different sizes
alone make a scale per row worth 1.5 dB or more (GPT-2's attention output projections: the first tokens' context
vectors are whole value vectors, the later ones averages), the observer goes and each linear switches to
dynamic mode with per-token activations and its own weight observer (an int8 kernel still: fxq.nn.plain's
DynamicLinear). The linear's output observer goes too when no static op reads it. Counted in the pass statistics.
Requires: a calibrated graph. Guarantees: switched linears are in dynamic mode with no input observer.
Position: convert, after smooth and equalize (which rebuild the observers they touch), before to_reference.

Before / after::

    ctx -> obs(row-checked) -> linear(static) -> obs -> add
    ctx -> linear(dynamic, per token) -> add
"""
from __future__ import annotations

import dataclasses

from torch import fx, nn

from fxq.config.qconfig import QConfig, per_token_dynamic_qconfig
from fxq.equalization import graph as eqg
from fxq.graph.modes import DYNAMIC, STATIC
from fxq.observers.row_checked import RowCheckedHistogramObserver, per_token_wins
from fxq.passes.context import PassContext, delete_unused_submodules, modules_of
from fxq.patterns.ops import LINEAR_FUNCTIONS


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    modules = modules_of(gm)
    switched = False
    for node in list(gm.graph.nodes):
        observer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(observer, RowCheckedHistogramObserver):
            continue
        linears = list(node.users)
        if not linears or not all(_static_linear_input(user, node, modules, ctx) for user in linears):
            continue
        if not per_token_wins(observer):
            continue
        if not switched:  # the state is the prepared model's: switch modes in a copy, so a second convert is alike
            ctx.state = dataclasses.replace(ctx.state, qconfigs=dict(ctx.state.qconfigs), modes=dict(ctx.state.modes))
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        for linear in linears:
            _to_per_token(gm, linear, modules, ctx)
        ctx.count("linears given per-token activations", len(linears))
        switched = True
    if switched:
        delete_unused_submodules(gm)
    return gm


def _static_linear_input(user: fx.Node, observed: fx.Node, modules: dict, ctx: PassContext) -> bool:
    """``user`` is a static-mode linear (module or function) whose input, and nothing else, is ``observed``."""
    if ctx.state.modes.get(user.name) != STATIC or not user.args or user.args[0] is not observed:
        return False
    if observed in user.args[1:] or observed in user.kwargs.values():
        return False
    if user.op == "call_module":
        return type(modules[user.target]) is nn.Linear
    return user.op == "call_function" and user.target in LINEAR_FUNCTIONS


def _to_per_token(gm: fx.GraphModule, linear: fx.Node, modules: dict, ctx: PassContext) -> None:
    qconfig = ctx.state.qconfigs[linear.name]
    ctx.state.qconfigs[linear.name] = QConfig(per_token_dynamic_qconfig.activation, qconfig.weight)
    ctx.state.modes[linear.name] = DYNAMIC
    for user in list(linear.users):  # its output observer: float now, unless a static op reads it as its input
        if eqg.is_observer(user, modules) and not any(ctx.state.modes.get(reader.name) == STATIC
                                                   for reader in user.users):
            user.replace_all_uses_with(linear)
            gm.graph.erase_node(user)

