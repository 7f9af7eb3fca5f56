"""Shared plumbing of the quantized modules: output qparams, packed weights and their serialisation.

Output `scale` / `zero_point` are plain Python numbers (what the kernels take, and what TorchScript
sees as constants-friendly float/int); the state_dict stores them as tensors so a freshly built
module of the same shape can `load_state_dict` them. Weighted modules additionally store their
packed weight as (quantized weight, float bias) and repack on load, on unpickling and on deepcopy.
"""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from fxq.nn.quantized._packing import current_engine


class QuantizedModule(nn.Module):
    """A module whose output is a quint8 tensor with a fixed `scale` and `zero_point`."""

    def __init__(self, scale: float = 1.0, zero_point: int = 0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        """Whether this class can stand for ``module`` (lowering checks before building; a refusal leaves the
        op in float). Subclasses with a kernel that cannot do some configurations say so here."""
        return True

    def _output_repr(self) -> str:
        return f"scale={self.scale}, zero_point={self.zero_point}"

    def extra_repr(self) -> str:
        return self._output_repr()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "scale"] = torch.tensor(self.scale, dtype=torch.double)
        destination[prefix + "zero_point"] = torch.tensor(self.zero_point, dtype=torch.long)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        values = _pop_keys(state_dict, prefix, ("scale", "zero_point"), missing_keys)
        if "scale" in values:
            self.scale = float(values["scale"])
        if "zero_point" in values:
            self.zero_point = int(values["zero_point"])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _pop_keys(state_dict: Dict[str, Any], prefix: str, keys: Tuple[str, ...], missing_keys: list) -> Dict[str, Any]:
    """Remove `prefix + key` entries from state_dict, returning the found ones and recording the missing."""
    found = {}
    for key in keys:
        if prefix + key in state_dict:
            found[key] = state_dict.pop(prefix + key)
        else:
            missing_keys.append(prefix + key)
    return found


class WeightedQuantizedModule(QuantizedModule):
    """A quantized module with a prepacked int8 weight; subclasses say how to pack and unpack it."""

    def _pack(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: str):
        raise NotImplementedError(f"{type(self).__name__} must implement _pack(weight, bias, engine)")

    def _unpack(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must implement _unpack()")

    @torch.jit.unused
    def set_weight_bias(self, weight: torch.Tensor, bias: Optional[torch.Tensor], engine: Optional[str] = None) -> None:
        """Pack a qint8 quantized `weight` and float `bias` for `engine` (default: the module's engine)."""
        if not weight.is_quantized or weight.dtype != torch.qint8:
            raise TypeError(f"fxq.nn.quantized.{type(self).__name__}: the weight must be a torch.qint8 quantized "
                            f"tensor, got dtype {weight.dtype}; quantize it with dtype=torch.qint8.")
        engine = engine or getattr(self, "engine", None) or current_engine()
        self._packed_params = self._pack(weight, None if bias is None else bias.detach().float(), engine)
        self.engine = engine

    @torch.jit.unused
    def weight(self) -> torch.Tensor:
        """The quantized weight (unpacked)."""
        return self._unpack()[0]

    @torch.jit.unused
    def bias(self) -> Optional[torch.Tensor]:
        """The float bias, or None."""
        return self._unpack()[1]

    @torch.jit.unused
    def repack(self, engine: str) -> None:
        """Repack the same weight for another quantized engine (e.g. 'qnnpack' for ARM)."""
        self.set_weight_bias(*self._unpack(), engine=engine)

    def _output_repr(self) -> str:
        qscheme = self.weight().qscheme()
        return f"scale={self.scale}, zero_point={self.zero_point}, qscheme={qscheme}, engine={self.engine}"

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"], destination[prefix + "bias"] = self._unpack()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        values = _pop_keys(state_dict, prefix, ("weight", "bias"), missing_keys)
        incoming = values.get("weight")
        if incoming is not None and incoming.shape != self.weight().shape:  # another model's checkpoint
            error_msgs.append(f"size mismatch for {prefix}weight: the state_dict has shape {tuple(incoming.shape)}, "
                              f"this {type(self).__name__} has {tuple(self.weight().shape)}; load a state_dict saved "
                              "from a model converted from the same float model")
        elif incoming is not None:
            self.set_weight_bias(incoming, values.get("bias"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # Pickling (torch.save, copy.deepcopy): store the unpacked weight and repack for the same engine,
    # falling back to the current one where that engine does not exist (e.g. x86 -> an ARM machine).
    @torch.jit.unused
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_packed_params"] = self._unpack()
        return state

    @torch.jit.unused
    def __setstate__(self, state: Dict[str, Any]) -> None:
        weight, bias = state.pop("_packed_params")
        super().__setstate__(state)
        engine = self.engine if self.engine in torch.backends.quantized.supported_engines else current_engine()
        self.set_weight_bias(weight, bias, engine)
