"""A dsn asyncpg cannot read is refused when the backend is made, not as a ConnectionError at the first call.

asyncpg reads only ``postgresql://`` and ``postgres://`` URLs (sitq turns a
libpq ``key=value`` string into one): ``PostgresBackend('5')`` used to be
made, and every call then failed with "invalid DSN: scheme is expected to be
either postgresql or postgres, got ''". A lone surrogate failed deeper still,
with a bare ``AttributeError`` from asyncpg's protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import sitq
from sitq import PostgresBackend, ValidationError


@pytest.mark.parametrize(
    "dsn",
    ["5", "  ", "", "a\x00b", "a\nb", "x" * 20_000, "plainname", "mysql://u@h/db", "postgresql+asyncpg://u@h/db",
     "://h/db", "postgres:db", "postgresql:/h/db", "http://h/db"],
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


@pytest.mark.parametrize("dsn", ["POSTGRESQL://u@h/db", "Postgres://h/db", " postgresql://u@h/db ", "host=h"])
def test_postgres_urls_in_any_case_and_key_value_strings_are_accepted(dsn: str) -> None:
    assert PostgresBackend(dsn).dsn is not None


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
