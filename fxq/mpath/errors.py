"""The one error mpath raises for a query it cannot use, with a caret under the offending position."""
from __future__ import annotations

__all__ = ["MPathError"]


class MPathError(ValueError):
    """A query that does not parse, or names something that does not exist (a class, a fragment kind).

    Attributes: ``query``, ``position`` (0-based offset of the problem) and ``reason``.

    >>> try:
    ...     import fxq.mpath; fxq.mpath.compile("a//b")
    ... except MPathError as error:
    ...     print(error.position)
    2
    """

    def __init__(self, query: str, position: int, reason: str):
        self.query, self.position, self.reason = query, position, reason
        super().__init__(f"mpath query {query!r}: {reason}\n  {query}\n  {' ' * position}^")
