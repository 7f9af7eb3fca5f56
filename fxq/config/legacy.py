"""Checks shared by the custom configs' legacy dicts: known keys, quantization modes, typed lists."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["QUANT_MODES", "check_keys", "quant_mode", "str_list", "class_list", "int_list", "class_mapping"]

# PyTorch AO's QuantType names, as the legacy dicts spell them.
QUANT_MODES = ("static", "dynamic", "weight_only", "qat")


def check_keys(config: Mapping[str, Any], valid: Iterable[str], dict_name: str) -> None:
    """Raise a ValueError naming every unknown key of `config` and the valid ones (PyTorch AO ignores them)."""
    valid = tuple(valid)
    unknown = [key for key in config if key not in valid]
    if unknown:
        raise ValueError(
            f"{dict_name} has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(map(repr, valid))}"
        )


def quant_mode(mode: Any, where: str) -> str:
    """"static" / "dynamic" / "weight_only" / "qat"; also accepts PyTorch AO's QuantType enum members."""
    name = mode.name.lower() if hasattr(mode, "name") and not isinstance(mode, str) else mode
    if name not in QUANT_MODES:
        raise ValueError(f"{where}: unknown quantization mode {mode!r}; valid modes: {', '.join(QUANT_MODES)}")
    return name


def str_list(value: Any, where: str) -> list[str]:
    """A list of names; a bare string is one name (the PyTorch AO user guide writes it that way)."""
    names = [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{where}: expected module/attribute names (str), got {name!r}")
    return names


def class_list(value: Any, where: str) -> list[type]:
    """A list of classes; a bare class is one class."""
    classes = [value] if isinstance(value, type) else list(value)
    for cls in classes:
        if not isinstance(cls, type):
            raise TypeError(f"{where}: expected classes, got {cls!r}")
    return classes


def int_list(value: Any, where: str) -> list[int]:
    """A list of input/output indexes."""
    indexes = [value] if isinstance(value, int) else list(value)
    for index in indexes:
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"{where}: expected int indexes, got {index!r}")
    return indexes


def class_mapping(by_mode: Any, where: str) -> dict[str, dict[type, type]]:
    """{mode: {class: class}} with modes checked, e.g. {"static": {FloatLSTM: ObservedLSTM}}."""
    if not isinstance(by_mode, Mapping):
        raise TypeError(f'{where}: expected {{mode: {{class: class}}}}, e.g. {{"static": {{Float: Observed}}}}, '
                        f"got {by_mode!r}")
    result: dict[str, dict[type, type]] = {}
    for mode, classes in by_mode.items():
        if not isinstance(classes, Mapping):
            raise TypeError(f"{where}[{mode!r}]: expected {{class: class}}, got {classes!r}")
        result[quant_mode(mode, where)] = dict(classes)
    return result
