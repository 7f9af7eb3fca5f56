"""fxq: int8 quantization of PyTorch models by rewriting their torch.fx graphs.

A drop-in for PyTorch AO's ``quantize_fx``::

    import fxq
    prepared = fxq.prepare_fx(model.eval(), fxq.get_default_qconfig_mapping("x86"), example_inputs)
    for batch in calibration_batches:
        prepared(batch)
    quantized = fxq.convert_fx(prepared)
"""
import importlib
import sys

from fxq import mpath, observers
from fxq.mpath import find_quantizers
from fxq.api import convert_fx, convert_to_reference_fx, fuse_fx, prepare_fx, prepare_qat_fx
from fxq.config import (ConvertCustomConfig, FloatOutputQConfig, FuseCustomConfig, PrepareCustomConfig, QConfig,
                        QConfigMapping,
                        default_dynamic_qconfig, default_per_channel_qconfig, default_qconfig,
                        float16_dynamic_qconfig, get_default_dynamic_qconfig_mapping, get_default_qconfig,
                        get_transformer_qconfig_mapping,
                        get_default_qconfig_mapping, get_weight_only_qconfig, get_weight_only_qconfig_mapping)
from fxq.config.qat import default_qat_qconfig, get_default_qat_qconfig, get_default_qat_qconfig_mapping
from fxq.config.spec import LayerSpec, QuantizerSpec, SpecError
from fxq.observers import (FakeQuantize, FakeQuantizeBase, FixedQParamsFakeQuantize, FusedMovingAvgObsFakeQuantize,
                           LearnableFakeQuantize, disable_fake_quant, disable_observer, enable_fake_quant,
                           enable_observer)
from fxq.nn.qat import freeze_bn_stats, update_bn_stats
from fxq.graph.qat_module import QATGraphModule
from fxq.passes.pipeline import PassError
from fxq.debug.dump import dump, to_networkx
from fxq.debug.calibration import calibrate
from fxq.debug.numeric import compare, sensitivity
from fxq.debug.budget import BudgetResult, quantize_with_budget
from fxq.graph.tracer import TraceError
from fxq.graph.compiling import compile  # noqa: A004 (fxq.compile, next to torch.compile)
from fxq.graph.leaves import find_untraceable
from fxq.config.registry import register_custom_module, unregister_custom_module
from fxq.equalization import (CrossLayerEqualization, EqualizationQConfig, SmoothQuant, cross_layer_equalize,
                              default_equalization_qconfig)

__version__ = "0.1.0"

# Module paths from before the layout of fxq/ had subpackages; `from fxq.numeric import compare` keeps working.
_MOVED_MODULES = {
    "tracer": "graph.tracer", "leaves": "graph.leaves", "module_copy": "graph.module_copy", "lazy_code": "graph.lazy_code",
    "node_meta": "graph.node_meta", "state": "graph.state", "modes": "graph.modes", "gc_pause": "graph.gc_pause",
    "dump": "debug.dump", "graph_records": "debug.graph_records", "provenance": "debug.provenance",
    "numeric": "debug.numeric", "sensitivity": "debug.sensitivity", "calibration": "debug.calibration",
    "timing": "debug.timing", "cli_commands": "cli.commands", "demo": "cli.demo", "demo_report": "cli.demo_report",
    "registry": "config.registry", "cost_model": "nn.cost_model",
}


def _alias_moved_modules() -> None:
    # An entry in sys.modules answers `import fxq.numeric` before any finder runs, and unlike a finder it does not
    # set the attribute on the package: `fxq.dump` and `fxq.sensitivity` stay the public functions.
    for old, new in _MOVED_MODULES.items():
        sys.modules[f"fxq.{old}"] = importlib.import_module(f"fxq.{new}")


def __getattr__(name: str):
    """``fxq.tracer`` and the other old module paths, as attributes (PEP 562)."""
    if name in _MOVED_MODULES:
        return sys.modules[f"fxq.{name}"]
    raise AttributeError(f"module 'fxq' has no attribute {name!r}")


_alias_moved_modules()

__all__ = [
    "prepare_fx", "convert_fx", "convert_to_reference_fx", "fuse_fx", "QConfig", "QConfigMapping",
    "PrepareCustomConfig", "ConvertCustomConfig", "FuseCustomConfig", "get_default_qconfig",
    "get_default_qconfig_mapping", "get_default_dynamic_qconfig_mapping", "default_qconfig",
    "default_per_channel_qconfig", "default_dynamic_qconfig", "float16_dynamic_qconfig", "get_weight_only_qconfig",
    "get_weight_only_qconfig_mapping", "observers", "mpath", "find_quantizers", "TraceError", "PassError",
    "dump", "to_networkx", "calibrate", "compare", "sensitivity",
]
__all__ += ["EqualizationQConfig", "default_equalization_qconfig", "cross_layer_equalize", "CrossLayerEqualization",
            "SmoothQuant", "FloatOutputQConfig", "get_transformer_qconfig_mapping", "quantize_with_budget", "BudgetResult"]
__all__ += ["find_untraceable", "register_custom_module", "unregister_custom_module", "compile"]
__all__ += ["prepare_qat_fx", "get_default_qat_qconfig", "get_default_qat_qconfig_mapping", "default_qat_qconfig",
            "FakeQuantizeBase", "FakeQuantize", "FixedQParamsFakeQuantize", "FusedMovingAvgObsFakeQuantize",
            "LearnableFakeQuantize", "enable_fake_quant", "disable_fake_quant", "enable_observer", "disable_observer",
            "freeze_bn_stats", "update_bn_stats", "QATGraphModule", "QuantizerSpec", "LayerSpec", "SpecError"]
