"""``list_tasks`` and ``counts`` (whole-table reads) run on a connection of their own on a WAL file.

Every other call of a backend runs in turn on its one connection thread: a
``list_tasks(offset=400000)`` of 0.85 s there kept an enqueue, a claim or a
lease renewal of the same backend waiting as long.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import sitq_sqlite.backend as backend_module
from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue
from sitq_core.models import Task

from sitq_test_helpers import wait_until_sync

_BOUND = 30.0  # seconds: only a hang reaches this


def _task(number: int) -> Task:
    now = datetime.now(UTC)
    return Task(
        id=f"t{number}",
        payload=b"x",
        serializer="pickle",
        function_name="m:f",
        queue="default",
        priority=0,
        eta=now,
        max_retries=0,
        retry_backoff=1.0,
        timeout=None,
        max_lease_expiries=3,
        enqueued_at=now,
    )


class _Held:
    """Patches one step of a read so that, off the event loop's thread, it waits until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.loop_thread = threading.current_thread()
        original = getattr(backend_module, name)

        def held(*args: Any) -> Any:
            if threading.current_thread() is not self.loop_thread:
                self.inside.set()
                self.release.wait(_BOUND)
            return original(*args)

        monkeypatch.setattr(backend_module, name, held)


@pytest.fixture
def held_list(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    held = _Held(monkeypatch, "_row_to_task")
    yield held
    held.release.set()


@pytest.fixture
def held_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    held = _Held(monkeypatch, "_status_counts")
    yield held
    held.release.set()


async def _writes_go_on_while(backend: SQLiteBackend, held: _Held, read: asyncio.Task[Any]) -> None:
    """While ``read`` is held inside its read, calls that use the connection thread complete."""
    await asyncio.to_thread(held.inside.wait, _BOUND)
    assert held.inside.is_set(), "the read never started"
    # more than the inline limit: the batch goes through the connection thread
    ids = await asyncio.wait_for(backend.enqueue_many([_task(n) for n in range(100, 140)]), _BOUND)
    assert len(ids) == 40
    assert await asyncio.wait_for(backend.cancel("t1"), _BOUND)  # always on the connection thread
    claimed = await asyncio.wait_for(backend.reserve(worker_id="w", limit=50, lease_seconds=30), _BOUND)
    assert claimed
    leases = [(c.task.id, c.lease_token) for c in claimed]
    assert len(await asyncio.wait_for(backend.heartbeat(leases, 30), _BOUND)) == len(leases)
    assert not read.done(), "the read ended before the writes: it did not hold them up, but proves nothing"
    held.release.set()


@pytest.mark.asyncio
async def test_a_long_list_tasks_holds_up_no_write_of_the_same_backend(tmp_path: Path, held_list: _Held) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    try:
        await backend.enqueue_many([_task(n) for n in range(3)])
        read = asyncio.create_task(backend.list_tasks())
        await _writes_go_on_while(backend, held_list, read)
        tasks = await asyncio.wait_for(read, _BOUND)
        assert [task.id for task in tasks][:3] == ["t0", "t1", "t2"]
        assert len(await backend.list_tasks(limit=1000)) == 43  # a new read sees the writes made meanwhile
    finally:
        held_list.release.set()
        await backend.close()


@pytest.mark.asyncio
async def test_a_long_counts_holds_up_no_write_of_the_same_backend(tmp_path: Path, held_counts: _Held) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    try:
        await backend.enqueue_many([_task(n) for n in range(3)])
        read = asyncio.create_task(backend.counts())
        await _writes_go_on_while(backend, held_counts, read)
        assert (await asyncio.wait_for(read, _BOUND))["queued"] == 3  # its snapshot: from before the writes
        counted = await backend.counts()
        assert counted["queued"] + counted["running"] == 42 and counted["cancelled"] == 1
    finally:
        held_counts.release.set()
        await backend.close()


@pytest.mark.asyncio
async def test_reads_see_the_backends_own_writes_at_once(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    async with TaskQueue(backend) as queue:
        for n in range(20):
            task_id = await queue.enqueue(len, "x" * n)
            assert (await queue.list_tasks(limit=100))[-1].id == task_id
            assert (await queue.counts())["queued"] == n + 1


@pytest.mark.asyncio
async def test_an_in_memory_database_lists_and_counts_on_its_one_connection() -> None:
    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        ids = [await queue.enqueue(len, "abc") for _ in range(3)]
        assert [task.id for task in await queue.list_tasks()] == ids
        assert (await queue.counts())["queued"] == 3
        assert (await queue.counts(queue="default"))["queued"] == 3
        assert backend._reader is None, "another connection to ':memory:' is another, empty, database"


@pytest.mark.asyncio
@pytest.mark.parametrize("journal_mode", ["DELETE", "TRUNCATE"])
async def test_a_rollback_journal_file_reads_on_the_connection_thread(tmp_path: Path, journal_mode: str) -> None:
    """There a reader blocks the writer: the write would fail after busy_timeout instead of waiting its turn."""
    backend = SQLiteBackend(tmp_path / "t.db", journal_mode=journal_mode)
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(len, "abc")
        assert [task.id for task in await queue.list_tasks()] == [task_id]
        assert (await queue.counts())["queued"] == 1
        assert backend._reader is None


@pytest.mark.asyncio
async def test_close_closes_the_read_connection_and_a_later_call_opens_it_again(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    backend = SQLiteBackend(path)
    await backend.enqueue_many([_task(n) for n in range(3)])
    assert len(await backend.list_tasks()) == 3
    reader = backend._reader
    assert reader is not None
    await backend.close()
    await asyncio.to_thread(reader.join, _BOUND)
    assert not reader._thread.is_alive() and backend._reader is None
    assert not (tmp_path / "t.db-wal").exists(), "the last connection to close removes the WAL"
    assert (await backend.counts())["queued"] == 3  # connects again
    assert backend._reader is not None
    await backend.close()


@pytest.mark.asyncio
async def test_abandon_stops_the_read_thread(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    assert (await backend.counts())["queued"] == 0
    reader = backend._reader
    assert reader is not None
    backend.abandon()
    await asyncio.to_thread(reader.join, _BOUND)
    assert backend._reader is None


@pytest.mark.asyncio
async def test_a_file_replaced_before_the_first_read_is_not_read(tmp_path: Path) -> None:
    """The reads show the file this backend writes to (as they did on its one connection), not a new one."""
    path = tmp_path / "t.db"
    backend = SQLiteBackend(path)
    try:
        await backend.enqueue_many([_task(n) for n in range(3)])
        other = SQLiteBackend(tmp_path / "other.db")
        await other.connect()
        await other.close()
        os.replace(tmp_path / "other.db", path)  # an empty sitq database now at the path
        assert len(await backend.list_tasks()) == 3
        assert (await backend.counts())["queued"] == 3
        assert backend._reader is None
    finally:
        await backend.close()


@pytest.mark.asyncio
async def test_a_file_deleted_before_the_first_read_is_not_made_again(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    backend = SQLiteBackend(path)
    try:
        await backend.enqueue_many([_task(n) for n in range(3)])
        moved = tmp_path / "moved"
        moved.mkdir()
        for name in os.listdir(tmp_path):
            if name.startswith("t.db"):
                shutil.move(tmp_path / name, moved / name)
        assert (await backend.counts())["queued"] == 3
        assert not path.exists(), "the read connection made a new, empty file at the path"
    finally:
        await backend.close()


def test_a_sync_queue_reads_on_its_own_connection_too(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    with SyncTaskQueue(backend) as queue:
        queue.enqueue(len, "x")
        assert queue.counts()["queued"] == 1
        assert [task.function_name for task in queue.list_tasks()] == ["builtins:len"]
        assert backend._reader is not None
        reader = backend._reader
    wait_until_sync(lambda: not reader._thread.is_alive())
