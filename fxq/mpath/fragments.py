"""Fragments: the tests one query segment applies to one path element, and the registry of ``[kind:argument]``.

A path element is one step of a module path or node path (see :class:`Element`). A fragment is any object with
``matches(element) -> bool``. ``register_fragment(kind, factory)`` makes ``[kind:argument]`` build
``factory(argument)``; the factory raises ``ValueError`` for a bad argument and the parser turns it into an
:class:`~fxq.mpath.errors.MPathError` with a caret under the argument. The built-in kinds are registered below
exactly that way.

A fragment may declare ``reads``: what of the Element it looks at (``name``, ``module`` (the object),
``module_class`` (only its class), ``type_name``, ``qtag``, ``node``). Matching then steps once per distinct value
of those instead of once per module scope (every ``layers.N.attn`` looks alike to ``attn``); without it each scope
is tested on its own, which is correct but slower.

>>> class Depth:            # [even:] selects elements whose name is an even number
...     reads = ("name",)      # optional (see above)
...     def __init__(self, argument): pass
...     def matches(self, element): return element.name.isdigit() and int(element.name) % 2 == 0
>>> register_fragment("even", Depth)
"""
from __future__ import annotations

import builtins
import importlib
import re
from typing import Any, Callable, Optional

from torch import fx, nn

__all__ = ["Element", "Fragment", "register_fragment", "fragment_kinds", "fragment_reads", "build_fragment",
           "resolve_name", "NameFragment", "NotFragment", "ClassFragment", "RegexFragment", "OpFragment",
           "TargetFragment", "QTagFragment"]

Fragment = Any  # anything with matches(element) -> bool
_REGISTRY: dict[str, Callable[[str], Fragment]] = {}
OP_KINDS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")


class Element:
    """One step of a path, as fragments see it.

    ``name``: the attribute name of a module, or the node's name for a node that is not a module call;
    ``module``: the module object when known; ``module_class``: its class, or for a module the graph no longer
    holds (a traced-through module, a container) the class the tracer recorded (``fxq.graph.tracer.module_classes``);
    ``type_name``: the qualified class name of such a module when only the name is known (graphs without a
    record, classes that could not be pickled); ``node``: the fx node when the element is one; ``qtag``: the
    quantizer tag of an observer node (``node.meta["fxq_qtag"]``) or of a module with ``fxq_qtag``.
    """

    __slots__ = ("name", "module", "type_name", "node", "qtag", "module_class")

    def __init__(self, name: str, module: Optional[nn.Module] = None, type_name: str = "",
                 node: Optional[fx.Node] = None, qtag: Optional[str] = None, module_class: Optional[type] = None):
        self.name, self.module, self.type_name, self.node, self.qtag = name, module, type_name, node, qtag
        self.module_class = type(module) if module is not None else module_class


def register_fragment(kind: str, factory: Callable[[str], Fragment]) -> None:
    """Make ``[kind:argument]`` mean ``factory(argument)`` in every query compiled from now on."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kind):
        raise ValueError(f"register_fragment({kind!r}): a fragment kind is an identifier such as 'cls' or 'qtag'")
    _REGISTRY[kind] = factory


ELEMENT_FIELDS = ("name", "module_class", "type_name", "qtag", "node")  # what ``structural = True`` promised


def fragment_reads(fragment: Fragment) -> Optional[tuple]:
    """The Element fields ``fragment`` declares it reads, or None when it does not say (it may read anything)."""
    reads = getattr(fragment, "reads", None)
    if reads is None and getattr(fragment, "structural", False):  # the older declaration: any field but identity
        return ELEMENT_FIELDS
    return None if reads is None else tuple(reads)


def fragment_kinds() -> list[str]:
    return sorted(_REGISTRY)


def build_fragment(kind: str, argument: str) -> Fragment:
    """KeyError for an unknown kind, ValueError (from the factory) for a bad argument."""
    return _REGISTRY[kind](argument)


def resolve_name(qualified: str) -> Any:
    """``"torch.nn.Linear"`` -> the object: import the longest importable module prefix, then getattr the rest."""
    parts = qualified.split(".")
    if not all(parts):
        raise ValueError(f"'{qualified}' is not a dotted name such as torch.nn.Linear")
    if len(parts) == 1 and hasattr(builtins, qualified):
        return getattr(builtins, qualified)
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
            return obj
        except AttributeError:
            break
    raise ValueError(f"cannot resolve '{qualified}': no importable module defines it (write the full dotted "
                     f"name, e.g. torch.nn.Linear or mypackage.blocks.Attention)")


class NameFragment:
    """A plain segment: the element's attribute (or node) name equals it."""

    reads = ("name",)  # the Element fields it looks at: see fragment_reads

    def __init__(self, name: str):
        self.name = name

    def matches(self, element: Element) -> bool:
        return element.name == self.name


class NotFragment:
    """``~fragment``: the element does not match the fragment."""

    def __init__(self, inner: Fragment):
        self.inner = inner
        self.reads = fragment_reads(inner)
        if isinstance(inner, OpFragment):  # [op:X] decides by op kind alone, so its negation is every other kind
            self.node_ops = tuple(kind for kind in OP_KINDS if kind != inner.op)

    def matches(self, element: Element) -> bool:
        return not self.inner.matches(element)


class ClassFragment:
    """``[cls:torch.nn.Linear]``: the element's module is an instance of the class.

    A fused module (fxq.nn.fused, e.g. LinearReLU) also matches the class of its first part, so queries written
    for the float model keep selecting the same layers after fusion. Scopes of traced-through modules that the
    GraphModule no longer holds are matched by the class the tracer recorded (a subclass matches), or by the
    recorded class name where only that is known.
    """

    reads = ("module_class", "type_name")  # the Element fields it looks at: see fragment_reads

    node_ops = ("call_module",)  # as the last element of a node path, only module calls can be instances

    def __init__(self, argument: str):
        self.cls = resolve_name(argument)
        if not isinstance(self.cls, type):
            raise ValueError(f"'{argument}' is {type(self.cls).__name__}, not a class")
        self.recorded: dict = {}  # recorded class or class name -> answer
        self.by_class: dict[type, bool] = {}

    def matches(self, element: Element) -> bool:
        module = element.module
        if module is not None:
            found = self.by_class.get(type(module))  # the answer depends only on the class: asked once per class
            if found is None:
                found = self.by_class[type(module)] = self._module_matches(module)
            return found
        recorded = element.module_class
        if recorded is not None:  # a module the graph holds only as a placeholder: the tracer kept its class
            found = self.recorded.get(recorded)
            if found is None:
                found = self.recorded[recorded] = issubclass(recorded, self.cls)
            return found
        if element.type_name:
            if element.type_name not in self.recorded:
                self.recorded[element.type_name] = self._recorded_is_subclass(element.type_name)
            return self.recorded[element.type_name]
        return False

    def _module_matches(self, module: nn.Module) -> bool:
        if isinstance(module, self.cls):
            return True
        return type(module).__module__ == "fxq.nn.fused" and len(module) > 0 and isinstance(module[0], self.cls)

    def _recorded_is_subclass(self, type_name: str) -> bool:
        try:
            recorded = resolve_name(type_name)
        except ValueError:  # a class defined inside a function: compare names
            return type_name.rpartition(".")[2] == self.cls.__qualname__
        return isinstance(recorded, type) and issubclass(recorded, self.cls)


class RegexFragment:
    """``[re:layer[12\\]]``: the element's name fully matches the regex."""

    reads = ("name",)  # the Element fields it looks at: see fragment_reads

    def __init__(self, argument: str):
        try:
            self.pattern = re.compile(argument)
        except re.error as error:
            raise ValueError(f"invalid regex '{argument}': {error}") from None

    def matches(self, element: Element) -> bool:
        return self.pattern.fullmatch(element.name) is not None


class OpFragment:
    """``[op:call_function]``: the element is an fx node of this op kind."""

    reads = ("node",)  # the Element fields it looks at: see fragment_reads

    def __init__(self, argument: str):
        if argument not in OP_KINDS:
            raise ValueError(f"unknown op kind '{argument}'; expected one of {', '.join(OP_KINDS)}")
        self.op = argument
        self.node_ops = (argument,)

    def matches(self, element: Element) -> bool:
        return element.node is not None and element.node.op == self.op


class TargetFragment:
    """``[target:torch.matmul]``: a call_function node calling that function.

    A name without a dot (``[target:view]``) matches call_method nodes of that method and functions of that
    ``__name__``; a dotted name must resolve to an object, so typos fail at compile time.
    """

    reads = ("node",)  # the Element fields it looks at: see fragment_reads

    def __init__(self, argument: str):
        self.text = argument
        self.function = resolve_name(argument) if "." in argument else None
        # as a node path's last element only these op kinds can match: buckets of other ops are skipped
        self.node_ops = ("call_function",) if self.function is not None else ("call_function", "call_method")

    def matches(self, element: Element) -> bool:
        node = element.node
        if node is None:
            return False
        if self.function is not None:
            return node.op == "call_function" and node.target is self.function
        if node.op == "call_method":
            return node.target == self.text
        return node.op == "call_function" and getattr(node.target, "__name__", None) == self.text


class QTagFragment:
    """``[qtag:activation/output, parameter]``: a quantizer whose tag starts with one of these tag paths.

    Tags are compared component by component: ``activation`` matches ``activation/output``, ``output`` does not.
    """

    reads = ("qtag",)  # the Element fields it looks at: see fragment_reads

    def __init__(self, argument: str):
        self.tags = [tuple(tag.strip().split("/")) for tag in argument.split(",")]
        if not all(all(tag) for tag in self.tags):
            raise ValueError(f"'{argument}' has an empty tag; write tags as a/b/c separated by commas")

    def matches(self, element: Element) -> bool:
        if element.qtag is None:
            return False
        parts = tuple(element.qtag.split("/"))
        return any(parts[:len(tag)] == tag for tag in self.tags)


for _kinds, _factory in ((("cls", "class"), ClassFragment), (("re", "regex"), RegexFragment),
                         (("op",), OpFragment), (("target",), TargetFragment),
                         (("qtag", "quantizer"), QTagFragment)):
    for _kind in _kinds:
        register_fragment(_kind, _factory)
