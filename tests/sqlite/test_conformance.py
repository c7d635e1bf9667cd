"""SQLiteBackend passes the backend conformance kit, on a file and in memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sitq_core.testing import BackendSuite
from sitq_sqlite import SQLiteBackend


class TestSQLiteBackend(BackendSuite):
    @pytest.fixture(params=["file", "memory"])
    def backend_factory(self, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SQLiteBackend]:
        if request.param == "memory":
            # An in-memory database is private to its object: every "new" backend is that one object.
            # It declares neither PERSISTENT nor MULTI_PROCESS, so those contracts skip.
            shared = SQLiteBackend(":memory:")
            return lambda: shared
        return lambda: SQLiteBackend(tmp_path / "tasks.db")

    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'tasks.db'}"
