"""PostgresBackend passes the backend conformance kit on a real server (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sitq_core.testing import BackendSuite
from sitq_postgres import PostgresBackend


class TestPostgresBackend(BackendSuite):
    @pytest.fixture
    def backend_factory(self, pg_dsn: str, pg_schema: str) -> Callable[[], PostgresBackend]:
        return lambda: PostgresBackend(pg_dsn, schema=pg_schema, min_connections=0, max_connections=4)

    @pytest.fixture
    def backend_url(self, pg_dsn: str, pg_schema: str) -> str:
        return f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}schema={pg_schema}"
