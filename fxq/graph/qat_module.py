"""The GraphModule prepare_qat_fx returns: the switches users look for, as methods (pytorch/pytorch#120983).

    prepared.disable_observer()                                   # every fake-quant, weights included
    prepared.disable_fake_quant("**/[qtag:activation]")         # only the activation quantizers
    prepared.freeze_bn_stats()                                    # every fused batch norm, Linear+BN1d too

A query selects the quantizer nodes ``fxq.find_quantizers(prepared, query)`` selects, plus the weight fake-quants
of the QAT layers ``fxq.mpath.search(query, prepared)`` selects (``"conv1"``: that layer's weight quantizer).
The class survives ``copy.deepcopy`` and ``torch.save`` / ``torch.load``.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

from torch import fx, nn

from fxq.mpath import find_quantizers, search
from fxq.nn.qat import batchnorm
from fxq.observers.fake_quantize import FakeQuantizeBase

__all__ = ["QATGraphModule", "as_qat_module", "quantizer_modules", "reinitialize"]


def quantizer_modules(gm: fx.GraphModule, query: Optional[str] = None) -> list[FakeQuantizeBase]:
    """The fake-quant modules of ``gm`` that ``query`` selects (all of them for None), each once, in order."""
    if query is None:
        found = [m for m in gm.modules() if isinstance(m, FakeQuantizeBase)]
    else:
        found = [m for m in find_quantizers(gm, query).modules if isinstance(m, FakeQuantizeBase)]
        for match in search(query, gm):
            weight_quantizer = getattr(match.module, "weight_fake_quant", None)
            if isinstance(weight_quantizer, FakeQuantizeBase):
                found.append(weight_quantizer)
    return list({id(m): m for m in found}.values())


class QATGraphModule(fx.GraphModule):
    """A prepared QAT model: a GraphModule with quantizer and batch-norm switches."""

    def _switch(self, method: str, query: Optional[str]) -> "QATGraphModule":
        for quantizer in quantizer_modules(self, query):
            getattr(quantizer, method)()
        return self

    def enable_fake_quant(self, query: Optional[str] = None) -> "QATGraphModule":
        """Fake-quantize again where ``query`` selects (everywhere by default)."""
        return self._switch("enable_fake_quant", query)

    def disable_fake_quant(self, query: Optional[str] = None) -> "QATGraphModule":
        """Let values through unquantized where ``query`` selects; statistics still update."""
        return self._switch("disable_fake_quant", query)

    def enable_observer(self, query: Optional[str] = None) -> "QATGraphModule":
        """Update statistics and qparams again where ``query`` selects."""
        return self._switch("enable_observer", query)

    def disable_observer(self, query: Optional[str] = None) -> "QATGraphModule":
        """Freeze qparams where ``query`` selects (convert then uses exactly these)."""
        return self._switch("disable_observer", query)

    def freeze_bn_stats(self) -> "QATGraphModule":
        """Every fused batch norm normalizes with its running statistics and stops updating them."""
        self.apply(batchnorm.freeze_bn_stats)
        return self

    def update_bn_stats(self) -> "QATGraphModule":
        """Every fused batch norm uses and updates batch statistics again."""
        self.apply(batchnorm.update_bn_stats)
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, except that quantizers with no state in the checkpoint (a float checkpoint
        into a QAT model, or one saved before quantizers were added) re-initialise from the next batches'
        statistics, with one warning naming them, instead of failing strict loading."""
        absent = [name for name, module in self.named_modules(remove_duplicate=False)
                  if isinstance(module, FakeQuantizeBase)
                  and not any(key.startswith(f"{name}.") for key in state_dict)]
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        absent_prefixes = tuple(f"{name}." for name in absent)
        missing = [key for key in result.missing_keys if not key.startswith(absent_prefixes)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: missing keys {missing}, "
                               f"unexpected keys {result.unexpected_keys}")
        for name in absent:
            reinitialize(self.get_submodule(name))
        if absent:
            warnings.warn(f"fxq: the checkpoint has no state for {len(absent)} quantizer(s) ({', '.join(absent[:8])}"
                          f"{' ...' if len(absent) > 8 else ''}); they re-initialise from the next batches' "
                          f"statistics", stacklevel=2)
        return type(result)(missing, result.unexpected_keys)

    def __reduce__(self) -> tuple:
        # torch.fx rebuilds a plain GraphModule on load; rebuild it, then give it this class back
        return (_rebuilt_as_qat, super().__reduce__())


def reinitialize(quantizer: FakeQuantizeBase) -> None:
    """Forget a quantizer's statistics and qparams: the next batch it observes sets them afresh."""
    observer = getattr(quantizer, "activation_post_process", None)
    if hasattr(observer, "reset_min_max_vals"):
        observer.reset_min_max_vals()
    if hasattr(quantizer, "initialized"):  # LSQ: re-take its scale from the observer
        quantizer.initialized.zero_()
    quantizer.enable_observer()


def _rebuilt_as_qat(rebuild: Any, args: tuple) -> QATGraphModule:
    return as_qat_module(rebuild(*args))


def as_qat_module(gm: fx.GraphModule) -> QATGraphModule:
    """Give ``gm`` (in place) the QATGraphModule methods; its code is regenerated on the new class."""
    if not isinstance(gm, QATGraphModule):
        # torch.fx gives each GraphModule its own class, qualname GraphModuleImpl, holding its forward (copies skip
        # classes of that qualname when they pick their base): swap in one of those based on QATGraphModule
        per_instance = type("GraphModuleImpl", (QATGraphModule,), {})
        per_instance.__name__ = type(gm).__name__
        gm.__class__ = per_instance
        gm.recompile()
    return gm
