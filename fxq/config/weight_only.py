"""Weight-only qconfigs (W8A32 / W8A16): int8 per-output-channel weights, activations left in a float dtype."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fxq import observers as obs
from fxq.config.qconfig import QConfig, float_qparams_weight_only_qconfig
from fxq.config.qconfig_mapping import QConfigMapping


def get_weight_only_qconfig(activation_dtype: torch.dtype = torch.float32) -> QConfig:
    """int8 symmetric per-channel weights; activations stay ``activation_dtype`` (float32: W8A32, bfloat16: W8A16).

    >>> get_weight_only_qconfig(torch.bfloat16).activation().dtype
    torch.bfloat16
    """
    if activation_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"activation_dtype must be torch.float32, torch.bfloat16 or torch.float16, got {activation_dtype}")
    return QConfig(activation=obs.PlaceholderObserver.with_args(dtype=activation_dtype),
                   weight=obs.PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                 qscheme=torch.per_channel_symmetric))


def get_weight_only_qconfig_mapping(activation_dtype: torch.dtype = torch.float32,
                                    exclude: Iterable[str] = ()) -> QConfigMapping:
    """Linear / F.linear weight-only, Embedding with int8 rows; what ``exclude`` names stays float.

    Each entry of ``exclude`` is a module name (``"lm_head"``: that module and everything inside it) or an
    fxq.mpath query (``"**/[cls:torch.nn.Linear]/..."``, ``"layers/*/attn/**"``), told apart by the query
    characters ``/ * [ { ~``, which no module name holds. Queries become ``set_mpath(query, None)`` rules, so they
    win over every other rule of the mapping.

    >>> mapping = get_weight_only_qconfig_mapping(exclude=["lm_head", "**/gate/[cls:torch.nn.Linear]"])
    >>> mapping.qconfig_for("lm_head", (nn.Linear,)) is None, dict(mapping.mpath_qconfigs)
    (True, {'**/gate/[cls:torch.nn.Linear]': None})
    """
    qconfig = get_weight_only_qconfig(activation_dtype)
    mapping = (QConfigMapping().set_object_type(nn.Linear, qconfig).set_object_type(F.linear, qconfig)
               .set_object_type(nn.Embedding, float_qparams_weight_only_qconfig))
    for entry in [exclude] if isinstance(exclude, str) else exclude:
        if not isinstance(entry, str):
            raise TypeError(f"get_weight_only_qconfig_mapping(exclude=...): expected module names or mpath queries "
                            f"(str), got {entry!r}")
        if _QUERY_CHARACTERS.intersection(entry):
            mapping.set_mpath(entry, None)
        else:
            mapping.set_module_name(entry, None)
    return mapping


_QUERY_CHARACTERS = frozenset("/*[{~")
