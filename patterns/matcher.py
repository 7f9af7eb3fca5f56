"""The one matcher every pattern table uses.

Grammar (written once, here)::

    Pattern ::= (OpSet, OpSet, ...)     a chain of nodes in data-flow order, anchored at the first
    OpSet   ::= Op | (Op, Op, ...)      any one of these ops
    Op      ::= a module class          matches call_module nodes whose module is exactly that class
              | a function              matches call_function nodes with that target (torch.add, F.relu)
              | "method_name"           matches call_method nodes (x.relu(), x.view(...))

Every node after the anchor must be the only user of the node before it and take it as its first argument;
otherwise the chain does not match (a fusion across a value with other users would change their inputs).

Rules are bucketed by the op of their anchor, so matching one node costs a dict lookup plus the few rules
anchored at that op: a pass that matches every node is linear in graph size. Longer patterns are tried first.

Example::

    >>> import torch
    >>> table = Table("fusion", [row(chain(torch.nn.Linear, torch.nn.ReLU), "fuse")])
    >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    >>> [n.name for n in table.match(list(gm.graph.nodes)[1], dict(gm.named_modules())).nodes]
    ['_0', '_1']
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from torch import fx, nn

Op = Union[type, Callable, str]
OpSet = Union[Op, tuple]


def op_of(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[Op]:
    """The op a node runs: its module's class, its function, or its method name (None for other node kinds)."""
    if node.op == "call_module":
        return type(modules[node.target])
    if node.op in ("call_function", "call_method"):
        return node.target
    return None


def op_name(op: Op) -> str:
    """A readable name for an op, for messages and dumps."""
    if isinstance(op, str):
        return f"Tensor.{op}"
    module = getattr(op, "__module__", None) or ""
    return f"{module}.{getattr(op, '__qualname__', getattr(op, '__name__', repr(op)))}".lstrip(".")


@dataclass
class Rule:
    """One row of a table: a pattern, what the table does with a match, and where the row was written."""

    pattern: tuple  # one tuple of alternative ops per position, in data-flow order
    action: Any
    name: str
    location: str

    def ops_at(self, position: int) -> tuple:
        return self.pattern[position]


def row(pattern: Union[OpSet, "Chain"], action: Any, name: Optional[str] = None) -> Rule:
    """Build a rule, remembering the caller's ``file:line`` so dumps and errors can point at the row.

    ``pattern`` is one OpSet (a single-node pattern) or ``chain(...)`` of OpSets.
    """
    opsets = pattern.opsets if isinstance(pattern, Chain) else (pattern,)
    positions = tuple(ops if isinstance(ops, tuple) else (ops,) for ops in opsets)
    caller = sys._getframe(1)
    location = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
    label = name or " -> ".join(_opset_name(p) for p in positions)
    return Rule(positions, action, label, location)


@dataclass(frozen=True)
class Chain:
    opsets: tuple


def chain(*opsets: OpSet) -> Chain:
    """A multi-node pattern in data-flow order: ``chain(nn.Conv2d, nn.BatchNorm2d, RELU)``."""
    return Chain(opsets)


def _opset_name(ops: tuple) -> str:
    return "|".join(op_name(op).rsplit(".", 1)[-1] for op in ops)


@dataclass
class Match:
    rule: Rule
    nodes: list = field(default_factory=list)

    @property
    def anchor(self) -> fx.Node:
        return self.nodes[0]

    @property
    def last(self) -> fx.Node:
        return self.nodes[-1]


class Table:
    """Rules of one kind (fusion, observation, lowering), bucketed by the op of their anchor."""

    def __init__(self, name: str, rules: Iterable[Rule] = ()):
        self.name = name
        self._buckets: dict[Any, list[Rule]] = defaultdict(list)
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> None:
        """Register a rule (public: this is how users teach fxq a new op). Later rules win over earlier ones."""
        for op in rule.ops_at(0):
            bucket = self._buckets[_key(op)]
            bucket.insert(0, rule)
            bucket.sort(key=lambda r: -len(r.pattern))  # stable: longest first, newest first among equals

    def rules_for(self, op: Op) -> list[Rule]:
        return self._buckets.get(_key(op), [])

    def match(self, node: fx.Node, modules: dict[str, nn.Module]) -> Optional[Match]:
        """The first rule whose whole chain matches starting at ``node``, longest pattern first."""
        op = op_of(node, modules)
        if op is None:
            return None
        for rule in self.rules_for(op):
            nodes = _match_chain(rule, node, modules)
            if nodes is not None:
                return Match(rule, nodes)
        return None

    def matches(self, node: fx.Node, modules: dict[str, nn.Module]) -> Iterator[Match]:
        """Every rule whose chain matches at ``node``, longest first: a rewrite that declines passes to the next."""
        op = op_of(node, modules)
        if op is None:
            return
        for rule in self.rules_for(op):
            nodes = _match_chain(rule, node, modules)
            if nodes is not None:
                yield Match(rule, nodes)

    def __contains__(self, op: Op) -> bool:
        return bool(self.rules_for(op))


def _key(op: Op) -> Any:
    return ("method", op) if isinstance(op, str) else op


def _match_chain(rule: Rule, anchor: fx.Node, modules: dict[str, nn.Module]) -> Optional[list]:
    nodes = [anchor]
    for position in range(1, len(rule.pattern)):
        previous = nodes[-1]
        if len(previous.users) != 1:
            return None
        (user,) = previous.users
        if not user.args or user.args[0] is not previous:
            return None
        if op_of(user, modules) not in rule.ops_at(position):
            return None
        nodes.append(user)
    return nodes
