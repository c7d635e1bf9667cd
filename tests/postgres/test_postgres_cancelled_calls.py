"""Calls cut short by their caller or by the end of the event loop: no unretrieved errors, no held connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import TaskQueue
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


@pytest.fixture
def asyncio_errors() -> Iterator[list[str]]:
    """What asyncio logs at ERROR meanwhile ("Future exception was never retrieved", ...)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(level=logging.ERROR)
    logging.getLogger("asyncio").addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger("asyncio").removeHandler(handler)


async def _sessions(dsn: str, name: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))
    finally:
        await conn.close()


def test_enqueues_cancelled_while_the_pool_connects_leave_no_unretrieved_errors(
    pg_dsn: str, pg_schema: str, asyncio_errors: list[str]
) -> None:
    """Cancelled in asyncpg's TLS step (the default sslmode), a pool's new connection left
    'Future exception was never retrieved ... unexpected connection_lost() call' at exit (137 in 300)."""
    name = f"sitq-cut-{uuid.uuid4().hex[:8]}"
    dsn = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={name}"

    async def main() -> dict[str, int]:
        async with TaskQueue(PostgresBackend(dsn, schema=pg_schema)) as queue:
            await queue.enqueue(tasks.add, 1, 2)  # connected, schema made
            for i in range(300):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.enqueue(tasks.add, 1, 2), (0, 0.0001, 0.0005, 0.001)[i % 4])
            return await queue.counts()

    counts = asyncio.run(main())
    gc.collect()
    assert counts["queued"] >= 1
    unretrieved = [message for message in asyncio_errors if "never retrieved" in message]
    assert unretrieved == [], f"{len(unretrieved)} unretrieved: {unretrieved[0]}"

    async def none_left() -> bool:
        return await _sessions(pg_dsn, name) == 0

    asyncio.run(wait_until(none_left))  # the server ends a dropped session a moment later


@pytest.mark.parametrize("caller_cancelled_first", [False, True])
@pytest.mark.asyncio
async def test_a_call_whose_give_back_the_loops_end_cancels_holds_no_pooled_connection(
    pg_dsn: str, pg_schema: str, caller_cancelled_first: bool
) -> None:
    """asyncio.run's cancel-all cancelled the task giving a connection back before it ran: the pool kept it
    as in use, so the backend's close waited out its whole timeout (a worker left running: +5 s at exit)."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema, min_connections=2)
    await backend.connect()
    pool = backend._pools[asyncio.get_running_loop()]
    me = asyncio.current_task()
    try:
        for _ in range(10):
            before = asyncio.all_tasks()
            call = asyncio.ensure_future(backend.counts())
            if caller_cancelled_first:  # a caller's timeout in the midst of the call, then the loop's end
                await asyncio.sleep(0)
                call.cancel()
            new: set[asyncio.Task[object]] = set()
            while not new and not call.done():  # the first task the call makes: its connection's give-back
                await asyncio.sleep(0)
                new = asyncio.all_tasks() - before - {call}
            # what asyncio.run does at its end: cancel every task, then wait for them
            ending = [task for task in asyncio.all_tasks() if task is not me]
            for task in ending:
                task.cancel()
            await asyncio.gather(*ending, return_exceptions=True)
            assert pool.get_idle_size() == pool.get_size(), "a cancelled call's connection is still held"
    finally:
        await backend.close()
