"""SQLiteBackend.requeue_many: a long list in one write transaction, chunked under SQLite's bound-variable limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq_core.models import Outcome, Task, TaskStatus, new_id
from sitq_core.testing.clock import FakeClock
from sitq_sqlite import SQLiteBackend

MANY = 1200  # more ids than one statement binds (the backend chunks them), in one transaction


@pytest_asyncio.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    store = SQLiteBackend(tmp_path / "tasks.db")
    store.clock = FakeClock()
    async with store:
        yield store


async def failed_tasks(backend: SQLiteBackend, count: int) -> list[str]:
    now = backend.now()
    tasks = [Task(id=new_id(), payload=b"p", eta=now, enqueued_at=now) for _ in range(count)]
    await backend.enqueue_many(tasks)
    while leases := await backend.reserve(worker_id="w", limit=500, lease_seconds=30):
        outcomes = [Outcome(lease.id, lease.lease_token, "failed", error="boom") for lease in leases]
        await backend.finish_many(outcomes)
    return [task.id for task in tasks]


def count_writes(backend: SQLiteBackend) -> list[str]:
    """The operations of the write transactions ``backend`` runs from now on (a spy on the real method)."""
    seen: list[str] = []
    real = backend._transaction

    async def spy(operation: str, body: Callable[[Any], Any]) -> Any:
        seen.append(operation)
        return await real(operation, body)

    backend._transaction = spy  # type: ignore[method-assign]
    return seen


@pytest.mark.asyncio
async def test_a_long_list_is_requeued_in_one_write_transaction(backend: SQLiteBackend) -> None:
    ids = await failed_tasks(backend, MANY)
    writes = count_writes(backend)
    answers = await backend.requeue_many([*ids, "unknown", ids[0], ids[-1]])
    assert answers == [True] * MANY + [False, False, False]
    assert len(writes) == 1, writes
    counts = await backend.counts()
    assert (counts["queued"], counts["failed"]) == (MANY, 0)
    for task_id in (ids[0], ids[MANY // 2], ids[-1]):
        assert await backend.get_result(task_id) is None


@pytest.mark.asyncio
async def test_an_empty_list_touches_nothing(backend: SQLiteBackend) -> None:
    writes = count_writes(backend)
    assert await backend.requeue_many([]) == []
    assert writes == []


@pytest.mark.asyncio
async def test_only_failed_and_cancelled_tasks_are_requeued(backend: SQLiteBackend) -> None:
    failed = (await failed_tasks(backend, 1))[0]
    now = backend.now()
    queued, cancelled = (Task(id=new_id(), payload=b"p", eta=now, enqueued_at=now) for _ in range(2))
    await backend.enqueue_many([queued, cancelled])
    assert await backend.cancel(cancelled.id)
    assert await backend.requeue_many([queued.id, failed, cancelled.id]) == [False, True, True]
    for task_id in (queued.id, failed, cancelled.id):
        stored = await backend.get_task(task_id)
        assert stored is not None and stored.status is TaskStatus.QUEUED
