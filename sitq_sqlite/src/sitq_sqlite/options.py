"""Checks of ``SQLiteBackend``'s constructor arguments: the database path and the tuning options.

Bad input is refused here, before anything touches the file system, with a
``ValidationError`` naming the parameter and what was expected: a path that
is a URL, a ``file:`` URI, a folder or empty; an option out of its range.
A relative path is made absolute here, naming the file the OS would open
for it (a ``..`` after a symlinked folder goes to the parent of its target).
"""

from __future__ import annotations

import os
import re
from typing import Any

from sitq_core import checks
from sitq_core.errors import ValidationError, safe_repr

MEMORY = ":memory:"


def _validate_path(path: Any) -> str:
    if path is None or isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise ValidationError(
            f"path must be a str, an os.PathLike or ':memory:', got {type(path).__name__}",
            parameter="path",
            value=path,
        )
    try:
        text = os.fspath(path)
    except TypeError as exc:  # an os.PathLike whose __fspath__ gives neither str nor bytes
        raise ValidationError(
            f"path must be a str, an os.PathLike giving a str, or ':memory:'; {exc}", parameter="path", value=path
        ) from exc
    if not isinstance(text, str):
        raise ValidationError("path must be a text path, not bytes", parameter="path", value=path)
    if not text.strip():
        raise ValidationError(
            "path must not be empty; use ':memory:' for an in-memory database", parameter="path", value=path
        )
    if "\x00" in text:
        raise ValidationError("path must not contain NUL characters", parameter="path", value=text)
    try:
        os.fsencode(text)  # what sqlite3.connect does with it: the first call raised a bare UnicodeEncodeError
    except UnicodeEncodeError:
        raise ValidationError(
            "path must be text the file system encoding can encode: it holds a lone surrogate that stands for no "
            "byte (only U+DC80..U+DCFF do, as os.fsdecode gives for a name that is not UTF-8)",
            parameter="path",
            value=text,
        ) from None
    if text == MEMORY:
        return MEMORY
    if text.startswith("file:"):
        raise ValidationError(
            "SQLite 'file:' URIs are not supported; pass a plain path or ':memory:'",
            parameter="path",
            value=text,
        )
    if _URL_LIKE.match(text) and not isinstance(path, os.PathLike):
        raise ValidationError(
            f"path {text!r} is a URL, not a file path: pass the URL to sitq.connect() or TaskQueue(), "
            "or give SQLiteBackend the file's path ('tasks.db')",
            parameter="path",
            value=text,
        )
    expanded = os.path.expanduser(text)
    if os.path.basename(expanded) in ("", ".", ".."):  # abspath would drop the trailing separator: a FILE "newdir"
        raise ValidationError(
            f"path {text!r} names a folder (it ends with a path separator, '.' or '..'), not a database file: "
            f"give the path of a file, e.g. {os.path.normpath(os.path.join(text, 'tasks.db'))!r}",
            parameter="path",
            value=text,
        )
    try:
        return _absolute(expanded)
    except FileNotFoundError:  # a relative path, and the working directory it is relative to was deleted
        raise ValidationError(
            f"path {text!r} is relative, but the working directory no longer exists (it was deleted or moved "
            "away) so it names no file: give an absolute path, or run from a folder that exists",
            parameter="path",
            value=text,
        ) from None


def _absolute(path: str) -> str:
    """``path`` made absolute so that it names the file the OS (and the ``sqlite3`` module) opens for it.

    ``os.path.abspath`` collapses ``..`` as text, but the OS follows a
    symlinked folder first: ``link/../q.db``, with ``link`` a symlink to
    ``other/deep``, is ``other/q.db``, not ``./q.db``. So the part up to the
    last ``..`` is resolved with ``realpath`` when that gives another place
    than the textual form; otherwise (no ``..``, or no symlink before one) the
    plain ``abspath`` form is kept, so the paths users see do not change.
    Raises ``FileNotFoundError`` for a relative path when the working
    directory is gone.
    """
    joined = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    plain = os.path.normpath(joined)  # what os.path.abspath gives
    parts = joined.split(os.sep)
    if os.pardir not in parts:
        return plain
    last = len(parts) - 1 - parts[::-1].index(os.pardir)
    head = os.sep.join(parts[: last + 1])
    real = os.path.realpath(head)
    if real == os.path.realpath(os.path.normpath(head)):
        return plain
    return os.path.normpath(os.path.join(real, *parts[last + 1 :]))


_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # scheme:// (a Windows drive, C:\, has no //)


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    normalized = value.upper() if isinstance(value, str) else None
    if normalized not in valid:
        raise ValidationError(
            f"{name} must be one of {', '.join(valid)}; got {safe_repr(value)}",
            parameter=name,
            value=value,
            valid_options=valid,
        )
    assert normalized is not None
    return normalized


def _number(name: str, value: Any, *, minimum: float, maximum: float | None = None, inclusive: bool = False) -> float:
    seconds = checks.as_seconds(value)
    ok = seconds is not None and seconds == seconds  # not NaN
    if seconds is not None and ok:
        ok = seconds >= minimum if inclusive else seconds > minimum
        if maximum is not None:
            ok = ok and seconds <= maximum
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValidationError(f"{name} must be a number {bound}; got {safe_repr(value)}", parameter=name, value=value)
    assert seconds is not None
    return seconds


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(
            f"{name} must be an integer >= {minimum}; got {safe_repr(value)}", parameter=name, value=value
        )
    return value
