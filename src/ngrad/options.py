"""Frozen-dataclass options: unknown keys and bad values fail with a message naming the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from ngrad.errors import ConfigError

__all__ = [
    "REQUIRED",
    "OptionInfo",
    "build_options",
    "check_bounds",
    "coerce_value",
    "describe_options",
    "options_as_dict",
]

T = TypeVar("T")

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: a larger option overflows a tensor
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
    """Convert ``value`` (a TOML or JSON value, a Python value or a command-line string) to
    ``annotation``'s type.

    Values are checked, never rounded: a float where an int is expected (1.5, even 2.0), a bool
    where a number is expected, and a float that is not finite (nan, inf) or beyond the float32
    range raise ConfigError; an int is accepted where a float is expected. The items of a
    ``tuple[int, ...]`` (a TOML list, or comma-separated on the command line) are checked the
    same way.
    """
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
        return _from_text(value, annotation, allowed, where)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and float in allowed
        and int not in allowed
    ):
        return _finite(value, where)
    if isinstance(value, list | tuple) and (tuple in allowed or list in allowed):
        return _sequence(value, annotation, where)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ConfigError(f"{where} expects {_describe_annotation(annotation)}, got {value!r}")
    if isinstance(value, float):
        return _finite(value, where)
    return value


def _from_text(value: str, annotation: Any, allowed: tuple[type, ...], where: str) -> Any:
    """A command-line string converted to ``annotation``'s type."""
    text = value.strip().lower()
    if bool in allowed and text in _TRUE | _FALSE:
        return text in _TRUE
    if type(None) in allowed and text in {"none", "null"}:
        return None
    if int in allowed:
        try:
            return int(value)
        except ValueError:
            pass
    if float in allowed:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return _finite(number, where, shown=value)
    if tuple in allowed or list in allowed:
        parts = [part for part in value.split(",") if part.strip()]
        return _sequence(parts, annotation, where, shown=value)
    raise ConfigError(f"{where} expects {_describe_annotation(annotation)}, got {value!r}")


def _finite(value: float | int, where: str, shown: str | None = None) -> float:
    """``value`` as a float, refusing nan, inf and ints beyond the float range."""
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(
            f"{where} must be a finite number, got an integer of {len(str(value))} digits"
        ) from None
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {shown or repr(value)}")
    if abs(number) > FLOAT32_MAX:
        raise ConfigError(
            f"{where} must lie within the float32 range (magnitude <= {FLOAT32_MAX:.4g}), got "
            f"{shown or repr(value)}"
        )
    return number


def _sequence_annotation(annotation: Any) -> Any:
    """The tuple[...] or list[...] member of ``annotation`` (which may be a union)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) in (tuple, list) or arg in (tuple, list):
                return arg
    return annotation


def _sequence(
    values: list[Any] | tuple[Any, ...], annotation: Any, where: str, shown: str | None = None
) -> tuple[Any, ...] | list[Any]:
    """A list's items checked against the item type of ``tuple[X, ...]`` / ``list[X]`` (a
    fixed-length ``tuple[X, Y]`` also checks the length); returned as a tuple (list for list).
    ``shown`` is the value as the user wrote it, for the message."""
    annotation = _sequence_annotation(annotation)
    origin = typing.get_origin(annotation) or annotation
    args = typing.get_args(annotation)
    written = shown if shown is not None else list(values)
    expected = f"{where} expects {_describe_annotation(annotation)}, got {written!r}"
    if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(values):
        raise ConfigError(expected)
    if not args:
        return list(values) if origin is list else tuple(values)
    repeated = origin is list or args[-1] is Ellipsis
    items = []
    for index, item in enumerate(values):
        try:
            items.append(coerce_value(item, args[0] if repeated else args[index], where))
        except ConfigError:
            raise ConfigError(f"{expected} (item {index}: {item!r})") from None
    return items if origin is list else tuple(items)


def _describe_annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_annotation(arg) for arg in typing.get_args(annotation))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if not args:
            return "a list"
        if len(set(args)) == 1:
            return f"a list of {_describe_annotation(args[0])}"
        return f"a list of {len(args)} values ({', '.join(map(_describe_annotation, args))})"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    return _describe(_allowed_types(annotation))


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
    """Raise ValueError naming the first option outside its bound (for ``__post_init__``). A
    per-layer option (a tuple) must be non-empty and hold every item within the bound."""
    bounds = (
        (positive, lambda v: v > 0, "positive"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
    )
    for names, holds, wording in bounds:
        for name in names:
            value = getattr(options, name)
            items = value if isinstance(value, tuple) else (value,)
            if not items:
                raise ValueError(f"option {name!r} needs at least one value, got {value!r}")
            if not all(holds(item) for item in items):
                every = "every value of " if isinstance(value, tuple) else ""
                raise ValueError(f"{every}option {name!r} must be {wording}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option of an options dataclass, as ``ngrad list --rule NAME`` shows it."""

    name: str
    type: str  # e.g. "float", "int", "str", "float | None", "tuple[int, ...]"
    default: Any  # the field's default (a default_factory is called); REQUIRED if none
    choices: tuple[Any, ...] | None  # the values a Literal type allows (None: any of its type)
    help: str  # the trailing comment on the field's line ("" when the source cannot be read)


REQUIRED = "(required)"


def describe_options(options_cls: type) -> list[OptionInfo]:
    """Name, type, default, choices and meaning of every field of ``options_cls``.

    The meaning is the comment that ends the field's line in the source of the dataclass or of
    the base class that declares it (``beta: float = 0.2  # strength of the output nudge``); a
    comment-only line right below it whose text is indented (``#     and more``) continues it.
    Without readable source (a frozen install, a class made at run time) every ``help`` is empty.
    """
    if not dataclasses.is_dataclass(options_cls):
        raise TypeError(f"{options_cls!r} is not a dataclass")
    hints = typing.get_type_hints(options_cls)
    comments = _field_comments(options_cls)
    described = []
    for item in dataclasses.fields(options_cls):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = REQUIRED
        annotation = hints.get(item.name, item.type)
        choices = _literal_choices(annotation)
        described.append(
            OptionInfo(
                name=item.name,
                type=_type_name(annotation),
                default=default,
                choices=choices,
                help=comments.get(item.name, ""),
            )
        )
    return described


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        choices = [c for arg in typing.get_args(annotation) for c in _literal_choices(arg) or ()]
        return tuple(choices) or None
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        kinds = dict.fromkeys(type(choice).__name__ for choice in typing.get_args(annotation))
        return " | ".join(kinds)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(
            "..." if a is Ellipsis else _type_name(a) for a in typing.get_args(annotation)
        )
        return f"{origin.__name__}[{args}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _field_comments(options_cls: type) -> dict[str, str]:
    """{field name: its trailing comment} over the class and its dataclass bases."""
    comments: dict[str, str] = {}
    for klass in reversed(options_cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass):
            comments.update(_class_comments(klass))
    return comments


def _class_comments(klass: type) -> dict[str, str]:
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(klass))
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return {}
    comments: dict[str, list[str]] = {}
    depth = 0  # 1: the class body (0: the class line, 2: inside its methods)
    statement: list[tokenize.TokenInfo] = []
    notes: list[str] = []  # comments of the statement being read
    last: tuple[str, int] | None = None  # (field, line) of the last commented field
    for token in tokens:
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.COMMENT:
            text = token.string[1:]
            if statement:
                notes.append(text.strip())
            elif last and token.start[0] == last[1] + 1 and text.startswith("  "):
                comments[last[0]].append(text.strip())  # an indented continuation line
                last = (last[0], token.start[0])
            else:
                last = None
        elif token.type == tokenize.NEWLINE:
            name = _annotated_name(statement) if depth == 1 else None
            last = None
            if name and notes:
                comments[name] = notes
                last = (name, token.start[0])
            statement, notes = [], []
        elif token.type not in (tokenize.NL, tokenize.ENDMARKER):
            statement.append(token)
    return {name: " ".join(parts) for name, parts in comments.items()}


def _annotated_name(statement: list[Any]) -> str | None:
    """The field a statement ``name: type [= default]`` declares (None for anything else)."""
    import tokenize

    if len(statement) >= 2 and statement[0].type == tokenize.NAME and statement[1].string == ":":
        return statement[0].string
    return None
