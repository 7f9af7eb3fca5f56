"""The custom-module registry: float class -> observed class -> quantized class, per quantization mode.

A custom module is a submodule fxq does not trace into (it is a leaf) and that the user quantizes with classes of
their own: ``Observed.from_float(float_module)`` in prepare (static mode) and ``Quantized.from_observed(module)``
in convert. Register them once, globally, or per call through the custom configs; the per-call configs win::

    >>> import torch, fxq
    >>> class Float(torch.nn.Module): ...
    >>> class Observed(Float):
    ...     @classmethod
    ...     def from_float(cls, module): ...
    >>> class Quantized(torch.nn.Module):
    ...     @classmethod
    ...     def from_observed(cls, module): ...
    >>> fxq.register_custom_module(Float, Observed, Quantized)          # mode "static"

In the dynamic and weight-only modes nothing is observed, so the float class is its own "observed" class and only a
quantized class is registered: ``fxq.register_custom_module(Float, quantized_class=DynQuantized, mode="dynamic")``.
Which mode's classes a module gets follows its qconfig: ``fxq.graph.modes.CUSTOM_MODULE_MODE[fxq.graph.modes.quant_mode(qconfig)]``.
"""
from __future__ import annotations

from typing import Any, Optional

from fxq.config import legacy

__all__ = ["CustomModuleRegistry", "registry", "register_custom_module", "unregister_custom_module",
           "check_observed_class", "check_quantized_class"]

_PREPARE_KEY = 'prepare_custom_config["float_to_observed_custom_module_class"]'
_CONVERT_KEY = 'convert_custom_config["observed_to_quantized_custom_module_class"]'


def check_observed_class(observed_class: Any, float_class: Any, where: str = _PREPARE_KEY) -> None:
    """Raise a TypeError unless ``observed_class`` has a ``from_float`` classmethod."""
    if not isinstance(observed_class, type) or not callable(getattr(observed_class, "from_float", None)):
        raise TypeError(
            f"{where}: observed custom module class {_name(observed_class)} (for {_name(float_class)}) has no "
            f"from_float; define `@classmethod def from_float(cls, float_module)` returning the observed module")


def check_quantized_class(quantized_class: Any, observed_class: Any, where: str = _CONVERT_KEY) -> None:
    """Raise a TypeError unless ``quantized_class`` has a ``from_observed`` classmethod."""
    if not isinstance(quantized_class, type) or not callable(getattr(quantized_class, "from_observed", None)):
        raise TypeError(
            f"{where}: quantized custom module class {_name(quantized_class)} (for {_name(observed_class)}) has no "
            f"from_observed; define `@classmethod def from_observed(cls, observed_module)` returning the quantized "
            f"module")


class CustomModuleRegistry:
    """Mode -> {float class: observed class} and mode -> {observed class: quantized class}."""

    def __init__(self) -> None:
        self.float_to_observed: dict[str, dict[type, type]] = {}
        self.observed_to_quantized: dict[str, dict[type, type]] = {}

    def register(self, float_class: type, observed_class: Optional[type] = None,
                 quantized_class: Optional[type] = None, mode: Any = "static") -> None:
        """Register a custom module; classes are checked now, not when convert first needs them."""
        mode = legacy.quant_mode(mode, "register_custom_module")
        if mode in ("static", "qat"):
            check_observed_class(observed_class, float_class, "register_custom_module")
        else:  # nothing to observe: the float module is what convert swaps
            observed_class = observed_class or float_class
        if quantized_class is not None:
            check_quantized_class(quantized_class, observed_class, "register_custom_module")
            self.observed_to_quantized.setdefault(mode, {})[observed_class] = quantized_class
        if observed_class is not float_class:
            self.float_to_observed.setdefault(mode, {})[float_class] = observed_class
        elif quantized_class is None:
            raise ValueError(f"register_custom_module({_name(float_class)}, mode={mode!r}): give a quantized_class")

    def unregister(self, cls: type) -> None:
        """Forget ``cls`` wherever it appears (as a float, observed or quantized class), with the classes it was
        registered with (unregistering a float class also drops its observed -> quantized entry)."""
        linked = {cls} | {v for table in self.float_to_observed.values() for k, v in table.items() if k is cls}
        for table in (*self.float_to_observed.values(), *self.observed_to_quantized.values()):
            for key in [k for k, v in table.items() if k in linked or v in linked]:
                del table[key]

    def observed_class(self, float_class: type, mode: str, prepare_config: Any = None) -> Optional[type]:
        """The observed class for ``float_class`` in ``mode``; the per-call config wins over the registry."""
        per_call = getattr(prepare_config, "float_to_observed_mapping", {}) or {}
        return per_call.get(mode, {}).get(float_class) or self.float_to_observed.get(mode, {}).get(float_class)

    def quantized_class(self, observed_class: type, mode: str, convert_config: Any = None) -> Optional[type]:
        """The quantized class for ``observed_class`` in ``mode``; the per-call config wins over the registry."""
        per_call = getattr(convert_config, "observed_to_quantized_mapping", {}) or {}
        return (per_call.get(mode, {}).get(observed_class)
                or self.observed_to_quantized.get(mode, {}).get(observed_class))

    def leaf_classes(self, prepare_config: Any = None) -> tuple:
        """Every float class with an observed class (any mode, registry or config): the tracer keeps them whole,
        and so every class registered for the dynamic or weight-only modes."""
        classes = {c for table in self.float_to_observed.values() for c in table}
        classes |= {c for table in self.observed_to_quantized.values() for c in table}
        for table in (getattr(prepare_config, "float_to_observed_mapping", {}) or {}).values():
            classes |= set(table)
        return tuple(sorted(classes, key=_name))


registry = CustomModuleRegistry()


def register_custom_module(float_class: type, observed_class: Optional[type] = None,
                           quantized_class: Optional[type] = None, mode: Any = "static") -> None:
    """Register a custom module class globally (see the module docstring); per-call configs still win.

    >>> fxq.register_custom_module(FloatLSTM, ObservedLSTM, QuantizedLSTM)          # doctest: +SKIP
    """
    registry.register(float_class, observed_class, quantized_class, mode)


def unregister_custom_module(cls: type) -> None:
    """Remove a class from the global registry (tests, notebooks that redefine classes)."""
    registry.unregister(cls)


def check_configs(prepare_config: Any = None, convert_config: Any = None) -> None:
    """Check every class a per-call config names, before any pass runs."""
    for mode, table in (getattr(prepare_config, "float_to_observed_mapping", {}) or {}).items():
        for float_class, observed_class in table.items():
            check_observed_class(observed_class, float_class, f'{_PREPARE_KEY}["{mode}"]')
    for mode, table in (getattr(convert_config, "observed_to_quantized_mapping", {}) or {}).items():
        for observed_class, quantized_class in table.items():
            check_quantized_class(quantized_class, observed_class, f'{_CONVERT_KEY}["{mode}"]')


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)


