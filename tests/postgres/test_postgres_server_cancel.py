"""Statements the server cancels (statement_timeout) or sessions it ends: errors that say what the server said.

A role's ``statement_timeout`` cancels the connect's schema check when it waits
on a lock of sitq's tables (a migration, a ``LOCK TABLE``); the server's reason
for ending a session inside a transaction comes chained behind asyncpg's
"connection is closed" from ``Transaction.__aexit__``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sitq_test_postgres import dsn_with, temporary_role

from sitq import ConnectionError, TaskQueue
from sitq_core.models import Outcome
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

TIMEOUT_REASON = "canceling statement due to statement timeout"
#: The sessions waiting on a lock the asking session holds.
BLOCKED_BY_ME = "SELECT array_agg(pid) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"


@pytest_asyncio.fixture
async def timed_role(pg_dsn: str, pg_schema: str) -> AsyncIterator[str]:
    """A role with table privileges on a made schema and ``statement_timeout = 300ms`` (set on the role)."""
    async with temporary_role(pg_dsn, pg_schema, "sitq_timed", grants="SELECT, INSERT, UPDATE, DELETE") as role:
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(f"ALTER ROLE {role} SET statement_timeout = '300ms'")
        finally:
            await admin.close()
        yield role


async def _locked_meta(admin: asyncpg.Connection, schema: str) -> asyncpg.transaction.Transaction:
    """``schema.meta`` locked by ``admin`` (no statement_timeout of its own) until the transaction ends."""
    locking = admin.transaction()
    await locking.start()
    await admin.execute(f"LOCK TABLE {schema}.meta IN ACCESS EXCLUSIVE MODE")
    return locking


@pytest.mark.asyncio
async def test_a_schema_check_the_server_cancels_is_made_again(
    pg_dsn: str, pg_schema: str, timed_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled schema check failed the connect with "cannot create sitq's tables ... canceling statement due
    to statement timeout", not retried, though nothing needed creating."""
    caplog.set_level(logging.INFO, logger="sitq.postgres")
    admin = await asyncpg.connect(pg_dsn)
    backend = PostgresBackend(dsn_with(pg_dsn, role=timed_role), schema=pg_schema, connect_timeout=30)
    try:
        locking = await _locked_meta(admin, pg_schema)
        connecting = asyncio.create_task(backend.connect())

        async def cancelled_once() -> bool:
            return connecting.done() or "cancelled the schema check" in caplog.text

        await wait_until(cancelled_once, timeout=20)
        await locking.commit()
        await asyncio.wait_for(connecting, 20)
        assert TIMEOUT_REASON in caplog.text
        assert await backend.counts() == {"queued": 0, "running": 0, "success": 0, "failed": 0, "cancelled": 0}
    finally:
        await admin.close()
        await backend.close()


@pytest.mark.asyncio
async def test_a_schema_check_cancelled_every_time_says_why(pg_dsn: str, pg_schema: str, timed_role: str) -> None:
    """Past its retries (connect_timeout), the error names the server's reason and statement_timeout."""
    admin = await asyncpg.connect(pg_dsn)
    backend = PostgresBackend(dsn_with(pg_dsn, role=timed_role), schema=pg_schema, connect_timeout=1)
    try:
        locking = await _locked_meta(admin, pg_schema)
        try:
            with pytest.raises(ConnectionError) as info:
                await asyncio.wait_for(backend.connect(), 30)
        finally:
            await locking.rollback()
        message = str(info.value)
        assert TIMEOUT_REASON in message and "statement_timeout" in message and "cancelled" in message, message
        assert "cannot create" not in message and "connection was closed" not in message, message
    finally:
        await admin.close()
        await backend.close()


@pytest.mark.asyncio
async def test_exists_cancelled_by_the_server_names_the_reason(pg_dsn: str, pg_schema: str, timed_role: str) -> None:
    """``sitq stats`` asks exists() first: its cancelled query was told as "the connection was closed (by the
    server or the network; no reason came with it)", the connection being closed before it was described."""
    admin = await asyncpg.connect(pg_dsn)
    backend = PostgresBackend(dsn_with(pg_dsn, role=timed_role), schema=pg_schema)
    try:
        locking = await _locked_meta(admin, pg_schema)
        try:
            with pytest.raises(ConnectionError) as info:
                await asyncio.wait_for(backend.exists(), 30)
        finally:
            await locking.rollback()
        message = str(info.value)
        assert TIMEOUT_REASON in message and "connection was closed" not in message, message
    finally:
        await admin.close()
        await backend.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("operation", ["heartbeat", "finish_and_reserve"])
async def test_a_session_ended_inside_a_transaction_names_the_servers_reason(
    pg_dsn: str, pg_schema: str, operation: str
) -> None:
    """asyncpg raises "connection is closed" from Transaction.__aexit__ with the server's reason as its context:
    the error said "no reason came with it" though the reason was "terminating connection due to administrator
    command"."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with TaskQueue(backend) as queue:
            await queue.enqueue(tasks.add, 1, 2)
            [held] = await backend.reserve(worker_id="w1", limit=1, lease_seconds=60)
            async with admin.transaction():
                await admin.execute(f"SELECT 1 FROM {pg_schema}.tasks WHERE id = $1 FOR UPDATE", held.task.id)
                if operation == "heartbeat":
                    call = backend.heartbeat([(held.task.id, held.lease_token)], 60)
                else:
                    outcome = Outcome(held.task.id, held.lease_token, "success", value=b"3")
                    call = backend.finish_and_reserve([outcome], worker_id="w1", limit=1, lease_seconds=60)
                running = asyncio.ensure_future(call)
                blocked: list[int] = []

                async def waits_on_the_row() -> bool:
                    blocked[:] = await admin.fetchval(BLOCKED_BY_ME) or []
                    return bool(blocked) or running.done()

                await wait_until(waits_on_the_row, timeout=20)
                assert blocked, running
                await admin.execute("SELECT pg_terminate_backend($1)", blocked[0])
                with pytest.raises(ConnectionError) as info:
                    await asyncio.wait_for(running, 20)
        message = str(info.value)
        assert "terminating connection due to administrator command" in message, message
        assert "no reason came with it" not in message, message
    finally:
        await admin.close()
