"""A dsn asyncpg cannot read is refused when the backend is made, not as a ConnectionError at the first call.

asyncpg reads only ``postgresql://`` and ``postgres://`` URLs (sitq turns a
libpq ``key=value`` string into one): ``PostgresBackend('5')`` used to be
made, and every call then failed with "invalid DSN: scheme is expected to be
either postgresql or postgres, got ''". A lone surrogate failed deeper still,
with a bare ``AttributeError`` from asyncpg's protocol.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import sitq
from sitq import PostgresBackend, ValidationError


@pytest.mark.parametrize(
    "dsn",
    ["5", "  ", "", "a\x00b", "a\nb", "x" * 20_000, "plainname", "mysql://u@h/db", "postgresql+asyncpg://u@h/db",
     "://h/db", "http://h/db", "http:postgresql://h/db"],
)  # fmt: skip
def test_a_dsn_that_is_neither_a_postgres_url_nor_key_value_pairs_is_refused(dsn: str) -> None:
    with pytest.raises(ValidationError) as info:
        PostgresBackend(dsn)
    assert info.value.parameter == "dsn"
    assert "postgresql://" in info.value.message and "key=value" in info.value.message
    assert "xxxx" not in str(info.value)  # the dsn is not repeated: it may hold a password


def test_a_malformed_dsn_in_a_config_mapping_is_refused_when_the_queue_is_made() -> None:
    with pytest.raises(ValidationError) as info:
        sitq.connect({"backend": "postgres", "dsn": "x" * 20_000})
    assert info.value.parameter == "dsn"


@pytest.mark.parametrize(
    "dsn",
    ["POSTGRESQL://u@h/db", "Postgres://h/db", " postgresql://u@h/db ", "host=h", "postgres:db",
     "postgresql:/h/db", "postgresql:?host=h&dbname=db", "host=h password=ab://cd application_name='a://b'"],
)  # fmt: skip
def test_postgres_urls_in_any_case_and_key_value_strings_are_accepted(dsn: str) -> None:
    # asyncpg reads the scheme as urlparse does (postgresql:/db has no '//'), and a key=value string is told
    # from a URL by its first word (a password may hold '://'): both were refused by the first check of 'dsn'
    assert PostgresBackend(dsn).dsn is not None


def _without_scheme(dsn: str) -> tuple[str, str, str]:
    """(host, user, dbname) of the test server's URL."""
    parts = urllib.parse.urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.username or "postgres", parts.path.lstrip("/") or "postgres"


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["no-slashes", "query-only", "keyword-with-url-in-value"])
async def test_the_forms_asyncpg_reads_connect(pg_dsn: str, form: str) -> None:
    host, user, dbname = _without_scheme(pg_dsn)
    dsn = {
        "no-slashes": f"postgresql:/{dbname}?host={host}&user={user}",
        "query-only": f"postgresql:?host={host}&user={user}&dbname={dbname}",
        "keyword-with-url-in-value": f"host={host} user={user} dbname={dbname} application_name='sitq://t'",
    }[form]
    async with PostgresBackend(dsn) as backend:
        assert await backend.exists() in (True, False)  # it reached the server: no ConnectionError


@pytest.mark.parametrize(
    "build",
    [
        lambda: PostgresBackend("postgresql://postgres@127.0.0.1/\ud800"),
        lambda: PostgresBackend("postgresql://postgres:p\udcffw@127.0.0.1/test"),
        lambda: PostgresBackend("postgresql://postgres@127.0.0.1/test?application_name=\udcff"),
        lambda: PostgresBackend("host=127.0.0.1 user=postgres dbname=\ud800"),
        lambda: sitq.connect({"backend": "postgres", "dsn": "postgresql://postgres@127.0.0.1/\ud800"}),
    ],
    ids=["database", "password", "parameter", "key-value", "config"],
)
def test_text_that_cannot_be_encoded_as_utf8_is_refused(build: Callable[[], Any]) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    assert info.value.parameter == "dsn" and "UTF-8" in info.value.message
    assert "\udcff" not in str(info.value) and "\ud800" not in str(info.value)


@pytest.mark.parametrize("value", [Decimal("sNaN"), Decimal("NaN"), Decimal("-sNaN"), Decimal("Infinity")])
def test_a_decimal_nan_connect_timeout_is_a_validation_error(value: Decimal) -> None:
    with pytest.raises(ValidationError) as info:
        PostgresBackend("postgresql://h/db", connect_timeout=value)
    assert info.value.parameter == "connect_timeout"
