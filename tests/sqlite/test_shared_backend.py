"""Queues sharing one SQLiteBackend object: closing one of them leaves the backend open for the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue


def _enqueue_with_a_sync_queue(backend: SQLiteBackend) -> str:
    with SyncTaskQueue(backend) as queue:
        return queue.enqueue(len, "f")


@pytest.mark.asyncio
async def test_a_nested_queue_leaves_a_shared_memory_database_open_for_the_outer_one() -> None:
    """``async with TaskQueue(b)`` inside another queue's ``async with`` on the same backend closes nothing.

    Closing an in-memory database throws it away: the outer queue and its worker would go on, after a
    silent reconnect, with an empty database (tasks, results and a running task's lease gone).
    """
    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        first = await queue.enqueue(len, "abc")
        async with TaskQueue(backend) as helper:
            second = await helper.enqueue(len, "de")
        third = await asyncio.to_thread(_enqueue_with_a_sync_queue, backend)
        for task_id in (first, second, third):
            assert await queue.get_task(task_id) is not None, f"{task_id} vanished when a nested queue closed"
        assert (await queue.counts())["queued"] == 3
    # the last queue to close closes the backend: a new queue starts on a new, empty in-memory database
    async with TaskQueue(backend) as again:
        assert (await again.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_the_last_queue_to_close_closes_a_shared_file_backend(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    outer, inner = TaskQueue(backend), TaskQueue(backend)
    await outer.connect()
    await inner.enqueue(len, "x")  # connects on first use: it holds the backend too
    await inner.close()
    assert backend._db is not None, "a queue closed the backend while another queue still had it open"
    await inner.close()  # twice: still only one release
    assert backend._db is not None
    await outer.close()
    assert backend._db is None, "the last open queue must close the backend"
