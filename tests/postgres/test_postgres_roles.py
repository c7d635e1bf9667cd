"""sitq through application roles: one with table privileges only, and one at its connection limit."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sitq_test_postgres import dsn_with, temporary_role

from sitq import BackendError, ConnectionError, TaskQueue, Worker
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


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [3.0, None], ids=["timeout", "no-timeout"])
async def test_a_waiter_that_cannot_listen_still_reads_a_stored_result(
    pg_dsn: str, pg_schema: str, app_role: str, timeout: float | None
) -> None:
    """With the role at its connection limit the LISTEN connection was refused, and get_result(timeout=3) raised
    ConnectionError after 3 s for a task finished long before, while timeout=0 returned its result at once."""
    role_url = dsn_with(pg_dsn, role=app_role)
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as owner:  # the worker's side: another role
        worker = Worker(owner.backend)
        await worker.start()
        try:
            backend = PostgresBackend(role_url, schema=pg_schema, max_connections=1)
            async with TaskQueue(backend) as queue:
                holder = await asyncpg.connect(role_url)  # the role's second connection: no room to LISTEN
                try:
                    finished = await queue.enqueue(tasks.add, 2, 3)
                    assert await owner.get_result(finished, timeout=20) is not None
                    result = await asyncio.wait_for(queue.get_result(finished, timeout=timeout), 10)
                    assert result is not None and queue.deserialize_result(result) == 5
                    later = await queue.enqueue(tasks.sync_sleepy, 0.3)  # finishes while the waiter polls
                    result = await asyncio.wait_for(queue.get_result(later, timeout=timeout), 10)
                    assert result is not None and result.status == "success"
                finally:
                    await holder.close()
        finally:
            await worker.stop()


@pytest.mark.asyncio
async def test_an_enqueue_cancelled_by_statement_timeout_is_a_plain_backend_error(
    pg_dsn: str, pg_schema: str, app_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A statement_timeout cancel (QueryCanceledError) was taken for a lost connection: the enqueue was sent again
    for seconds, then raised ConnectionError 'could not find out whether it was stored', though it rolled back."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"ALTER ROLE {app_role} SET statement_timeout = '200ms'")
        backend = PostgresBackend(dsn_with(pg_dsn, role=app_role), schema=pg_schema, max_connections=1)
        async with TaskQueue(backend) as queue:
            kept = await queue.enqueue(tasks.add, 0)
            locking = admin.transaction()
            await locking.start()
            await admin.execute(f"LOCK TABLE {pg_schema}.tasks IN ACCESS EXCLUSIVE MODE")
            try:
                with pytest.raises(BackendError) as info:
                    await asyncio.wait_for(queue.enqueue(tasks.add, 1), 30)
            finally:
                await locking.rollback()
            assert not isinstance(info.value, ConnectionError), info.value
            assert "statement timeout" in str(info.value) and "whether it was stored" not in str(info.value)
            assert "lost its connection" not in caplog.text  # not sent again
            assert await queue.counts() == {"queued": 1, "running": 0, "success": 0, "failed": 0, "cancelled": 0}
            assert await queue.get_task(kept) is not None
    finally:
        await admin.execute(f"ALTER ROLE {app_role} RESET statement_timeout")
        await admin.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("made", ["owned", "granted"])
async def test_a_role_without_create_on_the_database_creates_tables_in_a_schema_made_beforehand(
    pg_dsn: str, pg_schema: str, made: str
) -> None:
    """The guide promises that a schema made beforehand needs CREATE on that schema only; the setup began with
    CREATE SCHEMA IF NOT EXISTS, which PostgreSQL refuses without CREATE on the database even when the schema
    exists ("cannot create sitq's tables in schema ...: permission denied for database")."""
    role = f"sitq_maker_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        if made == "owned":
            await admin.execute(f"CREATE SCHEMA {pg_schema} AUTHORIZATION {role}")
        else:
            await admin.execute(f"CREATE SCHEMA {pg_schema}; GRANT USAGE, CREATE ON SCHEMA {pg_schema} TO {role}")
        assert not await admin.fetchval("SELECT has_database_privilege($1, current_database(), 'CREATE')", role)
        async with TaskQueue(PostgresBackend(dsn_with(pg_dsn, role=role), schema=pg_schema)) as queue:
            task_id = await queue.enqueue(tasks.add, 2, 3)
            assert await queue.get_task(task_id) is not None
        owner = await admin.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'tasks'", pg_schema
        )
        assert owner == role
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await admin.execute(f"DROP SCHEMA IF EXISTS {pg_schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()
