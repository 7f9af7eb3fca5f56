"""QConfig: the (activation, weight) pair of observer constructors, and the stock qconfigs.

A QConfig holds constructors, never observers: prepare builds a fresh observer from them for
every tensor it watches. A constructor is an observer class or `Cls.with_args(...)`.

    >>> from fxq.observers import HistogramObserver, default_per_channel_weight_observer
    >>> qconfig = QConfig(HistogramObserver.with_args(reduce_range=True), default_per_channel_weight_observer)
    >>> qconfig.short()
    'QConfig(act=HistogramObserver(reduce_range=True), w=PerChannelMinMaxObserver(qint8, per_channel_symmetric))'
"""
from __future__ import annotations

import functools
from collections import namedtuple
from typing import Any, Callable, Optional

import torch

from fxq import observers as obs

__all__ = [
    "QConfig", "FloatOutputQConfig", "QConfigAny", "constructor_parts", "constructors_equal", "describe_constructor",
    "default_qconfig", "default_per_channel_qconfig", "default_dynamic_qconfig", "float16_dynamic_qconfig",
    "per_channel_dynamic_qconfig", "per_token_dynamic_qconfig", "float_qparams_weight_only_qconfig",
    "get_default_qconfig", "BACKENDS",
]

BACKENDS = ("x86", "fbgemm", "qnnpack", "onednn")

# kwargs shown without their name in short forms, in this order: they are what a reader scans for.
_POSITIONAL_KWARGS = ("dtype", "qscheme")


def constructor_parts(constructor: Any) -> tuple[Any, dict[str, Any]]:
    """Split an observer constructor into (observer class, kwargs); a bare class has no kwargs.

    >>> from fxq.observers import MinMaxObserver
    >>> constructor_parts(MinMaxObserver.with_args(quant_min=0))[1]
    {'quant_min': 0}
    """
    if hasattr(constructor, "observer_class"):
        return constructor.observer_class, dict(constructor.kwargs)
    # functools.partial, and PyTorch AO's _PartialWrapper around one (users migrating pass those in)
    partial = getattr(constructor, "p", constructor)
    if isinstance(partial, functools.partial):
        return partial.func, dict(partial.keywords)
    return constructor, {}


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if callable(a) and callable(b):  # nested constructors, e.g. FakeQuantize's observer=...
        return constructors_equal(a, b)
    return bool(a == b)


def constructors_equal(a: Any, b: Any) -> bool:
    """True when two constructors build the same observer: same class, equal kwargs.

    Callable kwargs (e.g. a device picker added at prepare time) are ignored, as PyTorch AO's
    qconfig_equals ignores them, so a prepared model's qconfigs still equal the user's.

    >>> from fxq.observers import MinMaxObserver
    >>> constructors_equal(MinMaxObserver.with_args(eps=1.0), MinMaxObserver.with_args(eps=1.0))
    True
    """
    class_a, kwargs_a = constructor_parts(a)
    class_b, kwargs_b = constructor_parts(b)
    if class_a is not class_b or kwargs_a.keys() != kwargs_b.keys():
        return False
    return all(_values_equal(kwargs_a[key], kwargs_b[key]) for key in kwargs_a)


def _describe_value(value: Any) -> str:
    if isinstance(value, (torch.dtype, torch.qscheme)):
        return str(value).removeprefix("torch.")
    if isinstance(value, type) or hasattr(value, "observer_class"):
        return describe_constructor(value)
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return repr(value)


def describe_constructor(constructor: Any) -> str:
    """A short, deterministic text for a constructor, e.g. `MinMaxObserver(qint8, per_tensor_symmetric)`.

    dtype and qscheme come first without their names; the other kwargs follow, sorted by name.
    """
    if constructor is None:
        return "None"
    cls, kwargs = constructor_parts(constructor)
    name = getattr(cls, "__name__", repr(cls))
    shown = [_describe_value(kwargs[key]) for key in _POSITIONAL_KWARGS if key in kwargs]
    shown += [f"{key}={_describe_value(kwargs[key])}" for key in sorted(kwargs) if key not in _POSITIONAL_KWARGS]
    return f"{name}({', '.join(shown)})"


def _check_constructor(value: Any, field: str) -> None:
    if value is None:
        return
    if isinstance(value, torch.nn.Module):
        cls = type(value).__name__
        raise TypeError(
            f"QConfig({field}=...) got an observer instance of {cls}; a QConfig holds constructors because "
            f"prepare builds one observer per tensor. Pass the class `{cls}` or `{cls}.with_args(...)` instead."
        )
    if not callable(value):
        raise TypeError(
            f"QConfig({field}=...) got {value!r} of type {type(value).__name__}; expected an observer class, "
            f"`Cls.with_args(...)` or None."
        )


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """How to observe one op: constructors for its activation observer and its weight observer.

    Immutable; two QConfigs are equal when both constructors build the same class with equal kwargs.
    Dynamic quantization is a QConfig whose activation is `PlaceholderObserver.with_args(is_dynamic=True, ...)`.

    >>> from fxq.observers import MinMaxObserver
    >>> QConfig(MinMaxObserver, MinMaxObserver.with_args(dtype=torch.qint8)) == QConfig(
    ...     MinMaxObserver, MinMaxObserver.with_args(dtype=torch.qint8))
    True
    """

    __slots__ = ()

    def __new__(cls, activation: Optional[Callable[..., Any]], weight: Optional[Callable[..., Any]]) -> "QConfig":
        _check_constructor(activation, "activation")
        _check_constructor(weight, "weight")
        return super().__new__(cls, activation, weight)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QConfig):
            return NotImplemented
        return constructors_equal(self.activation, other.activation) and constructors_equal(self.weight, other.weight)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        # Consistent with __eq__: equal kwargs have equal key sets; values may be unhashable.
        parts = [constructor_parts(c) for c in self]
        return hash(tuple((cls, tuple(sorted(kwargs))) for cls, kwargs in parts))

    def short(self) -> str:
        """`QConfig(act=..., w=...)` with each constructor in its short form, for dumps and errors."""
        return f"QConfig(act={describe_constructor(self.activation)}, w={describe_constructor(self.weight)})"

    __str__ = short
    __repr__ = short


class FloatOutputQConfig(QConfig):
    """A QConfig whose layer keeps its output in float: the input and the weight are quantized and the int8 kernel
    returns fp32, with no rounding of the output. For linears read only by float ops (a transformer's residual
    adds, GELU, attention), where an int8 output would be rounded and at once dequantized. Other ops, and layers
    no kernel serves this way, run as with a plain QConfig.

    >>> from fxq.observers import HistogramObserver, PerChannelMinMaxObserver
    >>> FloatOutputQConfig(HistogramObserver, PerChannelMinMaxObserver).short()
    'FloatOutputQConfig(act=HistogramObserver(), w=PerChannelMinMaxObserver())'
    """

    __slots__ = ()

    def short(self) -> str:
        return "FloatOutput" + super().short()

    __str__ = short
    __repr__ = short


QConfigAny = Optional[QConfig]

default_qconfig = QConfig(obs.default_observer, obs.default_weight_observer)
default_per_channel_qconfig = QConfig(obs.default_observer, obs.default_per_channel_weight_observer)
default_dynamic_qconfig = QConfig(obs.default_dynamic_quant_observer, obs.default_weight_observer)
float16_dynamic_qconfig = QConfig(
    obs.PlaceholderObserver.with_args(dtype=torch.float16, is_dynamic=True),
    obs.PlaceholderObserver.with_args(dtype=torch.float16),
)
per_channel_dynamic_qconfig = QConfig(obs.default_dynamic_quant_observer, obs.default_per_channel_weight_observer)
# fxq's default for dynamic Linear: each row (token) of the input quantized with its own scale (fxq.nn.quantized.dynamic)
per_token_dynamic_qconfig = QConfig(obs.default_dynamic_quant_observer.with_args(per_token=True),
                                    obs.default_per_channel_weight_observer)
float_qparams_weight_only_qconfig = QConfig(obs.default_placeholder_observer, obs.default_float_qparams_observer)


def check_backend(backend: str) -> str:
    """Return `backend` if fxq has defaults for it, else raise a ValueError listing the valid ones."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def get_default_qconfig(backend: str = "x86") -> QConfig:
    """The post-training qconfig PyTorch AO picks for `backend` ("x86", "fbgemm", "qnnpack" or "onednn").

    x86 and fbgemm reduce the activation range to 7 bits (their int8 kernels can overflow otherwise);
    qnnpack has no per-channel weights.

    >>> get_default_qconfig("qnnpack").short()
    'QConfig(act=HistogramObserver(reduce_range=False), w=MinMaxObserver(qint8, per_tensor_symmetric))'
    """
    check_backend(backend)
    reduce_range = backend in ("x86", "fbgemm")
    activation = obs.HistogramObserver.with_args(reduce_range=reduce_range)
    weight = obs.default_weight_observer if backend == "qnnpack" else obs.default_per_channel_weight_observer
    return QConfig(activation, weight)
