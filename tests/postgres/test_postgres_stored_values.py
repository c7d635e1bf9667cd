"""Values written into PostgreSQL's task rows around sitq: its typed columns refuse most; the rest fail alone."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import TaskQueue, Worker
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks

# what SQLite's dynamic typing stored as given (see tests/sqlite/test_bad_stored_rows.py). PostgreSQL refuses
# them, or turns them into a value of the column's type: a bare literal is read as one ('x' into a bytea
# payload is b'x', 'now' into eta is the time now), priority = 1.5 stores 2, a bytea queue its text form.
SQLITE_ONLY = [
    "timeout = 'ten'",
    "priority = 'high'",
    "payload = 'x'::text",
    "eta = 'now'::text",
    "enqueued_at = 'x'",
    "enqueued_at = 9223372036854775807",
    "max_retries = 'x'",
]


@pytest.mark.asyncio
async def test_typed_columns_refuse_the_values_that_spoiled_sqlite_rows(pg_dsn: str, pg_schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
    conn = await asyncpg.connect(pg_dsn)
    try:
        for assignment in SQLITE_ONLY:
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(f"UPDATE {pg_schema}.tasks SET {assignment} WHERE id = $1", task_id)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_nan_retry_backoff_retries_at_once_instead_of_killing_the_run(pg_dsn: str, pg_schema: str) -> None:
    """timedelta(seconds=nan) raised in the worker's batch task: the task stayed held, its lease renewed, for good."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    async with TaskQueue(backend, serializer="msgpack") as queue:
        failing = await queue.enqueue(tasks.boom, "no luck")
        good = [await queue.enqueue(tasks.add, i, 1) for i in range(4)]
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"UPDATE {pg_schema}.tasks SET max_retries = 1, retry_backoff = 'NaN' WHERE id = $1", failing
            )
        finally:
            await conn.close()
        worker = Worker(backend, serializer="msgpack", max_concurrency=4, lease_timeout=3)
        await worker.start()
        try:
            results = await asyncio.gather(*(queue.get_result(task_id, timeout=30) for task_id in [failing, *good]))
        finally:
            await worker.stop(timeout=10)
        failed = results[0]
        assert failed is not None and failed.status == "failed" and failed.attempts == 2, failed
        assert "no luck" in (failed.error or ""), failed.error
        assert all(result is not None and result.status == "success" for result in results[1:]), results
