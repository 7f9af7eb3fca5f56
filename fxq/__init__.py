"""fxq: int8 quantization of PyTorch models by rewriting their torch.fx graphs.

A drop-in for PyTorch AO's ``quantize_fx``::

    import fxq
    prepared = fxq.prepare_fx(model.eval(), fxq.get_default_qconfig_mapping("x86"), example_inputs)
    for batch in calibration_batches:
        prepared(batch)
    quantized = fxq.convert_fx(prepared)
"""
from fxq import mpath, observers
from fxq.mpath import find_quantizers
from fxq.api import convert_fx, convert_to_reference_fx, fuse_fx, prepare_fx
from fxq.config import (ConvertCustomConfig, FuseCustomConfig, PrepareCustomConfig, QConfig, QConfigMapping,
                        default_dynamic_qconfig, default_per_channel_qconfig, default_qconfig,
                        float16_dynamic_qconfig, get_default_dynamic_qconfig_mapping, get_default_qconfig,
                        get_default_qconfig_mapping, get_weight_only_qconfig, get_weight_only_qconfig_mapping)
from fxq.passes.pipeline import PassError
from fxq.dump import dump, to_networkx
from fxq.calibration import calibrate
from fxq.numeric import compare, sensitivity
from fxq.tracer import TraceError
from fxq.leaves import find_untraceable
from fxq.registry import register_custom_module, unregister_custom_module
from fxq.equalization import (CrossLayerEqualization, EqualizationQConfig, cross_layer_equalize,
                              default_equalization_qconfig)

__version__ = "0.1.0"

__all__ = [
    "prepare_fx", "convert_fx", "convert_to_reference_fx", "fuse_fx", "QConfig", "QConfigMapping",
    "PrepareCustomConfig", "ConvertCustomConfig", "FuseCustomConfig", "get_default_qconfig",
    "get_default_qconfig_mapping", "get_default_dynamic_qconfig_mapping", "default_qconfig",
    "default_per_channel_qconfig", "default_dynamic_qconfig", "float16_dynamic_qconfig", "get_weight_only_qconfig",
    "get_weight_only_qconfig_mapping", "observers", "mpath", "find_quantizers", "TraceError", "PassError",
    "dump", "to_networkx", "calibrate", "compare", "sensitivity",
]
__all__ += ["EqualizationQConfig", "default_equalization_qconfig", "cross_layer_equalize", "CrossLayerEqualization"]
__all__ += ["find_untraceable", "register_custom_module", "unregister_custom_module"]
