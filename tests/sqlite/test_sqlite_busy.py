"""SQLITE_BUSY is retried inside the backend; only a lock held past busy_timeout surfaces."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sitq_core.errors import BackendError
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend


@pytest.mark.asyncio
async def test_locked_database_is_retried_until_the_lock_goes(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SQLiteBackend(path, busy_timeout=10) as backend:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        task = Task(id=new_id(), payload=b"x")
        pending = asyncio.create_task(backend.enqueue(task))
        done, _ = await asyncio.wait({pending}, timeout=0.1)
        assert not done, "the enqueue must wait for the lock, not fail"
        blocker.execute("COMMIT")
        blocker.close()
        assert await asyncio.wait_for(pending, 10) == task.id
        assert await backend.get_task(task.id) is not None


@pytest.mark.asyncio
async def test_lock_held_past_busy_timeout_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    async with SQLiteBackend(path, busy_timeout=0.2) as backend:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendError) as info:
                await backend.enqueue(Task(id=new_id(), payload=b"x"))
            assert "busy_timeout" in str(info.value) and info.value.backend_type == "sqlite"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await backend.counts())["queued"] == 0
        await backend.enqueue(Task(id=new_id(), payload=b"x"))  # works again


class _Interrupt(BaseException):
    """Stands in for KeyboardInterrupt arriving while a large batch is being serialised."""


class _InterruptsPickling:
    def __reduce__(self) -> tuple[object, ...]:
        raise _Interrupt


def _add(a: object) -> object:
    return a


@pytest.mark.asyncio
async def test_interrupted_large_batch_releases_the_write_lock(tmp_path: Path) -> None:
    """A streamed batch holds the write lock while it is fed; an interrupt mid-way must roll back and free it."""
    from sitq import TaskQueue

    async with TaskQueue(SQLiteBackend(tmp_path / "feed.db", busy_timeout=2)) as queue:
        calls = [(_add, (n,)) for n in range(300)] + [(_add, (_InterruptsPickling(),))] + [(_add, (1,))] * 50
        with pytest.raises(_Interrupt):
            await queue.enqueue_many(calls)
        other = sqlite3.connect(tmp_path / "feed.db", isolation_level=None, timeout=2)
        try:
            other.execute("BEGIN IMMEDIATE")  # would fail with "database is locked" if the lock were still held
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await queue.counts())["queued"] == 0
        assert len(await queue.enqueue_many(calls[:300])) == 300
