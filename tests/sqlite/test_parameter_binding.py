"""How sitq_sqlite binds parameters: adapters that store the same values, and the status CHECK it skips."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_sqlite.binding import SHORTCUTS, register_fast_adapters

KEYS = [(kind, sqlite3.PrepareProtocol) for kind, _ in SHORTCUTS]


@pytest.fixture
def no_shortcuts() -> Iterator[None]:
    """The registry without entries for the shortcut types during the test, as it was afterwards."""
    saved = {key: sqlite3.adapters.pop(key) for key in KEYS if key in sqlite3.adapters}
    yield
    for key in KEYS:
        sqlite3.adapters.pop(key, None)
    sqlite3.adapters.update(saved)


def add(a: int, b: int) -> int:
    return a + b


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_shortcuts")
async def test_connecting_registers_them_and_payloads_are_stored_as_the_same_blobs(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        assert all(key in sqlite3.adapters for key in KEYS)
        one = await queue.enqueue(add, 1, 2)
        many = await queue.enqueue_many([(add, (i, i)) for i in range(300)])
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT typeof(payload), payload, typeof(timeout) FROM tasks ORDER BY seq").fetchall()
    conn.close()
    assert len(rows) == 1 + len(many) and {(kind, none) for kind, _, none in rows} == {("blob", "null")}
    assert all(type(payload) is bytes and payload for _, payload, _ in rows)
    assert one


@pytest.mark.usefixtures("no_shortcuts")
def test_an_adapter_the_application_registered_first_is_left_alone() -> None:
    def mine(value: bytes) -> Any:
        return value

    sqlite3.register_adapter(bytes, mine)
    register_fast_adapters()
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is mine
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters


@pytest.mark.usefixtures("no_shortcuts")
def test_the_adapters_bind_exactly_what_sqlite3_binds_without_them() -> None:
    values: list[Any] = [b"", b"\x00\x01 binary", b"x" * 70_000, None, True, False]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v)")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    register_fast_adapters()
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    rows = conn.execute("SELECT typeof(v), v FROM t ORDER BY rowid").fetchall()
    assert rows[:6] == rows[6:]
    assert [kind for kind, _ in rows[:6]] == ["blob", "blob", "blob", "null", "integer", "integer"]
    assert [value for _, value in rows[3:6]] == [None, 1, 0]
    conn.close()


@pytest.mark.asyncio
async def test_the_status_check_still_refuses_other_writers_while_sitq_skips_it(tmp_path: Path) -> None:
    """sitq's connections skip the CHECK on ``status`` (they store only statuses checked in Python); the
    schema keeps it for everyone else, such as the sqlite3 shell."""
    path = tmp_path / "tasks.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        task_id = await queue.enqueue(add, 1, 2)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        conn.execute("UPDATE tasks SET status = 'bogus' WHERE id = ?", (task_id,))
    assert conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone() == ("queued",)
    conn.close()


class _BindsAsBogus(str):
    """Equal to 'success', but bound by sqlite3 as 'bogus' (through the adapter protocol's __conform__)."""

    def __conform__(self, protocol: object) -> str:
        return "bogus"


@pytest.mark.asyncio
async def test_an_outcome_kind_that_is_not_an_exact_str_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    """With the CHECK off on sitq's connections, such a kind stored 'bogus' and the file then read as damaged."""
    from sitq import ValidationError
    from sitq_core.models import Outcome

    backend = SQLiteBackend(tmp_path / "tasks.db")
    async with TaskQueue(backend) as queue:
        await queue.enqueue(add, 1, 2)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        odd = Outcome(task_id=lease.id, lease_token=lease.lease_token, kind=_BindsAsBogus("success"))  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as info:
            await backend.finish_many([odd])
        assert info.value.parameter == "outcomes"
        assert (await queue.counts())["running"] == 1  # nothing stored; the file still reads
