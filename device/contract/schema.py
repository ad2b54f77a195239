"""Typed dataclasses to and from JSON-like mappings: one strict converter for every schema.

The device configuration (:mod:`device.config`) and every message the device exchanges
(:mod:`device.contract.messages`) are dataclasses; :func:`load` builds one from a parsed mapping and
:func:`dump` turns one back into JSON-ready data. ``load`` refuses unknown keys by name,
checks every value against the field's type hint and names the key path in the error.
Range checks stay in each dataclass's ``__post_init__``.

A field may carry ``metadata={"load": func}``: ``func(value, where)`` then builds the value
(for a section with rules of its own, such as the safety profiles).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class SchemaError(ValueError):
    """A mapping does not fit its schema; the message names the key and the problem."""


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a schema (cached: resolving them is slow)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _describe(hint: Any) -> str:
    """The expected type in plain words, for error messages."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        named = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_plural(args[0])}"
    if origin is dict:
        return f"a table of {_plural(args[1])}"
    if dataclasses.is_dataclass(hint):
        return "a table of settings"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in hint)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _plural(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", Path: "paths"}.get(hint, "values")


def _fail(where: str, hint: Any, error: type[ValueError]) -> typing.NoReturn:
    raise error(f"{where or 'the value'} must be {_describe(hint)}")


def load(
    cls: type[T],
    data: object,
    where: str = "",
    what: str = "field",
    error: type[ValueError] = SchemaError,
    root: str = "the message",
) -> T:
    """Build dataclass ``cls`` from ``data``, strictly; ``where`` prefixes key names in errors.

    ``what`` names a key in error messages ("field", "setting"), ``root`` the whole mapping
    ("the message", "the config"); ``error`` is the exception class raised.
    """
    if not isinstance(data, Mapping):
        raise error(f"{where or root} must be a table of {what}s")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{where}." if where else ""
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise error(f"unknown {what}(s): {', '.join(prefix + k[:40] for k in unknown[:10])}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise error(f"missing {what} '{prefix}{name}'")
            continue
        custom: Callable[[object, str], object] | None = f.metadata.get("load")
        if custom is not None:
            kwargs[name] = custom(data[name], prefix + name)
        else:
            kwargs[name] = _value(hints[name], data[name], prefix + name, what, error)
    return cls(**kwargs)


def _value(hint: Any, value: object, where: str, what: str, error: type[ValueError]) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value == "" and Path in args and type(None) in args:
            return None  # TOML has no null: an empty string leaves an optional path unset
        if value is None:
            if type(None) in args:
                return None
            _fail(where, hint, error)
        for option in (a for a in args if a is not type(None)):
            try:
                return _value(option, value, where, what, error)
            except ValueError:
                continue
        _fail(where, hint, error)
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            _fail(where, hint, error)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            _fail(where, hint, error)
        items = [_value(args[0], v, f"{where}[{i}]", what, error) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            _fail(where, hint, error)
        return {k: _value(args[1], v, f"{where}.{k}", what, error) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return load(hint, value, where, what, error)  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            _fail(where, hint, error)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(where, hint, error)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, hint, error)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            _fail(where, hint, error)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(where, hint, error)
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            _fail(where, hint, error)
        return Path(value).expanduser()
    raise TypeError(f"schema type {hint!r} of {where} is not supported")


def dump(obj: object) -> Any:
    """JSON-ready data from a dataclass (and what it holds): enums by value, paths as strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [dump(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): dump(v) for k, v in obj.items()}
    return obj


def field_names(cls: type) -> tuple[str, ...]:
    """The keys of a schema, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))
