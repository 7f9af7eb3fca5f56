"""A compiled query: a small NFA over path elements, built once per query.

Groups are expanded into alternatives, each alternative is a list of segments, and a state is a position in one
alternative. ``**`` is a state that loops on any element and may also be skipped. Matching a path is stepping
the set of live states element by element; callers memoise the state set of every module scope prefix, so a
search costs one step per distinct scope plus one per node: linear in (nodes x segments). Three facts keep the
constant small: a scope is never a path's last element (inner steps skip the query's last fragment), scopes equal
in what the live fragments read step alike (``reads``, ``following``), and a node whose op kind no last fragment
can match is skipped unread (``final_ops``).

>>> program = compile_query("a/**/[re:f.*]")
>>> program.matches_path(["a", "b", "fc"]), program.matches_path(["b", "fc"])
(True, False)
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Iterable, Optional, Sequence

from fxq.mpath.fragments import Element, fragment_reads
from fxq.mpath.parser import MANY, ONE, Group, Query, parse

__all__ = ["Program", "compile_query"]

_TEST, _ONE, _MANY, _END = 0, 1, 2, 3
_UNKNOWN = object()


def _expand(segments: Sequence) -> list[list]:
    """All flat segment lists a sequence with groups stands for."""
    choices = []
    for segment in segments:
        if isinstance(segment, Group):
            choices.append([flat for alternative in segment.alternatives for flat in _expand(alternative)])
        else:
            choices.append([[segment]])
    return [[s for part in combination for s in part] for combination in itertools.product(*choices)]


class Program:
    """The NFA of one query. ``anywhere=True`` lets the query match a suffix of the path (used by filter)."""

    def __init__(self, query: Query, anywhere: bool = False):
        self.query = query
        self.kinds: list[int] = []
        self.fragments: list = []
        for flat in _expand(query.segments):
            if anywhere and not query.rooted:
                flat = [MANY] + flat
            for segment in flat:
                kind = _MANY if segment == MANY else _ONE if segment == ONE else _TEST
                self.kinds.append(kind)
                self.fragments.append(None if kind != _TEST else segment)
            self.kinds.append(_END)
            self.fragments.append(None)
        self._closure = [self._close(state) for state in range(len(self.kinds))]
        # The closures without the accepting states: all an element that is not the path's last can lead to. A
        # scope is never the last element of a node path, so a query's last fragment is never tested on one.
        self._inner = [frozenset(s for s in closure if self.kinds[s] != _END) for closure in self._closure]
        starts = [0] + [i + 1 for i, kind in enumerate(self.kinds[:-1]) if kind == _END]
        self.start = frozenset().union(*(self._closure[s] for s in starts))
        self._final_tests: dict[frozenset, tuple] = {}
        self._reads: dict[frozenset, Optional[tuple]] = {}
        self._final_entries: dict[frozenset, tuple] = {}
        self._following: dict[frozenset, Optional[frozenset]] = {}
        self._verdicts: dict[tuple, dict] = {}  # final tests -> {module class: does a module call of it match}
        self.final_ops = self._final_ops()

    def _final_ops(self) -> Optional[frozenset]:
        """The node op kinds a path's last element can have for this query to accept it (fragments declare
        ``node_ops``); None when any op can (a trailing ``*`` or ``**``, or a fragment that does not say)."""
        ops: set = set()
        for state, kind in enumerate(self.kinds):
            if kind == _END or not any(self.kinds[s] == _END for s in self._closure[state + (kind != _MANY)]):
                continue  # this state cannot be the last one before accepting
            declared = getattr(self.fragments[state], "node_ops", None) if kind == _TEST else None
            if declared is None:
                return None
            ops.update(declared)
        return frozenset(ops)

    def _close(self, state: int) -> frozenset:
        closure = {state}
        while self.kinds[state] == _MANY:
            state += 1
            closure.add(state)
        return frozenset(closure)

    def step(self, states: frozenset, element: Element, inner: bool = False) -> frozenset:
        """The live states after consuming one element; ``inner``: more elements follow it (a scope, an observer's
        anchor), so only states that can still lead somewhere are kept and tests that can only accept are skipped."""
        closure = self._inner if inner else self._closure
        live: set = set()
        for state in states:
            kind = self.kinds[state]
            if kind == _MANY:
                live |= closure[state]  # ** consumes the element and may go on (its closure is already in states)
            elif kind == _ONE:
                live |= closure[state + 1]
            elif kind == _TEST and closure[state + 1] and self.fragments[state].matches(element):
                live |= closure[state + 1]
        return frozenset(live)

    def reads(self, states: frozenset) -> Optional[tuple]:
        """The Element fields the next inner step from ``states`` depends on (sorted), or None if a fragment does not
        say.

        Two elements equal in these fields step to the same states, so callers share one step between module
        scopes that look alike (every ``attn`` under ``layers.N`` for ``**/attn/...``). Memoised per state set.
        """
        if states not in self._reads:
            fields: Optional[set] = set()
            for state in states:
                if self.kinds[state] == _TEST and self._inner[state + 1]:
                    declared = fragment_reads(self.fragments[state])
                    if declared is None:
                        fields = None
                        break
                    fields.update(declared)
            self._reads[states] = None if fields is None else tuple(sorted(fields))
        return self._reads[states]

    def following(self, states: frozenset) -> Optional[frozenset]:
        """The states after any scope (an inner element without a node) when no live test reads the element's name,
        module, recorded type or tag; None when one does. Memoised per state set."""
        following = self._following.get(states, _UNKNOWN)
        if following is _UNKNOWN:
            fields = self.reads(states)
            constant = fields is not None and set(fields) <= {"node"}  # scopes have no node: all alike
            following = self._following[states] = self.step(states, Element(""), inner=True) if constant else None
        return following

    def accepts(self, states: frozenset) -> bool:
        return any(self.kinds[state] == _END for state in states)

    def final_tests(self, states: frozenset) -> tuple:
        """The fragments of which one must match the last element for the path to be accepted (True: any does).

        Memoised per state set: a node's last step only needs these, not a full step.
        """
        tests = self._final_tests.get(states)
        if tests is None:
            found = []
            for state in states:
                kind = self.kinds[state]
                if kind == _MANY and _END_IN(self, state) or kind == _ONE and _END_IN(self, state + 1):
                    found = [True]
                    break
                if kind == _TEST and _END_IN(self, state + 1):
                    found.append(self.fragments[state])
            tests = self._final_tests[states] = tuple(found)
        return tests

    def final_entry(self, states: frozenset) -> tuple:
        """What a node whose scope ends in ``states`` must pass: (final tests, the node op kinds they can match or
        None for any, whether a module call's answer depends only on its module's class, the answers so far by
        class). Fragments may declare ``node_ops`` and ``reads``; memoised per state set."""
        entry = self._final_entries.get(states)
        if entry is None:
            tests = self.final_tests(states)
            kinds: Optional[set] = set()
            fields: set = set()
            for test in tests:
                declared = None if test is True else getattr(test, "node_ops", None)
                if declared is None:
                    kinds = None
                    break
                kinds.update(declared)
                fields.update(fragment_reads(test) or ("node",))
            by_class = kinds is not None and bool(tests) and fields <= {"module_class", "type_name"}
            entry = self._final_entries[states] = (tests, kinds, by_class, self._verdicts.setdefault(tests, {}))
        return entry

    def accepts_last(self, states: frozenset, element: Element) -> bool:
        return any(test is True or test.matches(element) for test in self.final_tests(states))

    def matches_path(self, names: Iterable) -> bool:
        """Match a path given as names or Elements (convenience for tests and small trees)."""
        states = self.start
        for item in names:
            states = self.step(states, item if isinstance(item, Element) else Element(item))
        return self.accepts(states)


def _END_IN(program: Program, state: int) -> bool:
    return any(program.kinds[s] == _END for s in program._closure[state])


@lru_cache(maxsize=256)
def compile_query(text: str, anywhere: bool = False) -> Program:
    """Parse and compile once; the same text returns the same Program (fragments are stateless or memoising)."""
    return Program(parse(text), anywhere)
