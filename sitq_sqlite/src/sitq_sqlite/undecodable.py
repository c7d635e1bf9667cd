"""Reading TEXT values that are not valid UTF-8, without paying for it on every read.

SQLite stores whatever bytes it is given as TEXT (``CAST(x'61ff' AS TEXT)``,
or a flipped byte in the file), and Python's sqlite3 refuses to build a
``str`` of them: the whole statement fails with "Could not decode to UTF-8
column ...". The usual reads keep sqlite3's own (C) decoding; only a job
that met that error runs again with :func:`tolerant_text` as the
connection's ``text_factory``, which turns such a value into an
:class:`Undecodable` that the row checks name as a value they cannot take.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["Undecodable", "is_undecodable", "read_tolerantly", "tolerant_text"]


class Undecodable:
    """A stored TEXT value whose bytes are not UTF-8; ``str()`` shows each bad byte as a backslash escape."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return f"'{self}'"

    def __eq__(self, other: object) -> bool:
        return type(other) is Undecodable and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((Undecodable, self.raw))


def tolerant_text(raw: bytes) -> str | Undecodable:
    """A ``text_factory`` decoding as sqlite3 does, but giving an :class:`Undecodable` instead of failing."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(raw)


def is_undecodable(exc: BaseException) -> bool:
    """True for sqlite3's error on a TEXT value that is not UTF-8 (raised while a row is fetched)."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8")


def read_tolerantly(conn: sqlite3.Connection, exc: BaseException) -> Any:
    """After ``exc``, sqlite3's decode error: make ``conn`` read with :func:`tolerant_text`, for a retry.

    Returns the connection's own ``text_factory``, for the caller to put back
    once the retried job is done; None when ``exc`` is another error.
    """
    if not is_undecodable(exc):
        return None
    own, conn.text_factory = conn.text_factory, tolerant_text
    return own
