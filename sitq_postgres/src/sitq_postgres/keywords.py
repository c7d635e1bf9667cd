"""libpq ``key=value`` connection strings, turned into the URL form asyncpg accepts.

libpq takes ``host=db port=5432 dbname=app user=app password='s e c'``
as well as URLs; asyncpg only URLs. Every pair becomes a query parameter of
``postgresql://?...``, which asyncpg reads the same way (``host``, ``port``,
``user``, ``password``, ``dbname``, ``sslmode``, ...; several hosts as
``host=a,b``; a socket directory as ``host=/var/run/postgresql``).
Quoting follows libpq: a value in single quotes may hold spaces, and a
backslash escapes the next character (``\\'`` or ``\\\\``).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from sitq_core.errors import ValidationError

__all__ = ["is_keyword_dsn", "keyword_dsn_to_url"]


def is_keyword_dsn(dsn: str) -> bool:
    """True for a ``key=value`` string (not a URL)."""
    return "=" in dsn and "://" not in dsn and not dsn.lstrip().startswith(("postgres:", "postgresql:"))


def keyword_dsn_to_url(dsn: str) -> str:
    """The ``postgresql://?key=value&...`` URL of a libpq ``key=value`` string (ValidationError if malformed)."""
    pairs: list[tuple[str, str]] = []
    position, end = 0, len(dsn)
    while True:
        while position < end and dsn[position].isspace():
            position += 1
        if position >= end:
            break
        start = position
        while position < end and dsn[position] != "=" and not dsn[position].isspace():
            position += 1
        key = dsn[start:position]
        while position < end and dsn[position].isspace():
            position += 1
        if not key or position >= end or dsn[position] != "=":
            after = f"after {pairs[-1][0]}=..." if pairs else "at the start"
            raise _malformed(f"a word without '=' {after} (quote values that hold spaces: key='a b')")
        position += 1
        while position < end and dsn[position].isspace():
            position += 1
        value, position = _value(dsn, position, key)
        pairs.append((key, value))
    if not pairs:
        raise _malformed("no key=value pairs")
    return "postgresql://?" + urlencode(pairs, quote_via=quote)


def _value(dsn: str, position: int, key: str) -> tuple[str, int]:
    """Read one value (quoted or bare) starting at ``position``; return it and where it ended."""
    chars: list[str] = []
    end = len(dsn)
    if position < end and dsn[position] == "'":
        position += 1
        while True:
            if position >= end:
                raise _malformed(f"unterminated quoted value of {key!r}")
            char = dsn[position]
            if char == "\\" and position + 1 < end:
                chars.append(dsn[position + 1])
                position += 2
            elif char == "'":
                return "".join(chars), position + 1
            else:
                chars.append(char)
                position += 1
    while position < end and not dsn[position].isspace():
        char = dsn[position]
        if char == "\\" and position + 1 < end:
            chars.append(dsn[position + 1])
            position += 2
        else:
            chars.append(char)
            position += 1
    return "".join(chars), position


def _malformed(detail: str) -> ValidationError:
    # The dsn itself is not repeated: it may hold a password.
    return ValidationError(f"dsn is not a valid libpq key=value string: {detail}", parameter="dsn")
