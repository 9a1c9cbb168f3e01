"""Frozen-dataclass options: unknown keys and bad values fail with a message naming the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from ngrad.errors import ConfigError

__all__ = ["build_options", "check_bounds", "coerce_value", "options_as_dict"]

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    if origin is typing.Literal:
        return tuple({type(a) for a in typing.get_args(annotation)})
    if origin in (tuple, list, dict):
        return (origin,)
    if annotation is type(None):
        return (type(None),)
    return (annotation,)


def coerce_value(value: Any, annotation: Any, where: str) -> Any:
    """Convert ``value`` (a TOML value or a command-line string) to ``annotation``'s type."""
    allowed = _allowed_types(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value
    if isinstance(value, bool) and bool in allowed:
        return value
    if isinstance(value, str) and str not in allowed:
        text = value.strip().lower()
        if bool in allowed and text in _TRUE | _FALSE:
            return text in _TRUE
        if type(None) in allowed and text in {"none", "null"}:
            return None
        for kind in (int, float):
            if kind in allowed:
                try:
                    return kind(value)
                except ValueError:
                    continue
        if tuple in allowed or list in allowed:
            try:
                return tuple(int(part) for part in value.split(",") if part.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} expects {_describe(allowed)}, got {value!r}")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and float in allowed
        and int not in allowed
    ):
        return float(value)
    if isinstance(value, list) and (tuple in allowed):
        return tuple(value)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ConfigError(f"{where} expects {_describe(allowed)}, got {value!r}")
    return value


def _describe(allowed: tuple[type, ...]) -> str:
    return " or ".join("none" if t is type(None) else t.__name__ for t in allowed)


def build_options(options_type: type[T], given: dict[str, Any], owner: str) -> T:
    """Instantiate ``options_type`` from ``given``; ``owner`` names what the options belong to."""
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(f"{owner} has no option {unknown[0]!r}; its options are: {known}")
    hints = typing.get_type_hints(options_type)
    values = {
        key: coerce_value(value, hints[key], f"{owner} option {key!r}")
        for key, value in given.items()
    }
    try:
        return options_type(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{owner}: {error}") from None


def options_as_dict(options: Any) -> dict[str, Any]:
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}


def check_bounds(
    options: Any,
    *,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    at_least_one: tuple[str, ...] = (),
) -> None:
    """Raise ValueError naming the first option outside its bound (for ``__post_init__``)."""
    bounds = (
        (positive, lambda v: v > 0, "positive"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
    )
    for names, holds, wording in bounds:
        for name in names:
            value = getattr(options, name)
            if not holds(value):
                raise ValueError(f"option {name!r} must be {wording}, got {value!r}")
