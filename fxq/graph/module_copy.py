"""The copy of the user's model that prepare_fx and convert_fx work on.

``copy.deepcopy`` of an ``nn.Module`` goes through ``__reduce_ex__`` for the module and for each of its fourteen
hook dictionaries (OrderedDicts, which deepcopy has no fast path for): on a 4000-module chain that was a third of
prepare_fx. For module classes whose deepcopy is exactly "new object, deep-copied ``__dict__``,
``Module.__setstate__``" we do that walk ourselves, making empty containers directly; any class that customises
copying or pickling goes through ``copy.deepcopy`` as before. Identity is kept: one memo for the whole copy, so a
module or tensor reachable from two places is copied once.

    >>> import torch
    >>> shared = torch.nn.Linear(2, 2)
    >>> model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    >>> copied = copy_module(model)
    >>> copied[0] is copied[2], copied[0] is shared, copied[0].weight.data_ptr() == shared.weight.data_ptr()
    (True, False, True)
"""
from __future__ import annotations

import copy
import copyreg
from collections import OrderedDict
from typing import Dict

from torch import nn

from fxq.graph.tracer import module_classes, record_module_classes

_EMPTY_CONTAINERS = (dict, OrderedDict, set, list)
_plain_classes: Dict[type, bool] = {}


def copy_module(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters are new Parameter objects over the same storage.

    Copying hundreds of MB of weights dominated prepare and convert; no pass writes into a float weight (fusion
    and lowering build new tensors), so the storage can be shared. Writing into the copy's parameters in place
    (an optimizer step) would show in the original: clone them first for that.
    """
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in model.parameters()}
    copied = _copy(model, memo)
    classes = module_classes(model)  # a torch.load-ed GraphModule lost the meta that lets deepcopy keep it
    if classes is not None and module_classes(copied) is None:
        record_module_classes(copied, classes)
    return copied


def _copy(module: nn.Module, memo: dict) -> nn.Module:
    done = memo.get(id(module))
    if done is not None:
        return done
    cls = type(module)
    if not _copies_plainly(cls):  # e.g. a GraphModule: copy its children our way first, its deepcopy finds them
        for child in module.children():
            _copy(child, memo)
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state = {}
    for key, value in module.__getstate__().items():
        if key == "_modules":
            state[key] = type(value)((name, None if child is None else _copy(child, memo)) for name, child in value.items())
        elif type(value) in _EMPTY_CONTAINERS and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    new.__setstate__(state)
    return new


def _copies_plainly(cls: type) -> bool:
    """True when ``copy.deepcopy`` of a ``cls`` instance is: ``cls.__new__``, then ``__setstate__`` of the
    deep-copied ``__getstate__()`` (nn.Module's own), with no hook that could change that."""
    plain = _plain_classes.get(cls)
    if plain is None:
        plain = (getattr(cls, "__deepcopy__", None) is None
                 and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
                 and cls.__getstate__ is nn.Module.__getstate__ and cls.__setstate__ is nn.Module.__setstate__
                 and cls not in copyreg.dispatch_table
                 and not any("__slots__" in vars(base) for base in cls.__mro__[:-1]))
        _plain_classes[cls] = plain
    return plain


def own_parameters(model: nn.Module) -> None:
    """Give ``model`` (a :func:`copy_module` copy) parameters with storage of their own, for copies that will be
    trained in place (prepare_qat_fx): the user's model must not move with them. Shared parameters stay shared.

    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> copied = copy_module(model); own_parameters(copied)
    >>> copied.weight.data_ptr() == model.weight.data_ptr()
    False
    """
    clones: dict = {}
    for module in model.modules():
        for name, parameter in module._parameters.items():
            if parameter is not None:
                if id(parameter) not in clones:
                    clones[id(parameter)] = nn.Parameter(parameter.detach().clone(), parameter.requires_grad)
                module._parameters[name] = clones[id(parameter)]
