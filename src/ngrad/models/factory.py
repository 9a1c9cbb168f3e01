"""User factories: a model named ``module:factory`` (e.g. ``mypkg.nets:make_net``).

The module is imported (it must be importable: installed, or on ``sys.path``, such as the current
directory when ngrad runs as ``python -m ngrad``) and the factory, any callable attribute
(``module:Class`` or ``module:holder.attribute`` too), is called as::

    factory(input_shape, num_classes, **options)

with ``input_shape`` the shape of one sample as a tuple (e.g. ``(1, 28, 28)``) and the model
options by keyword. It must return a ``torch.nn.Module``. Options are checked against the
factory's signature: a name it does not take is refused (unless it has ``**kwargs``), and a value
for an annotated parameter (``width: int = 64``) is converted from command-line text the way
catalogue options are (``"64"`` -> 64, ``"32,64"`` -> ``(32, 64)`` for ``tuple[int, ...]``);
options for unannotated parameters arrive as given.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from torch import nn

from ngrad.errors import ConfigError
from ngrad.models.common import checked_classes, checked_shape
from ngrad.options import coerce_value

__all__ = ["build_from_factory", "is_factory_name", "load_factory"]


def is_factory_name(name: str) -> bool:
    """Whether ``name`` has the ``module:factory`` form (rather than a catalogue name)."""
    return ":" in name


def load_factory(name: str) -> Callable[..., Any]:
    """The callable ``name`` = ``module:attribute[.attribute...]`` designates."""
    module_name, _, attribute = name.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not module_name or not attribute or ":" in attribute:
        raise ConfigError(
            f"model {name!r}: a user factory is named module:factory (e.g. mypkg.nets:make_net)"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"model {name!r}: cannot import module {module_name!r} ({error}); it must be "
            "installed or on sys.path"
        ) from error
    walked = module_name
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"model {name!r}: {walked!r} has no attribute {part!r}")
        target = getattr(target, part)
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if not callable(target):
        raise ConfigError(
            f"model {name!r}: {attribute!r} is a {type(target).__name__}, not a callable factory"
        )
    return target


def build_from_factory(
    name: str, input_shape: Any, num_classes: Any, options: dict[str, Any]
) -> nn.Module:
    """Import the factory ``name``, call it and check that it returned an ``nn.Module``."""
    shape = checked_shape(input_shape, name)
    classes = checked_classes(num_classes, name)
    factory = load_factory(name)
    options = _checked_options(name, factory, shape, classes, options)
    model = factory(shape, classes, **options)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model {name!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _checked_options(
    name: str,
    factory: Callable[..., Any],
    shape: tuple[int, ...],
    classes: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """``options`` converted to the factory's annotated parameter types; ConfigError if the
    factory cannot be called as ``factory(input_shape, num_classes, **options)``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: call as is
        return options
    try:
        signature.bind(shape, classes, **options)
    except TypeError as error:
        if options:
            accepted = [
                p.name
                for p in list(signature.parameters.values())[2:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            known = ", ".join(accepted) or "(none)"
            detail = f"{error}; its options are: {known}"
        else:
            detail = str(error)
        raise ConfigError(
            f"model {name!r}: cannot call it as factory(input_shape, num_classes, **options): "
            f"{detail}"
        ) from None
    try:
        target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: pass the values as given
        hints = {}
    return {
        key: coerce_value(value, hints[key], f"model {name!r} option {key!r}")
        if key in hints and _coercible(hints[key])
        else value
        for key, value in options.items()
    }


_PLAIN = (int, float, bool, str, type(None), tuple, list)


def _coercible(annotation: Any) -> bool:
    """Whether ``annotation`` is built from plain values (int, float, bool, str, None, Literal,
    tuples and lists of them), which command-line text converts to; other types pass as given."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, tuple, list):
        return all(_coercible(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)
    return annotation in _PLAIN
