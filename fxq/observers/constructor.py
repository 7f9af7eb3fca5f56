"""ObserverConstructor: what `Observer.with_args(...)` returns — a class plus keyword arguments.

A QConfig holds constructors, never observers: prepare calls one to build a fresh observer for each
tensor it watches. Constructors pickle, deepcopy, compare equal when they build the same observer,
and print the way they were written.

    >>> import torch
    >>> from fxq.observers import MinMaxObserver
    >>> ctor = MinMaxObserver.with_args(dtype=torch.qint8).with_args(qscheme=torch.per_tensor_symmetric)
    >>> ctor
    MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    >>> ctor().dtype
    torch.qint8
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import torch


class ObserverConstructor:
    """A picklable recipe for an observer: `observer_class(**kwargs)`, with overrides at call time.

    `callable_kwargs` are zero-argument functions evaluated at each construction (PyTorch AO's
    `with_callable_args`, used e.g. to pick a device when the observer is built).
    """

    def __init__(
        self,
        observer_class: type,
        kwargs: Optional[dict[str, Any]] = None,
        callable_kwargs: Optional[dict[str, Callable[[], Any]]] = None,
    ) -> None:
        self.observer_class = observer_class
        self.kwargs = dict(kwargs or {})
        self.callable_kwargs = dict(callable_kwargs or {})
        _check_kwarg_names(observer_class, {**self.kwargs, **self.callable_kwargs})

    def __call__(self, *args: Any, **overrides: Any):
        """Build a new observer; `overrides` win over the stored kwargs."""
        computed = {name: make() for name, make in self.callable_kwargs.items() if name not in overrides}
        return self.observer_class(*args, **{**self.kwargs, **computed, **overrides})

    def with_args(self, **kwargs: Any) -> "ObserverConstructor":
        """A new constructor with `kwargs` added to (and overriding) this one's."""
        return ObserverConstructor(self.observer_class, {**self.kwargs, **kwargs}, self.callable_kwargs)

    def with_callable_args(self, **callable_kwargs: Callable[[], Any]) -> "ObserverConstructor":
        """A new constructor whose `callable_kwargs` are called each time an observer is built."""
        return ObserverConstructor(self.observer_class, self.kwargs, {**self.callable_kwargs, **callable_kwargs})

    @property
    def p(self) -> functools.partial:
        """The constructor as a functools.partial, for code written against PyTorch AO's `_PartialWrapper.p`."""
        return functools.partial(self.observer_class, **self.kwargs)

    def __repr__(self) -> str:
        items = [f"{name}={value!r}" for name, value in self.kwargs.items()]
        text = f"{self.observer_class.__name__}.with_args({', '.join(items)})"
        if self.callable_kwargs:
            names = ", ".join(f"{name}={getattr(make, '__name__', repr(make))}" for name, make in self.callable_kwargs.items())
            text += f".with_callable_args({names})"
        return text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObserverConstructor):
            return NotImplemented
        return (
            self.observer_class is other.observer_class
            and _kwargs_equal(self.kwargs, other.kwargs)
            and self.callable_kwargs == other.callable_kwargs
        )

    def __hash__(self) -> int:
        # Only names are hashed: values may be unhashable (tensors), and equal constructors share names.
        return hash((self.observer_class, tuple(sorted(self.kwargs)), tuple(sorted(self.callable_kwargs))))


def _kwargs_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            if not (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) and torch.equal(value, other)):
                return False
        elif value != other:
            return False
    return True


def _check_kwarg_names(observer_class: type, kwargs: dict[str, Any]) -> None:
    # Fail at config time, naming the valid keywords, rather than deep inside prepare_fx.
    try:
        signature = inspect.signature(observer_class)
    except (TypeError, ValueError):  # builtins or exotic callables: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(signature.parameters))
    if unknown:
        valid = ", ".join(signature.parameters)
        raise TypeError(
            f"{observer_class.__name__}.with_args() got unknown keyword(s) {', '.join(unknown)}; "
            f"{observer_class.__name__} accepts: {valid}"
        )


def constructor_parts(constructor: Any) -> tuple[Any, dict[str, Any]]:
    """Split a constructor into (observer class, kwargs): an ObserverConstructor, a bare class, or
    PyTorch AO's `_PartialWrapper` (duck-typed through its `.p` partial, without importing PyTorch AO).

    >>> from fxq.observers import MinMaxObserver
    >>> constructor_parts(MinMaxObserver.with_args(quant_min=0, quant_max=127))
    (<class 'fxq.observers.minmax.MinMaxObserver'>, {'quant_min': 0, 'quant_max': 127})
    """
    if isinstance(constructor, ObserverConstructor):
        return constructor.observer_class, dict(constructor.kwargs)
    partial = getattr(constructor, "p", None)
    if isinstance(partial, functools.partial):
        inner_class, inner_kwargs = constructor_parts(partial.func)
        return inner_class, {**inner_kwargs, **partial.keywords}
    if isinstance(constructor, functools.partial):
        inner_class, inner_kwargs = constructor_parts(constructor.func)
        return inner_class, {**inner_kwargs, **constructor.keywords}
    return constructor, {}
