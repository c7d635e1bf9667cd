"""A connect whose session the server ends part-way (pg_terminate_backend): sitq connects again, then says so.

The connect runs create_pool, the schema check and a reading of the server's
clock; the server may end the session under any of them (a restart, an
administrator's pg_terminate_backend). A fresh session then usually works.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import ConnectionError, TaskQueue
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

ATTEMPTS = 3  # what the guide promises: a connect cut by the server is tried three times in all


async def _create(pg_dsn: str, schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=schema)):
        pass  # the first connect creates the schema


async def _next_waiter(admin: asyncpg.Connection, schema: str, connecting: asyncio.Task[None], seen: set[int]) -> int:
    """The pid of a new session waiting for the lock on ``schema.meta``; the connect's own error if it ended."""
    found: list[int] = []

    async def waiting_or_done() -> bool:
        pids = await admin.fetch(
            "SELECT pid FROM pg_locks WHERE NOT granted AND relation = $1::regclass", f"{schema}.meta"
        )
        found[:] = [row["pid"] for row in pids if row["pid"] not in seen]
        return bool(found) or connecting.done()

    await wait_until(waiting_or_done, timeout=20)
    if not found:
        connecting.result()  # raises what ended the connect
        raise AssertionError("the connect finished without waiting for the lock")
    seen.add(found[0])
    return found[0]


@pytest.mark.asyncio
async def test_a_connect_cut_during_the_schema_check_connects_again(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A session ended while the connect read the schema version raised "cannot create sitq's tables in schema
    ...: connection was closed in the middle of operation", though nothing needed creating."""
    caplog.set_level(logging.INFO, logger="sitq.postgres")
    await _create(pg_dsn, pg_schema)
    admin = await asyncpg.connect(pg_dsn)
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        locking = admin.transaction()
        await locking.start()
        await admin.execute(f"LOCK TABLE {pg_schema}.meta IN ACCESS EXCLUSIVE MODE")  # the connect waits on it
        connecting = asyncio.create_task(backend.connect())
        seen: set[int] = set()
        await admin.execute("SELECT pg_terminate_backend($1)", await _next_waiter(admin, pg_schema, connecting, seen))
        await _next_waiter(admin, pg_schema, connecting, seen)  # a fresh session, waiting in turn
        await locking.commit()
        await asyncio.wait_for(connecting, 20)
        assert await backend.counts() == {"queued": 0, "running": 0, "success": 0, "failed": 0, "cancelled": 0}
        assert "connecting again" in caplog.text
    finally:
        await admin.close()
        await backend.close()


@pytest.mark.asyncio
async def test_a_connect_cut_every_time_is_a_connection_error_saying_so(pg_dsn: str, pg_schema: str) -> None:
    """Past its retries, the error names the lost connection, not a DDL or privilege problem."""
    await _create(pg_dsn, pg_schema)
    admin = await asyncpg.connect(pg_dsn)
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        async with admin.transaction():
            await admin.execute(f"LOCK TABLE {pg_schema}.meta IN ACCESS EXCLUSIVE MODE")
            connecting = asyncio.create_task(backend.connect())
            seen: set[int] = set()
            while len(seen) <= ATTEMPTS:  # bounded: one more than the connect should make
                try:
                    pid = await _next_waiter(admin, pg_schema, connecting, seen)
                except ConnectionError:
                    break
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(ConnectionError) as info:
            await asyncio.wait_for(connecting, 20)
        assert len(seen) == ATTEMPTS
        message = str(info.value)
        assert "connection was closed" in message and "during connect" in message, message
        assert "cannot create" not in message and "another operation" not in message, message
    finally:
        await admin.close()
        await backend.close()


def _cutting_clock(pg_dsn: str, application_name: str, cuts: int) -> tuple[list[int], object]:
    """A ``wall_clock`` that, ``cuts`` times, ends the sessions named ``application_name`` and waits until they
    are gone before it answers: the connect's next statement (its reading of the server's clock) meets a closed
    connection. Returns the list of cuts made and the clock."""
    made: list[int] = []

    async def cut() -> None:
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", application_name
            )

            async def gone() -> bool:
                left = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
                )
                return not left

            await wait_until(gone, timeout=20)
        finally:
            await admin.close()

    def clock() -> float:
        if len(made) < cuts:
            made.append(1)
            with ThreadPoolExecutor(1) as pool:  # the backend's loop stays where it is, as a statement is sent
                pool.submit(asyncio.run, cut()).result(timeout=30)
        return time.time()

    return made, clock


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [1, ATTEMPTS], ids=["once", "every-time"])
async def test_a_first_enqueue_whose_connect_is_cut_at_the_clock_reading(
    pg_dsn: str, pg_schema: str, cuts: int
) -> None:
    """The clock reading at connect ran outside error translation: the first enqueue raised "BackendError: backend
    failed to enqueue: ConnectionDoesNotExistError" (a worker starting died with a traceback, exit 1)."""
    await _create(pg_dsn, pg_schema)
    name = f"sitq_cut_{uuid.uuid4().hex[:12]}"
    dsn = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={name}"
    backend = PostgresBackend(dsn, schema=pg_schema)
    made, backend.wall_clock = _cutting_clock(pg_dsn, name, cuts)  # type: ignore[method-assign]
    queue = TaskQueue(backend)
    try:
        if cuts < ATTEMPTS:
            task_id = await queue.enqueue(tasks.add, 1, 2)
            assert (await queue.get_task(task_id)) is not None
        else:
            with pytest.raises(ConnectionError) as info:
                await queue.enqueue(tasks.add, 1, 2)
            assert "connection was closed" in str(info.value) and "during connect" in str(info.value), info.value
        assert len(made) == cuts
    finally:
        await queue.close()


@pytest.mark.asyncio
async def test_a_refusal_at_connect_is_raised_as_it_is(pg_dsn: str, pg_schema: str) -> None:
    """sitq's ConnectionError is an OSError too: a refusal of the schema is not a cut, retried or wrapped again."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"CREATE SCHEMA {pg_schema}; CREATE TABLE {pg_schema}.meta (key text)")
    finally:
        await admin.close()
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        with pytest.raises(ConnectionError) as info:
            await backend.connect()
    finally:
        await backend.close()
    assert str(info.value).startswith(f"PostgreSQL schema {pg_schema!r} already holds table(s) meta"), info.value
