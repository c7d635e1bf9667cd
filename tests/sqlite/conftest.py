"""Fixtures for the SQLite backend tests: real files in tmp_path and real :memory: databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq_core.testing.clock import FakeClock
from sitq_sqlite import SQLiteBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["file", "memory"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> SQLiteBackend:
    path = tmp_path / "tasks.db" if request.param == "file" else ":memory:"
    backend = SQLiteBackend(path)
    backend.clock = clock
    return backend


@pytest_asyncio.fixture
async def backend(make_backend: SQLiteBackend) -> AsyncIterator[SQLiteBackend]:
    async with make_backend:
        yield make_backend
