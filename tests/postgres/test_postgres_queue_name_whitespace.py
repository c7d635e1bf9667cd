"""PostgreSQL, like SQLite, keeps storing and serving a hand-built Task whose queue name has surrounding
whitespace: only the Python API refuses such names (the CLI strips names); stored data stays reachable."""

from __future__ import annotations

import dataclasses

import pytest

from sitq import TaskQueue
from sitq_core.models import new_id
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks


@pytest.mark.asyncio
async def test_a_hand_built_task_in_a_queue_named_with_spaces_is_stored_and_served(pg_dsn: str, pg_schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        built = await queue.get_task(await queue.enqueue(tasks.add, 1))
        assert built is not None
        moved = dataclasses.replace(built, id=new_id(), queue=" mail ")
        assert await queue.backend.enqueue_many([moved]) == [moved.id]
        reserved = await queue.backend.reserve(worker_id="w", limit=5, lease_seconds=30, queues=[" mail "])
        assert [task.id for task in reserved] == [moved.id]
        assert (await queue.backend.counts(queue=" mail "))["running"] == 1
