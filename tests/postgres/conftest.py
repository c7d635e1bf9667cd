"""PostgreSQL for the tests: a throw-away schema per test on a real server (see sitq_test_postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres


@pytest.fixture
def pg_dsn() -> str:
    require_postgres()
    return DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema
    drop_schema(schema)
