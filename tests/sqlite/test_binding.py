"""The ``bytes`` adapter sitq_sqlite registers: same stored values, and an application's own adapter wins."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_sqlite.binding import register_bytes_adapter

KEY = (bytes, sqlite3.PrepareProtocol)


@pytest.fixture
def no_bytes_adapter() -> Iterator[None]:
    """The registry without a ``bytes`` entry for the test, as it was afterwards."""
    saved = sqlite3.adapters.pop(KEY, None)
    yield
    sqlite3.adapters.pop(KEY, None)
    if saved is not None:
        sqlite3.adapters[KEY] = saved


def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_bytes_adapter")
async def test_connecting_registers_it_and_payloads_are_stored_as_the_same_blobs(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        assert sqlite3.adapters[KEY] is bytes
        one = await queue.enqueue(add, 1, 2)
        many = await queue.enqueue_many([(add, (i, i)) for i in range(300)])
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT typeof(payload), payload FROM tasks ORDER BY seq").fetchall()
    conn.close()
    assert len(rows) == 1 + len(many) and {kind for kind, _ in rows} == {"blob"}
    assert all(type(payload) is bytes and payload for _, payload in rows)
    assert one


@pytest.mark.usefixtures("no_bytes_adapter")
def test_an_adapter_the_application_registered_first_is_left_alone() -> None:
    def mine(value: bytes) -> Any:
        return value

    sqlite3.register_adapter(bytes, mine)
    register_bytes_adapter()
    assert sqlite3.adapters[KEY] is mine


@pytest.mark.usefixtures("no_bytes_adapter")
def test_the_adapter_binds_exactly_what_sqlite3_binds_without_it() -> None:
    values = [b"", b"\x00\x01 binary", b"x" * 70_000]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    register_bytes_adapter()
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    rows = conn.execute("SELECT typeof(v), v FROM t ORDER BY rowid").fetchall()
    assert rows[:3] == rows[3:] == [("blob", v) for v in values]
    conn.close()
