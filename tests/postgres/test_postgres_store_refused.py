"""A worker stops, instead of retrying forever, when no retry can reach its store: SQLite's rule, on PostgreSQL.

A role that may only read sitq's tables, and a database dropped under a
running worker, were retried without end (logged once, then silence). Each
uses a role or database of its own, made and dropped by the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sitq_test_postgres import dsn_with, temporary_role

from sitq import StoreGoneError, TaskQueue, Worker
from sitq_core.errors import ConnectionError, WorkerError
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

TESTS = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture
async def reader_role(pg_dsn: str, pg_schema: str) -> AsyncIterator[str]:
    """A login role with USAGE on the test's schema and SELECT on its tables only; dropped afterwards."""
    async with temporary_role(pg_dsn, pg_schema, "sitq_reader", grants="SELECT") as role:
        yield role


@pytest_asyncio.fixture
async def writer_role(pg_dsn: str, pg_schema: str) -> AsyncIterator[str]:
    """A login role with the table privileges workers and producers need; dropped afterwards."""
    async with temporary_role(pg_dsn, pg_schema, "sitq_writer", grants="SELECT, INSERT, UPDATE, DELETE") as role:
        yield role


async def _admin(dsn: str, *statements: str) -> None:
    """Run ``statements`` as the test server's owner."""
    admin = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await admin.execute(statement)
    finally:
        await admin.close()


def _read_only(role: str, on: bool) -> list[str]:
    """Make ``role``'s new sessions read-only (or not), and end its sessions, which reconnect so."""
    setting = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    return [
        f"ALTER ROLE {role} {setting}",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'" if on else "SELECT 1",
    ]


@pytest_asyncio.fixture
async def own_database(pg_dsn: str) -> AsyncIterator[str]:
    """A database of the test's own, dropped afterwards (if the test has not dropped it)."""
    name = f"sitq_db_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@pytest.mark.asyncio
async def test_a_worker_whose_role_can_only_read_stops_and_run_raises(
    pg_dsn: str, pg_schema: str, reader_role: str
) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as owner:
        task_id = await owner.enqueue(tasks.add, 1, 2)
        worker = Worker(PostgresBackend(dsn_with(pg_dsn, role=reader_role), schema=pg_schema), poll_interval=0.05)
        with pytest.raises(WorkerError, match="permission denied") as info:
            await asyncio.wait_for(worker.run(handle_signals=False), timeout=60)  # a bound: it ran forever
        assert isinstance(info.value.cause, StoreGoneError)
        assert "SELECT, INSERT, UPDATE, DELETE" in info.value.cause.message
        assert (await owner.get_task(task_id)).status == "queued"  # nothing taken, nothing lost


@pytest.mark.asyncio
async def test_a_worker_whose_database_is_dropped_stops_and_run_raises(pg_dsn: str, own_database: str) -> None:
    backend = PostgresBackend(dsn_with(pg_dsn, database=own_database), schema="sitq")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.05)
        running = asyncio.ensure_future(worker.run(handle_signals=False))
        task_id = await queue.enqueue(tasks.add, 1, 2)
        assert await queue.get_result(task_id, timeout=20) is not None  # it works
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(f"DROP DATABASE {own_database} WITH (FORCE)")
        finally:
            await admin.close()
        with pytest.raises(WorkerError, match="does not exist") as info:
            await asyncio.wait_for(running, timeout=60)  # a bound: it retried forever
        assert isinstance(info.value.cause, StoreGoneError)
        assert own_database in info.value.cause.message and not worker.running


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sitq_worker_exits_2_when_its_role_can_only_read(pg_dsn: str, pg_schema: str, reader_role: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    url = f"{dsn_with(pg_dsn, role=reader_role)}?schema={pg_schema}"
    command = [sys.executable, "-m", "sitq", "worker", "-b", url, "-i", "sitq_test_tasks", "--poll-interval", "0.05"]
    child = await asyncio.create_subprocess_exec(*command, env=env, stderr=subprocess.PIPE)
    try:
        _out, err = await asyncio.wait_for(child.communicate(), timeout=60)  # a bound: it ran until killed
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = err.decode()
    assert child.returncode == 2, text[-2000:]
    assert "permission denied" in text and "sitq: error:" in text and "Traceback" not in text


@pytest.mark.asyncio
async def test_a_write_refused_as_read_only_drops_its_connection_so_the_next_call_recovers(
    pg_dsn: str, pg_schema: str, writer_role: str
) -> None:
    """Sessions that reconnected read-only (a demoted primary, default_transaction_read_only) stayed pooled:
    after the database was writable again, every claim still failed, until their sessions were ended."""
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as owner:
        task_id = await owner.enqueue(tasks.add, 1, 2)
        backend = PostgresBackend(dsn_with(pg_dsn, role=writer_role), schema=pg_schema, max_connections=2)
        try:
            await backend.connect()
            await _admin(pg_dsn, *_read_only(writer_role, True))
            with pytest.raises(ConnectionError, match="read-only") as info:
                await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
            assert not isinstance(info.value, StoreGoneError)  # a worker keeps trying: this may pass
            await _admin(pg_dsn, *_read_only(writer_role, False))
            # as a worker's retries do: a session the pool reopened (to keep its floor) between the drop and the
            # RESET is still read-only, and is replaced when it refuses; a bounded number of calls recover
            for _attempt in range(4):
                try:
                    reserved = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
                    break
                except ConnectionError as exc:
                    assert "read-only" in str(exc), exc
            else:
                pytest.fail("still read-only after 4 calls")
            assert [item.task.id for item in reserved] == [task_id]
        finally:
            await backend.close()


@pytest.mark.asyncio
async def test_a_worker_keeps_trying_while_the_database_is_read_only_and_runs_tasks_after(
    pg_dsn: str, pg_schema: str, writer_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as owner:
        backend = PostgresBackend(dsn_with(pg_dsn, role=writer_role), schema=pg_schema)
        worker = Worker(backend, poll_interval=0.05)
        await worker.start()
        try:
            assert (
                owner.deserialize_result(await owner.get_result(await owner.enqueue(tasks.add, 1, 2), timeout=20)) == 3
            )
            await _admin(pg_dsn, *_read_only(writer_role, True))
            task_id = await owner.enqueue(tasks.add, 2, 3)

            async def refused() -> bool:
                return "read-only" in caplog.text

            await wait_until(refused, timeout=20)
            await _admin(pg_dsn, *_read_only(writer_role, False))
            assert owner.deserialize_result(await owner.get_result(task_id, timeout=20)) == 5
            assert worker.running
        finally:
            await worker.stop()
            await backend.close()


@pytest_asyncio.fixture
async def guarded_database(pg_dsn: str, own_database: str) -> AsyncIterator[tuple[str, str]]:
    """(the test's own database, which PUBLIC may not CONNECT to, holding sitq's tables; a role granted CONNECT
    on it and the table privileges workers need). The role is dropped afterwards."""
    owner_dsn = dsn_with(pg_dsn, database=own_database)
    async with TaskQueue(PostgresBackend(owner_dsn, schema="sitq")):
        pass  # the owner's first connect creates the schema
    role = f"sitq_conn_{uuid.uuid4().hex[:12]}"
    await _admin(pg_dsn, f"REVOKE CONNECT ON DATABASE {own_database} FROM PUBLIC", f"CREATE ROLE {role} LOGIN")
    try:
        await _admin(
            owner_dsn,
            f"GRANT USAGE ON SCHEMA sitq TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sitq TO {role}",
        )
        yield own_database, role
    finally:
        await _admin(
            pg_dsn,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
            f"DROP DATABASE IF EXISTS {own_database} WITH (FORCE)",
            f"DROP ROLE IF EXISTS {role}",
        )


@pytest.mark.asyncio
async def test_a_role_without_connect_privilege_is_told_so_even_when_it_only_reads(
    pg_dsn: str, guarded_database: tuple[str, str]
) -> None:
    """It was told 'this role may not write sitq's tables', also by sitq stats, which writes nothing."""
    database, role = guarded_database
    with pytest.raises(StoreGoneError) as info:
        async with TaskQueue(PostgresBackend(dsn_with(pg_dsn, role=role, database=database))) as queue:
            await queue.counts()
    assert "GRANT CONNECT ON DATABASE" in info.value.message, info.value.message
    assert "may not write" not in info.value.message


@pytest.mark.asyncio
async def test_a_worker_whose_connect_privilege_is_revoked_stops_saying_so(
    pg_dsn: str, guarded_database: tuple[str, str]
) -> None:
    database, role = guarded_database
    await _admin(pg_dsn, f"GRANT CONNECT ON DATABASE {database} TO {role}")
    backend = PostgresBackend(dsn_with(pg_dsn, role=role, database=database))
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.05)
        running = asyncio.ensure_future(worker.run(handle_signals=False))
        assert queue.deserialize_result(await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=20)) == 3
        await _admin(
            pg_dsn,
            f"REVOKE CONNECT ON DATABASE {database} FROM {role}",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        )
        with pytest.raises(WorkerError) as info:
            await asyncio.wait_for(running, timeout=60)
    assert isinstance(info.value.cause, StoreGoneError)
    assert "GRANT CONNECT ON DATABASE" in info.value.cause.message, info.value.cause.message
