"""PrepareCustomConfig, ConvertCustomConfig, FuseCustomConfig: PyTorch AO's class API and legacy dicts.

    >>> from fxq.config import PrepareCustomConfig
    >>> config = PrepareCustomConfig.from_dict({"non_traceable_module_name": "sub", "input_quantized_idxs": [0]})
    >>> config.non_traceable_module_names, config.to_dict()["input_quantized_idxs"]
    (['sub'], [0])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from fxq.config import legacy
from fxq.config.qconfig_mapping import QConfigMapping

__all__ = ["StandaloneModuleConfigEntry", "PrepareCustomConfig", "ConvertCustomConfig", "FuseCustomConfig"]


class _CustomConfig:
    """Shared behaviour: coerce, equality and repr through the legacy dict."""

    DICT_KEYS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def coerce(cls, obj: Any) -> Any:
        """An instance from None (empty), a legacy dict, an instance (returned as is) or PyTorch AO's equivalent."""
        if obj is None:
            return cls()
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, dict):
            return cls.from_dict(obj)
        if type(obj).__name__ == cls.__name__ and hasattr(obj, "to_dict"):
            return cls.from_dict(obj.to_dict())
        raise TypeError(f"expected a {cls.__name__}, a legacy dict or None, got {type(obj).__name__}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


@dataclass
class StandaloneModuleConfigEntry:
    """How to prepare one standalone module; None fields fall back to the parent's settings."""

    qconfig_mapping: Optional[QConfigMapping]
    example_inputs: tuple
    prepare_custom_config: Optional["PrepareCustomConfig"]
    backend_config: Any

    def legacy(self, key: Any) -> tuple:
        qconfig_dict = None if self.qconfig_mapping is None else self.qconfig_mapping.to_dict()
        prepare_dict = None if self.prepare_custom_config is None else self.prepare_custom_config.to_dict()
        return (key, qconfig_dict, self.example_inputs, prepare_dict, self.backend_config)


TRACERS = ("auto", "fx", "export")


class PrepareCustomConfig(_CustomConfig):
    """Options of prepare_fx beyond the qconfig mapping: standalone, custom and non-traceable modules, etc.

    >>> import torch
    >>> config = (PrepareCustomConfig().set_non_traceable_module_names(["encoder"])
    ...           .set_input_quantized_indexes([0]).set_auto_leaf(True))
    >>> config.to_dict()
    {'non_traceable_module_name': ['encoder'], 'input_quantized_idxs': [0], 'auto_leaf': True}
    """

    DICT_KEYS = ("standalone_module_name", "standalone_module_class", "float_to_observed_custom_module_class",
                 "non_traceable_module_name", "non_traceable_module_class", "non_traceable_module_mpath",
                 "input_quantized_idxs",
                 "output_quantized_idxs", "preserved_attributes", "auto_leaf", "tracer_class", "tracer_options",
                 "cost_model", "tracer")

    def __init__(self) -> None:
        self.standalone_module_names: dict[str, StandaloneModuleConfigEntry] = {}
        self.standalone_module_classes: dict[type, StandaloneModuleConfigEntry] = {}
        self.float_to_observed_mapping: dict[str, dict[type, type]] = {}  # mode -> {float class: observed class}
        self.non_traceable_module_names: list[str] = []
        self.non_traceable_module_classes: list[type] = []
        self.non_traceable_module_mpaths: list[str] = []  # fxq.mpath queries over the model's module tree
        self.input_quantized_indexes: list[int] = []
        self.output_quantized_indexes: list[int] = []
        self.preserved_attributes: list[str] = []
        self.auto_leaf: bool = False
        self.tracer_class: Optional[type] = None  # a torch.fx.Tracer subclass; fxq mixes its scope recording in
        self.tracer_options: dict[str, Any] = {}  # the tracer's constructor arguments, plus "concrete_args"
        self.cost_model: Union[bool, str] = "auto"
        self.tracer: str = "auto"  # "fx": fxq's tracer only; "export": torch.export only; "auto": fx, then export

    def _standalone_entry(self, qconfig_mapping: Any, example_inputs: Any, prepare_custom_config: Any,
                          backend_config: Any) -> StandaloneModuleConfigEntry:
        # None means "use the parent's", so it must stay None rather than become an empty config.
        mapping = None if qconfig_mapping is None else QConfigMapping.coerce(qconfig_mapping)
        child = None if prepare_custom_config is None else PrepareCustomConfig.coerce(prepare_custom_config)
        return StandaloneModuleConfigEntry(mapping, tuple(example_inputs), child, backend_config)

    def set_standalone_module_name(self, module_name: str, qconfig_mapping: Any = None, example_inputs: Any = (),
                                   prepare_custom_config: Any = None, backend_config: Any = None
                                   ) -> "PrepareCustomConfig":
        """Prepare the module at `module_name` as a standalone unit (None arguments: use the parent's)."""
        if not isinstance(module_name, str):
            raise TypeError(f"set_standalone_module_name: expected a module name str, got {module_name!r}")
        self.standalone_module_names[module_name] = self._standalone_entry(
            qconfig_mapping, example_inputs, prepare_custom_config, backend_config)
        return self

    def set_standalone_module_class(self, module_class: type, qconfig_mapping: Any = None, example_inputs: Any = (),
                                    prepare_custom_config: Any = None, backend_config: Any = None
                                    ) -> "PrepareCustomConfig":
        """Prepare every module of `module_class` as a standalone unit (None arguments: use the parent's)."""
        if not isinstance(module_class, type):
            raise TypeError(f"set_standalone_module_class: expected a class, got {module_class!r}")
        self.standalone_module_classes[module_class] = self._standalone_entry(
            qconfig_mapping, example_inputs, prepare_custom_config, backend_config)
        return self

    def set_float_to_observed_mapping(self, float_class: type, observed_class: type,
                                      quant_type: Any = "static") -> "PrepareCustomConfig":
        """Swap `float_class` modules for `observed_class.from_float(module)` in prepare, for mode `quant_type`."""
        mode = legacy.quant_mode(quant_type, "set_float_to_observed_mapping")
        self.float_to_observed_mapping.setdefault(mode, {})[float_class] = observed_class
        return self

    def set_non_traceable_module_names(self, module_names: Any) -> "PrepareCustomConfig":
        """Modules (by path; a bare str is one path) that tracing keeps as leaves and leaves unquantized inside."""
        self.non_traceable_module_names = legacy.str_list(module_names, "set_non_traceable_module_names")
        return self

    def set_non_traceable_module_classes(self, module_classes: Any) -> "PrepareCustomConfig":
        """Module classes that tracing keeps as leaves."""
        self.non_traceable_module_classes = legacy.class_list(module_classes, "set_non_traceable_module_classes")
        return self

    def set_non_traceable_module_mpath(self, queries: Any) -> "PrepareCustomConfig":
        """Modules an fxq.mpath query selects (a bare str is one query) that tracing keeps as leaves; resolved
        against the model's module tree before tracing.

        >>> PrepareCustomConfig().set_non_traceable_module_mpath("**/[cls:torch.nn.LSTM]").to_dict()
        {'non_traceable_module_mpath': ['**/[cls:torch.nn.LSTM]']}
        """
        from fxq.mpath import compile as compile_query  # late: fxq.mpath imports the tracer, not the config

        queries = legacy.str_list(queries, "set_non_traceable_module_mpath")
        for query in queries:
            compile_query(query)  # a bad query fails here, with a caret, not in the middle of prepare_fx
        self.non_traceable_module_mpaths = queries
        return self

    def set_input_quantized_indexes(self, indexes: Any) -> "PrepareCustomConfig":
        """Graph inputs (by position) that arrive already quantized instead of in float."""
        self.input_quantized_indexes = legacy.int_list(indexes, "set_input_quantized_indexes")
        return self

    def set_output_quantized_indexes(self, indexes: Any) -> "PrepareCustomConfig":
        """Graph outputs (by position) that stay quantized instead of being dequantized."""
        self.output_quantized_indexes = legacy.int_list(indexes, "set_output_quantized_indexes")
        return self

    def set_preserved_attributes(self, attributes: Any) -> "PrepareCustomConfig":
        """Attributes copied onto the GraphModule even though forward does not use them."""
        self.preserved_attributes = legacy.str_list(attributes, "set_preserved_attributes")
        return self

    def set_auto_leaf(self, auto_leaf: bool = True) -> "PrepareCustomConfig":
        """Let tracing make untraceable modules leaves on its own (a stored flag the tracer reads)."""
        self.auto_leaf = bool(auto_leaf)
        return self

    def set_cost_model(self, enabled: Union[bool, str] = True) -> "PrepareCustomConfig":
        """Time each Linear / Conv2d once per shape (fxq.nn.cost_model): layers slower as int8 than as float stay
        float (the dumps say why), the others are packed for the engine that runs them fastest. An engine name
        ("x86", "fbgemm", "onednn", "plain") instead of True pins that engine; False quantizes every layer the
        qconfig asks for. The default, "auto", is on (for the kernels of the lowering convert_fx will run,
        see fxq.config.lowering) unless the environment variable ``FXQ_COST_MODEL=off``.

        >>> PrepareCustomConfig().set_cost_model("onednn").to_dict()
        {'cost_model': 'onednn'}
        >>> PrepareCustomConfig().set_cost_model(False).to_dict()
        {'cost_model': False}
        """
        if not isinstance(enabled, (bool, str)):
            raise TypeError(f"set_cost_model: expected True/False or an engine name, got {enabled!r}")
        self.cost_model = enabled
        return self

    def set_tracer_strategy(self, tracer: str = "auto") -> "PrepareCustomConfig":
        """Which tracer makes the graph: ``"fx"`` (fxq's symbolic tracer), ``"export"`` (torch.export, non-strict,
        batch dimension dynamic) or ``"auto"`` (the default: fx, and torch.export when symbolic tracing fails).

        >>> PrepareCustomConfig().set_tracer_strategy("export").to_dict()
        {'tracer': 'export'}
        """
        if tracer not in TRACERS:
            raise ValueError(f"prepare_custom_config['tracer'] is {tracer!r}; expected one of {', '.join(TRACERS)}")
        self.tracer = tracer
        return self

    def set_tracer(self, tracer_class: Optional[type] = None, **options: Any) -> "PrepareCustomConfig":
        """Trace with ``tracer_class`` (a torch.fx.Tracer subclass) and/or these options: the tracer's constructor
        arguments (``param_shapes_constant``, ``autowrap_functions``, ...) and ``concrete_args`` for ``trace()``.

        >>> PrepareCustomConfig().set_tracer(concrete_args={"mask": None}).to_dict()
        {'tracer_options': {'concrete_args': {'mask': None}}}
        """
        import torch.fx
        if tracer_class is not None and not (isinstance(tracer_class, type)
                                             and issubclass(tracer_class, torch.fx.Tracer)):
            raise TypeError(f"set_tracer: expected a torch.fx.Tracer subclass, got {tracer_class!r}")
        self.tracer_class, self.tracer_options = tracer_class, dict(options)
        return self

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> "PrepareCustomConfig":
        """Build from PyTorch AO's prepare_custom_config_dict (plus "auto_leaf"); unknown keys raise ValueError."""
        legacy.check_keys(config_dict, cls.DICT_KEYS, "prepare_custom_config_dict")
        config = cls()
        for key, setter in (("standalone_module_name", config.set_standalone_module_name),
                            ("standalone_module_class", config.set_standalone_module_class)):
            for position, entry in enumerate(config_dict.get(key, ())):
                if not isinstance(entry, (tuple, list)) or len(entry) != 5:
                    raise ValueError(f'prepare_custom_config_dict["{key}"][{position}] is {entry!r}; expected '
                                     f"(name or class, qconfig_mapping, example_inputs, prepare_custom_config, "
                                     f"backend_config)")
                setter(*entry)
        by_mode = legacy.class_mapping(config_dict.get("float_to_observed_custom_module_class", {}),
                                       'prepare_custom_config_dict["float_to_observed_custom_module_class"]')
        for mode, classes in by_mode.items():
            for float_class, observed_class in classes.items():
                config.set_float_to_observed_mapping(float_class, observed_class, mode)
        config.set_non_traceable_module_names(config_dict.get("non_traceable_module_name", []))
        config.set_non_traceable_module_classes(config_dict.get("non_traceable_module_class", []))
        config.set_non_traceable_module_mpath(config_dict.get("non_traceable_module_mpath", []))
        config.set_input_quantized_indexes(config_dict.get("input_quantized_idxs", []))
        config.set_output_quantized_indexes(config_dict.get("output_quantized_idxs", []))
        config.set_preserved_attributes(config_dict.get("preserved_attributes", []))
        config.set_auto_leaf(config_dict.get("auto_leaf", False))
        config.set_cost_model(config_dict.get("cost_model", "auto"))
        config.set_tracer_strategy(config_dict.get("tracer", "auto"))
        options = config_dict.get("tracer_options", {})
        if not isinstance(options, dict):
            raise TypeError(f'prepare_custom_config_dict["tracer_options"]: expected a dict, got {options!r}')
        return config.set_tracer(config_dict.get("tracer_class"), **options)

    def to_dict(self) -> dict[str, Any]:
        """The legacy dict; empty settings are left out, as PyTorch AO does."""
        items = {
            "standalone_module_name": [e.legacy(name) for name, e in self.standalone_module_names.items()],
            "standalone_module_class": [e.legacy(cls) for cls, e in self.standalone_module_classes.items()],
            "float_to_observed_custom_module_class": {m: dict(c) for m, c in self.float_to_observed_mapping.items()},
            "non_traceable_module_name": list(self.non_traceable_module_names),
            "non_traceable_module_class": list(self.non_traceable_module_classes),
            "non_traceable_module_mpath": list(self.non_traceable_module_mpaths),
            "input_quantized_idxs": list(self.input_quantized_indexes),
            "output_quantized_idxs": list(self.output_quantized_indexes),
            "preserved_attributes": list(self.preserved_attributes),
            "auto_leaf": self.auto_leaf,
            "tracer_class": self.tracer_class,
            "tracer_options": dict(self.tracer_options),
            "cost_model": None if self.cost_model == "auto" else self.cost_model,
            "tracer": self.tracer if self.tracer != "auto" else None,
        }
        kept = {key: value for key, value in items.items() if value}
        if self.cost_model is False:  # off differs from the default ("auto", on)
            kept["cost_model"] = False
        return kept


LOWERINGS = ("auto", "plain", "quantized")


class ConvertCustomConfig(_CustomConfig):
    """Options of convert_fx: custom observed -> quantized module classes, preserved attributes, and fxq's
    ``lowering``: "plain" (uint8 tensors on oneDNN kernels), "quantized" (PyTorch AO's quantized tensors and
    modules) or "auto" (the default: plain on x86 CPUs whose torch has the oneDNN kernels, see
    fxq.config.lowering); ``keep_roundings`` (plain only): round exactly where the quantized-tensor lowering does
    instead of fusing activations, residual adds and float outputs into the kernels.

    >>> ConvertCustomConfig().set_preserved_attributes(["version"]).to_dict()
    {'preserved_attributes': ['version']}
    >>> ConvertCustomConfig.from_dict({"lowering": "quantized"}).lowering
    'quantized'
    """

    DICT_KEYS = ("observed_to_quantized_custom_module_class", "preserved_attributes", "lowering", "keep_roundings")

    def __init__(self) -> None:
        self.observed_to_quantized_mapping: dict[str, dict[type, type]] = {}  # mode -> {observed: quantized}
        self.preserved_attributes: list[str] = []
        self.lowering: str = "auto"
        # plain lowering: True keeps every rounding of the reference graph (no activation, residual or float output
        # fused across a quantize), so the result matches the quantized-tensor lowering's; for parity checks
        self.keep_roundings: bool = False

    def set_lowering(self, lowering: str) -> "ConvertCustomConfig":
        """"plain", "quantized" or "auto" (see the class docstring)."""
        if lowering not in LOWERINGS:
            raise ValueError(f"convert_custom_config['lowering'] = {lowering!r}; choose one of {', '.join(LOWERINGS)}")
        self.lowering = lowering
        return self

    def set_observed_to_quantized_mapping(self, observed_class: type, quantized_class: type,
                                          quant_type: Any = "static") -> "ConvertCustomConfig":
        """Swap `observed_class` modules for `quantized_class.from_observed(module)` in convert."""
        mode = legacy.quant_mode(quant_type, "set_observed_to_quantized_mapping")
        self.observed_to_quantized_mapping.setdefault(mode, {})[observed_class] = quantized_class
        return self

    def set_preserved_attributes(self, attributes: Any) -> "ConvertCustomConfig":
        """Attributes copied onto the converted GraphModule even though forward does not use them."""
        self.preserved_attributes = legacy.str_list(attributes, "set_preserved_attributes")
        return self

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> "ConvertCustomConfig":
        """Build from PyTorch AO's convert_custom_config_dict; unknown keys or modes raise ValueError."""
        legacy.check_keys(config_dict, cls.DICT_KEYS, "convert_custom_config_dict")
        config = cls()
        by_mode = legacy.class_mapping(config_dict.get("observed_to_quantized_custom_module_class", {}),
                                       'convert_custom_config_dict["observed_to_quantized_custom_module_class"]')
        for mode, classes in by_mode.items():
            for observed_class, quantized_class in classes.items():
                config.set_observed_to_quantized_mapping(observed_class, quantized_class, mode)
        config.set_lowering(config_dict.get("lowering", "auto"))
        config.keep_roundings = bool(config_dict.get("keep_roundings", False))
        return config.set_preserved_attributes(config_dict.get("preserved_attributes", []))

    def to_dict(self) -> dict[str, Any]:
        """The legacy dict; empty settings are left out."""
        items = {
            "observed_to_quantized_custom_module_class": {
                mode: dict(classes) for mode, classes in self.observed_to_quantized_mapping.items()},
            "preserved_attributes": list(self.preserved_attributes),
            "lowering": None if self.lowering == "auto" else self.lowering,
            "keep_roundings": self.keep_roundings,
        }
        return {key: value for key, value in items.items() if value}


class FuseCustomConfig(_CustomConfig):
    """Options of fuse_fx: preserved attributes, and `fold_linear_chains` (stored for the fusion pass).

    >>> FuseCustomConfig.from_dict({"fold_linear_chains": True}).fold_linear_chains
    True
    """

    DICT_KEYS = ("preserved_attributes", "fold_linear_chains")

    def __init__(self) -> None:
        self.preserved_attributes: list[str] = []
        self.fold_linear_chains: bool = False

    def set_preserved_attributes(self, attributes: Any) -> "FuseCustomConfig":
        """Attributes copied onto the fused GraphModule even though forward does not use them."""
        self.preserved_attributes = legacy.str_list(attributes, "set_preserved_attributes")
        return self

    def set_fold_linear_chains(self, fold: bool = True) -> "FuseCustomConfig":
        """Ask fusion to fold chains of linear ops (a stored flag the fusion pass reads)."""
        self.fold_linear_chains = bool(fold)
        return self

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> "FuseCustomConfig":
        """Build from PyTorch AO's fuse_custom_config_dict (plus "fold_linear_chains")."""
        legacy.check_keys(config_dict, cls.DICT_KEYS, "fuse_custom_config_dict")
        config = cls().set_preserved_attributes(config_dict.get("preserved_attributes", []))
        return config.set_fold_linear_chains(config_dict.get("fold_linear_chains", False))

    def to_dict(self) -> dict[str, Any]:
        """The legacy dict; empty settings are left out."""
        items = {"preserved_attributes": list(self.preserved_attributes), "fold_linear_chains": self.fold_linear_chains}
        return {key: value for key, value in items.items() if value}
