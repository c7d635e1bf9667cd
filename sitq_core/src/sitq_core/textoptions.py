"""Turn option values given as text (URL query, environment, CLI) into the types ``__init__`` expects.

A URL's ``?fsync=false&max_items=5`` arrives as the strings ``"false"`` and
``"5"``; passed on unchanged, ``"false"`` would be truthy. The default
``Backend.from_config`` converts a text value when the parameter is
annotated as ``bool``, ``int`` or ``float`` (alone or with ``None``), or has
a default of one of those types and no annotation. Anything else (``str``,
``Path``, unions with ``str``) is passed as given. A value that is not text
(from a config mapping) is passed as given too, unless it clearly does not fit
a parameter annotated so or as ``str`` (a list for ``fsync: bool``): that is refused.
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

from .errors import ValidationError, safe_repr
from .urls import looks_secret

__all__ = ["text_options_converted"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


_CONVERTERS: dict[type, tuple[Callable[[str], Any], str]] = {
    bool: (_to_bool, "true or false"),
    int: (int, "an integer"),
    float: (float, "a number"),
}


def _wanted_type(annotation: Any, default: Any, among: Collection[type] = tuple(_CONVERTERS)) -> type | None:
    """The one type of ``among`` (by default bool, int, float) the parameter takes (or None beside it), else None."""
    if annotation is inspect.Parameter.empty:
        kind = type(default)
        return kind if kind in among else None
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    members = [a for a in args if a is not type(None)] if args else [annotation]
    if len(members) == 1 and members[0] in among:
        return typing.cast(type, members[0])
    return None


#: What a value that is not text must be, for a parameter of each type: only a clear mismatch is refused
#: (a list for a bool); an int is fine for a bool (1) or a float, a whole float for an int (5.0).
_FITS: dict[type, Callable[[Any], bool]] = {
    bool: lambda value: isinstance(value, int),
    int: lambda value: (
        (not isinstance(value, bool) and isinstance(value, numbers.Integral))
        or (isinstance(value, float) and value.is_integer())
    ),
    # any real number, as the seconds options take (Fraction, Decimal, numpy scalars): not a bool
    float: lambda value: not isinstance(value, bool) and isinstance(value, numbers.Real | Decimal),
    str: lambda value: not isinstance(value, Mapping | list | tuple | set | frozenset | bytes | bytearray),
}
_EXPECTED = {**{kind: expected for kind, (_convert, expected) in _CONVERTERS.items()}, str: "text"}


def _check_value_type(backend: str, key: str, wanted: type, value: Any) -> None:
    """Refuse a value that is not text and clearly not of the parameter's type (``fsync=[1]`` for a bool)."""
    if value is None or _FITS[wanted](value):
        return
    shown = "" if looks_secret(key) else f" ({safe_repr(value)})"
    raise ValidationError(
        f"option {key!r} of backend {backend!r} must be {_EXPECTED[wanted]}, got {type(value).__name__}{shown}",
        parameter=key,
        value="***" if looks_secret(key) else value,
    )


def text_options_converted(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with text values converted for ``cls.__init__``'s bool/int/float parameters."""
    values = dict(options)
    if not values:
        return values
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    backend = getattr(cls, "name", "") or cls.__name__
    for key, value in values.items():
        parameter = parameters.get(key)
        if parameter is None:
            continue
        if not isinstance(value, str):
            annotation = hints.get(key, inspect.Parameter.empty)
            # only a declared type is held against a real value: a bare default (untyped=3) may take anything
            checked = None if annotation is inspect.Parameter.empty else _wanted_type(annotation, None, tuple(_FITS))
            if checked is not None:
                _check_value_type(backend, key, checked, value)
            continue
        wanted = _wanted_type(hints.get(key, inspect.Parameter.empty), parameter.default)
        if wanted is None:
            continue
        convert, expected = _CONVERTERS[wanted]
        try:
            values[key] = convert(value)
        except ValueError as exc:
            if not looks_secret(key):
                raise ValidationError(
                    f"option {key!r} of backend {backend!r} must be {expected}, got {safe_repr(value)}",
                    parameter=key,
                    value=value,
                    cause=exc,
                ) from exc
            secret = True  # (an api_key: int) neither its value nor the converter's error, which repeats it
        else:
            secret = False
        if secret:  # raised outside the handler, so that the converter's error is not its __context__ either
            raise ValidationError(
                f"option {key!r} of backend {backend!r} must be {expected}", parameter=key, value="***"
            )
    return values
