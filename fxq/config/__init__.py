"""Quantization configuration: QConfig, QConfigMapping and the custom configs, with PyTorch AO's API and legacy dicts.

    >>> import torch
    >>> from fxq.config import get_default_qconfig_mapping
    >>> mapping = get_default_qconfig_mapping("x86").set_module_name("head", None)  # keep the head float
    >>> mapping.qconfig_for("head.fc", (torch.nn.Linear,)) is None
    True
"""
from fxq.config.custom_config import (ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig,
                                      StandaloneModuleConfigEntry)
from fxq.config.defaults import (fixed_qparams_observers, get_default_dynamic_qconfig_mapping,
                                 get_default_qconfig_mapping, get_transformer_qconfig_mapping)
from fxq.config.legacy import QUANT_MODES
from fxq.config.qconfig import (BACKENDS, FloatOutputQConfig, QConfig, QConfigAny, constructor_parts,
                                constructors_equal,
                                default_dynamic_qconfig, default_per_channel_qconfig, default_qconfig,
                                describe_constructor, float16_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                get_default_qconfig, per_channel_dynamic_qconfig,
                                per_token_dynamic_qconfig)
from fxq.config.qconfig_mapping import QCONFIG_DICT_KEYS, QConfigMapping
from fxq.config.qat import default_qat_qconfig, get_default_qat_qconfig, get_default_qat_qconfig_mapping
from fxq.config.weight_only import get_weight_only_qconfig, get_weight_only_qconfig_mapping

__all__ = [
    "QConfig", "FloatOutputQConfig", "QConfigAny", "QConfigMapping", "PrepareCustomConfig", "ConvertCustomConfig",
    "FuseCustomConfig",
    "StandaloneModuleConfigEntry", "get_default_qconfig", "get_default_qconfig_mapping",
    "get_default_dynamic_qconfig_mapping", "get_transformer_qconfig_mapping", "default_qconfig", "default_per_channel_qconfig", "default_dynamic_qconfig",
    "float16_dynamic_qconfig", "per_channel_dynamic_qconfig", "per_token_dynamic_qconfig",
    "float_qparams_weight_only_qconfig",
    "fixed_qparams_observers", "constructor_parts", "constructors_equal", "describe_constructor", "BACKENDS",
    "QUANT_MODES", "QCONFIG_DICT_KEYS", "get_weight_only_qconfig", "get_weight_only_qconfig_mapping",
    "get_default_qat_qconfig", "get_default_qat_qconfig_mapping", "default_qat_qconfig",
]
