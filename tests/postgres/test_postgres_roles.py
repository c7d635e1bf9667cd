"""sitq through application roles: one with table privileges only, and one at its connection limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sitq_test_postgres import dsn_with, temporary_role

from sitq import TaskQueue, Worker
from sitq_core.models import LeaseState
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


@pytest_asyncio.fixture
async def app_role(pg_dsn: str, pg_schema: str) -> AsyncIterator[str]:
    """A login role with only the table privileges of docs/how-to/postgres-backend.md on a schema the
    test's owner made (at most 2 connections); dropped afterwards."""
    async with temporary_role(pg_dsn, pg_schema, "sitq_app", grants="SELECT, INSERT, UPDATE, DELETE", limit=2) as role:
        yield role


@pytest.mark.asyncio
async def test_a_role_with_table_privileges_only_runs_producers_and_workers(
    pg_dsn: str, pg_schema: str, app_role: str
) -> None:
    """Once an owner made the schema, the application's role needs no CREATE: connecting skips the DDL."""
    backend = PostgresBackend(dsn_with(pg_dsn, role=app_role), schema=pg_schema, max_connections=1)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        try:
            task_id = await queue.enqueue(tasks.add, 2, 3)
            assert queue.deserialize_result(await queue.get_result(task_id, timeout=20)) == 5
        finally:
            await worker.stop()


@pytest.mark.asyncio
async def test_at_the_connection_limit_a_call_waits_for_a_pooled_connection(
    pg_dsn: str, pg_schema: str, app_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease renewal that overlaps a claim needs a second pooled connection; when the role's connection limit
    refuses it, the renewal waits for the pool's busy connection instead of failing (a failed renewal cost a
    live worker its leases)."""
    caplog.set_level(logging.DEBUG, logger="sitq.postgres")
    role_url = dsn_with(pg_dsn, role=app_role)
    backend = PostgresBackend(role_url, schema=pg_schema, max_connections=10)
    await backend.connect()  # one pooled connection of the role's two
    holder = await asyncpg.connect(role_url)  # the other: the role is at its limit
    locker = await asyncpg.connect(pg_dsn)
    try:
        locking = locker.transaction()
        await locking.start()
        await locker.execute(f"LOCK TABLE {pg_schema}.tasks IN ACCESS EXCLUSIVE MODE")
        busy = asyncio.create_task(backend.get_task("some-task"))  # holds the pool's connection, waiting

        async def busy_waits_on_the_lock() -> bool:
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", f"{pg_schema}.tasks"
            )
            return bool(waiting) or busy.done()

        await wait_until(busy_waits_on_the_lock, timeout=20)
        renewal = asyncio.create_task(backend.heartbeat([("some-task", "token")], 30.0))

        async def renewal_refused_or_waiting() -> bool:
            return renewal.done() or any("connection limit" in r.getMessage() for r in caplog.records)

        await wait_until(renewal_refused_or_waiting, timeout=20)
        await locking.commit()
        assert await busy is None
        assert await renewal == {"some-task": LeaseState.LOST}  # answered, not failed
    finally:
        await locker.close()
        await holder.close()
        await backend.close()
