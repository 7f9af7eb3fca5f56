"""Parse a query string into segments.

Grammar (whitespace is allowed after ``{``, around ``,`` and before ``}``, and after the ``:`` in brackets)::

    query     ::= "/"? sequence
    sequence  ::= segment ("/" segment)*
    segment   ::= "**" | "*" | "~"* test | "{" sequence ("," sequence)* "}"
    test      ::= NAME | "[" KIND ":" ARGUMENT "]"        ("\\]" inside ARGUMENT is a literal "]")
    NAME      ::= any characters except / [ ] { } , ~ * and whitespace

>>> parse("encoder/**/[cls: torch.nn.Linear]").segments[1]
'**'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from fxq.mpath.errors import MPathError
from fxq.mpath.fragments import NameFragment, NotFragment, build_fragment, fragment_kinds

__all__ = ["Query", "Group", "parse", "ONE", "MANY"]

ONE, MANY = "*", "**"
_SPECIAL = set("/[]{},~*")


@dataclass(frozen=True)
class Group:
    """``{a/b, c}``: any one of the alternative segment sequences."""

    alternatives: tuple


Segment = Union[str, Group, object]  # ONE, MANY, a Group, or a fragment


@dataclass(frozen=True)
class Query:
    """A parsed query: its text, whether it was written with a leading ``/``, and its segments."""

    text: str
    rooted: bool
    segments: tuple


def parse(text: str) -> Query:
    """Parse ``text``; raises :class:`MPathError` with a caret under the first problem."""
    if not isinstance(text, str):
        raise TypeError(f"an mpath query is a str such as '**/[cls:torch.nn.Linear]', got {type(text).__name__}")
    parser = _Parser(text)
    rooted = parser.take("/")
    segments = parser.sequence()
    if parser.peek() == "*":
        parser.fail("'*' must be a whole segment; to match part of a name use a regex such as [re:layer.*]")
    if parser.position < len(text):
        parser.fail("unexpected character: expected '/' between segments or the end of the query")
    return Query(text, rooted, segments)


class _Parser:
    def __init__(self, text: str):
        self.text, self.position = text, 0

    def fail(self, reason: str, position: int = -1):
        raise MPathError(self.text, self.position if position < 0 else position, reason)

    def peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def take(self, token: str) -> bool:
        if self.text.startswith(token, self.position):
            self.position += len(token)
            return True
        return False

    def skip_spaces(self) -> None:
        while self.peek().isspace():
            self.position += 1

    def sequence(self) -> tuple:
        segments = [self.segment()]
        while self.take("/"):
            segments.append(self.segment())
        return tuple(segments)

    def segment(self) -> Segment:
        if self.take(MANY):
            return self.wildcard(MANY)
        if self.take(ONE):
            return self.wildcard(ONE)
        if self.take("{"):
            return self.group()
        negations = 0
        while self.take("~"):
            negations += 1
        if negations and self.peek() in ("*", "{"):
            self.fail("'~' negates a name or a [kind:argument], not a wildcard or a group")
        fragment = self.test()
        for _ in range(negations):
            fragment = NotFragment(fragment)
        return fragment

    def wildcard(self, kind: str) -> str:
        if self.peek() not in ("", "/", ",", "}"):
            self.fail(f"'{kind}' must be a whole segment; to match part of a name use a regex such as [re:layer.*]")
        return kind

    def group(self) -> Group:
        alternatives = []
        while True:
            self.skip_spaces()
            alternatives.append(self.sequence())
            self.skip_spaces()
            if self.take("}"):
                return Group(tuple(alternatives))
            if not self.take(","):
                self.fail("expected ',' or '}' in a {alternative, ...} group")

    def test(self):
        start = self.position
        if self.take("["):
            return self.bracket(start)
        while self.peek() and self.peek() not in _SPECIAL and not self.peek().isspace():
            self.position += 1
        if self.position == start:
            found = f"'{self.peek()}'" if self.peek() else "the end of the query"
            self.fail(f"found {found}: expected a name, '*', '**', '~', '{{' or '[kind:argument]'")
        return NameFragment(self.text[start:self.position])

    def bracket(self, start: int):
        kind_start = self.position
        while self.peek().isalnum() or self.peek() == "_":
            self.position += 1
        kind = self.text[kind_start:self.position]
        if not kind or not self.take(":"):
            self.fail("expected '[kind:argument]' such as [cls:torch.nn.Linear] or [re:layer\\d]")
        if kind not in fragment_kinds():
            self.fail(f"unknown fragment kind '{kind}'; known kinds: {', '.join(fragment_kinds())} "
                      f"(add one with fxq.mpath.register_fragment)", kind_start)
        self.skip_spaces()
        argument_start, argument = self.position, []
        while True:
            if self.take("\\]"):
                argument.append("]")
            elif self.take("]"):
                break
            elif not self.peek():
                self.fail(f"'[{kind}:' is not closed: expected ']' (write '\\]' for a ']' inside it)")
            else:
                argument.append(self.peek())
                self.position += 1
        try:
            return build_fragment(kind, "".join(argument))
        except ValueError as error:
            self.fail(str(error), argument_start)
