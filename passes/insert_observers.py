"""Insert observers on the inputs and outputs of quantizable ops, as patterns/observation.py says.

Requires: ``ctx.state.qconfigs`` (assign_qconfig) and recorded values (record_values).
Guarantees: every quantized value flows through a ``call_module`` node of an observer registered as
``activation_post_process_<n>``; ops that share their input's qparams (max pool, reshape, cat, ...) call the
same observer instance as their input; functional linear/conv weights go through a weight observer.
Every observer node carries ``node.meta["fxq_qtag"]``: "activation/input", "activation/output" or
"parameter/weight".
Position: last in prepare.

Before / after::

    x -> linear -> relu -> out      x -> obs0 -> linear -> obs1 -> relu -> obs1' -> out   (obs1' is obs1 again)
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from torch import fx

from fxq.graph.modes import STATIC
from fxq.observers import FixedQParamsFakeQuantize, FixedQParamsObserver
from fxq.passes.context import PassContext, modules_of
from fxq.passes.record_values import is_float_tensor
from fxq.patterns.observation import FIXED, OBSERVATION, OWN, SHARED, Observe
from fxq.graph.tracer import scope_of

OBSERVER_PREFIX = "activation_post_process_"
# Why an observer node was inserted, as a hierarchical quantizer tag mpath's [qtag:...] selects on.
QTAG_KEY = "fxq_qtag"


def _scope_path(node: fx.Node) -> str:
    return scope_of(node).path or "<root>"


class _Inserter:
    """Observer bookkeeping for one pass over one graph."""

    def __init__(self, gm: fx.GraphModule, ctx: PassContext):
        self.gm, self.ctx = gm, ctx
        self.modules = modules_of(gm)
        self.graph = gm.graph
        self.observer_nodes: set = set()
        self.input_observers: dict = {}  # (value node, activation constructor id) -> observer node
        self.shared_with: dict = {}  # observer name -> name of the observer it shares (union-find parent)
        self.next_index = 0

    def new_observer(self, constructor: Any, after: fx.Node, tag: str) -> fx.Node:
        name = f"{OBSERVER_PREFIX}{self.next_index}"
        self.next_index += 1
        observer = constructor()
        # where it sits, for its own messages (a NaN in calibration names the observer, the node and the module)
        observer.__dict__["fxq_site"] = f"observer '{name}' on node '{after.name}' (module '{_scope_path(after)}')"
        self.gm.add_submodule(name, observer)
        return self.observer_call(name, after, tag)

    def observer_call(self, name: str, after: fx.Node, tag: str) -> fx.Node:
        with self.graph.inserting_after(after):
            node = self.graph.call_module(name, (after,))
        node.meta.update({k: v for k, v in after.meta.items() if k in ("fxq_scope", "fxq_value")})
        node.meta[QTAG_KEY] = tag
        self.observer_nodes.add(node)
        return node

    def root(self, name: str) -> str:
        while self.shared_with.get(name, name) != name:
            name = self.shared_with[name]
        return name

    # ---- inputs ----

    def observe_input(self, user: fx.Node, value: Any, constructor: Any) -> Optional[fx.Node]:
        """Make ``user`` read ``value`` through an observer; returns the observer node (None for non-tensors)."""
        if value in self.observer_nodes:
            return value
        if not is_float_tensor(value):
            return None
        key = (value, id(constructor))
        if key not in self.input_observers:
            self.input_observers[key] = self.new_observer(constructor, value, "activation/input")
            self.ctx.count("input observers")
        observer = self.input_observers[key]
        user.replace_input_with(value, observer)
        return observer

    def input_values(self, node: fx.Node, positions: tuple) -> list:
        values = []
        for position in positions:
            arg = node.args[position] if position < len(node.args) else None
            values.extend(arg if isinstance(arg, (list, tuple)) else [arg])
        return values

    # ---- outputs ----

    def observe_output(self, node: fx.Node, observer: fx.Node) -> None:
        node.replace_all_uses_with(observer, delete_user_cb=lambda user: user is not observer)

    def finish(self) -> None:
        """Point every observer node at the representative of its sharing group; drop the unused observers."""
        for node in self.observer_nodes:
            node.target = self.root(node.target)
        for name in {name for name in self.shared_with if self.root(name) != name}:
            delattr(self.gm, name)
        calls = Counter(node.target for node in self.observer_nodes)
        for name, count in calls.items():  # a shared observer runs several times a batch: its messages count batches
            self.gm.get_submodule(name).__dict__["fxq_calls_per_batch"] = count


def run(gm: fx.GraphModule, ctx: PassContext) -> fx.GraphModule:
    inserter = _Inserter(gm, ctx)
    modules = inserter.modules
    absorbed: set = set()  # trailing nodes of a matched chain (the relu of add -> relu)
    for node in list(gm.graph.nodes):
        qconfig = ctx.state.qconfigs.get(node.name)
        if ctx.state.modes.get(node.name) != STATIC or node in absorbed or node in inserter.observer_nodes:
            continue
        match = next((m for m in OBSERVATION.matches(node, modules) if m.rule.action.accepts(m.nodes, modules)), None)
        if match is None or not is_float_tensor(match.last):
            continue
        absorbed.update(match.nodes[1:])
        if len(match.nodes) > 1:
            ctx.state.chain_ends[node.name] = match.last.name
        observe: Observe = match.rule.action
        if observe.kind == SHARED:
            _observe_shared(inserter, node, match.last, qconfig, observe)
        else:
            _observe_own(inserter, node, match.last, qconfig, observe)
    inserter.finish()
    return gm


def _observe_own(inserter: _Inserter, node: fx.Node, last: fx.Node, qconfig, observe: Observe) -> None:
    for value in inserter.input_values(node, observe.inputs):
        if observe.quantize_float_inputs or value in inserter.observer_nodes:
            inserter.observe_input(node, value, qconfig.activation)
    if observe.weight is not None and observe.weight < len(node.args):
        weight = node.args[observe.weight]
        if is_float_tensor(weight):
            observer = inserter.new_observer(qconfig.weight, weight, "parameter/weight")
            node.replace_input_with(weight, observer)
            inserter.ctx.count("weight observers")
    constructor = qconfig.activation
    if observe.kind == FIXED:
        scale, zero_point = observe.fixed
        constructor = FixedQParamsObserver.with_args(scale=scale, zero_point=zero_point)
        if inserter.ctx.qat:  # trained with the fixed range applied, as it will be at convert
            constructor = FixedQParamsFakeQuantize.with_args(observer=constructor)
    inserter.observe_output(last, inserter.new_observer(constructor, last, "activation/output"))
    inserter.ctx.count("output observers")


def _observe_shared(inserter: _Inserter, node: fx.Node, last: fx.Node, qconfig, observe: Observe) -> None:
    """The output (and, for cat, every input) uses the first observed input's observer instance."""
    values = [v for v in inserter.input_values(node, observe.inputs) if isinstance(v, fx.Node)]
    observed = [v for v in values if v in inserter.observer_nodes]
    # a fixed-range observer (a sigmoid's [0, 1)) cannot stand for the other inputs of a cat: they would be clipped
    first = next((v for v in observed if not _is_fixed(inserter, v)), None)
    unobserved = [v for v in values if v not in inserter.observer_nodes]
    if first is None and observed and unobserved:
        first = inserter.observe_input(node, unobserved[0], qconfig.activation)
    first = first or next(iter(observed), None)
    if first is None and len(values) == 1 and _quantized_elsewhere(inserter, node, values[0], last):
        first = inserter.observe_input(node, values[0], qconfig.activation)
    if first is None:
        return  # the input is float: so is this op
    for value in values:
        observer = inserter.observe_input(node, value, qconfig.activation)
        if observer is not None and observer is not first:
            inserter.shared_with[inserter.root(observer.target)] = inserter.root(first.target)
    inserter.observe_output(last, inserter.observer_call(first.target, last, "activation/output"))
    inserter.ctx.count("shared observers")


def _is_fixed(inserter: _Inserter, observer_node: fx.Node) -> bool:
    """Whether the observer (or fake quantizer) behind ``observer_node`` has fixed qparams."""
    module = inserter.gm.get_submodule(observer_node.target)  # added by this pass: not in inserter.modules
    return isinstance(module, (FixedQParamsObserver, FixedQParamsFakeQuantize))


def _quantized_elsewhere(inserter: _Inserter, node: fx.Node, value: fx.Node, last: fx.Node) -> bool:
    """True when another reader of the float ``value`` quantizes it anyway and a reader of ``node``'s output
    (``last``) would quantize that too, as around the pool of a squeeze-excite block after a float SiLU: quantizing
    ``value`` once for both keeps ``node`` int8 and saves the quantize after it. When ``node``'s readers stay float,
    ``node`` does too: an int8 detour would only add a rounding. Looks only at direct readers, so it stays linear."""
    quantized_by_another = any(
        user is not node and (user in inserter.observer_nodes or _quantizes_float_input(inserter, user, value))
        for user in value.users)
    return quantized_by_another and any(_quantizes_float_input(inserter, user, last) for user in last.users)


def _quantizes_float_input(inserter: _Inserter, user: fx.Node, value: fx.Node) -> bool:
    if inserter.ctx.state.modes.get(user.name) != STATIC:
        return False
    match = next((m for m in OBSERVATION.matches(user, inserter.modules)
                  if m.rule.action.accepts(m.nodes, inserter.modules)), None)
    if match is None:
        return False
    observe = match.rule.action
    return observe.kind == OWN and observe.quantize_float_inputs and value in inserter.input_values(user, observe.inputs)
