"""Typed values for config dataclasses: YAML and the command line give strings, ints for floats, 'no' for False;
`coerce` turns each into its field's type or raises ConfigError naming the field (TrainConfig and SourceConfig)."""
from __future__ import annotations

import math
import re
import types
import typing
from typing import Any

from .errors import ConfigError

_INT = re.compile(r"[+-]?\d+")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_EXPECTED = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " (or null)"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list (each {_describe(args[0])})" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return _EXPECTED.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce_scalar(value: Any, tp: type) -> Any:
    """`value` as `tp`, or raise ValueError. Strings are parsed (CLI, and YAML spellings PyYAML keeps as strings such
    as `1e-3`); a float must be whole to become an int (1.5 epochs is refused, not rounded)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if isinstance(value, bool):  # True is an int in Python; never a number here
        raise ValueError
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
        if isinstance(value, str) and float(value).is_integer():  # '1e3' (PyYAML keeps it a string)
            return int(float(value))
        raise ValueError
    if tp is float:
        number = float(value) if isinstance(value, (int, float, str)) else math.nan
        if not math.isfinite(number):
            raise ValueError
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):  # `output_dir: 2024` in YAML
            return str(value)
        raise ValueError
    return value


def coerce(name: str, value: Any, tp: Any) -> Any:
    """`value` converted to the field type `tp` (from the dataclass annotations), or ConfigError naming the field and
    the type it expects. Works for int, float, bool, str, `X | None`, `list[X]` and `dict[...]`: new fields get it free."""
    args, origin = typing.get_args(tp), typing.get_origin(tp)
    try:
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1:
                return value  # a real union: left to __post_init__'s checks
            return coerce(name, value, inner[0])
        if origin is list:
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [coerce(f"{name}[{i}]", v, args[0]) if args else v for i, v in enumerate(value)]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
        if isinstance(tp, type):
            return _coerce_scalar(value, tp)
        return value
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"invalid {name}={value!r}: expected {_describe(tp)}") from None
