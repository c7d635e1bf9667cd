"""PostgresBackend.requeue_many: one transaction for the whole list, and the NOTIFY that wakes idle workers."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq_core.models import Outcome, Task, TaskStatus, new_id
from sitq_postgres import PostgresBackend

from sitq_test_helpers import count_calls

MANY = 1200


async def failed_tasks(backend: PostgresBackend, count: int) -> list[str]:
    tasks = [Task(id=new_id(), payload=b"p") for _ in range(count)]
    await backend.enqueue_many(tasks)
    while leases := await backend.reserve(worker_id="w", limit=500, lease_seconds=30):
        await backend.finish_many([Outcome(lease.id, lease.lease_token, "failed", error="boom") for lease in leases])
    return [task.id for task in tasks]


@pytest.mark.asyncio
async def test_a_long_list_is_requeued_in_one_transaction_with_one_notify(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        ids = await failed_tasks(backend, MANY)
        listener = await asyncpg.connect(pg_dsn)
        heard: asyncio.Queue[str] = asyncio.Queue()
        try:
            await listener.add_listener(f"sitq_{pg_schema}_work", lambda *args: heard.put_nowait(args[2]))
            calls = count_calls(backend)
            answers = await backend.requeue_many([*ids, "unknown", ids[0]])
            assert answers == [True] * MANY + [False, False]
            assert calls == ["requeue"]
            await asyncio.wait_for(heard.get(), timeout=30)  # an idle worker on another process wakes
        finally:
            await listener.close()
        counts = await backend.counts()
        assert (counts["queued"], counts["failed"]) == (MANY, 0)
        for task_id in (ids[0], ids[-1]):
            assert await backend.get_result(task_id) is None
            stored = await backend.get_task(task_id)
            assert stored is not None and stored.status is TaskStatus.QUEUED and stored.attempts == 0


@pytest.mark.asyncio
async def test_an_empty_list_touches_nothing(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    calls = count_calls(backend)
    assert await backend.requeue_many([]) == []
    assert calls == []
    await backend.close()
