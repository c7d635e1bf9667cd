"""A queue closed while its worker runs, then the event loop ends under that worker (never stopped).

The queue's close waits for the worker ("happens when that worker stops"); the
loop's end stops the worker, so the close must happen then. It never did: each
such ``asyncio.run`` left the store's thread and files open (SQLite) or a
connection (PostgreSQL) for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

from sitq import Backend, SQLiteBackend, TaskQueue, Worker

from sitq_test_helpers import wait_until_sync


def _store_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("sitq-sqlite")}


def _open_files(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                found.append(target)
    return found


def _app_run(backend: Backend) -> None:
    """One application run: a worker started beside a queue and never stopped, as asyncio.run ends."""

    async def main() -> None:
        async with TaskQueue(backend) as queue:
            await queue.enqueue(print, "hello")
            await Worker(backend).start()

    asyncio.run(main())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux) to list open files")
def test_a_sqlite_file_is_closed_when_the_loop_ends_under_the_worker(tmp_path: Path) -> None:
    before = _store_threads()
    for n in range(3):
        _app_run(SQLiteBackend(tmp_path / f"app_{n}.db"))
    wait_until_sync(lambda: not (_store_threads() - before) and not _open_files(tmp_path))


def test_a_sqlite_memory_store_is_closed_when_the_loop_ends_under_the_worker() -> None:
    before = _store_threads()
    _app_run(SQLiteBackend(":memory:"))
    wait_until_sync(lambda: not (_store_threads() - before))


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    require_postgres()
    schema = f"loop_end_close_{uuid.uuid4().hex[:8]}"
    yield schema
    drop_schema(schema)


def test_a_postgres_connection_is_closed_when_the_loop_ends_under_the_worker(postgres_schema: str) -> None:
    import asyncpg

    from sitq_postgres import PostgresBackend

    name = f"sitq-loop-end-{uuid.uuid4().hex[:8]}"
    backend = PostgresBackend(f"{DSN}?application_name={name}", schema=postgres_schema)
    _app_run(backend)

    async def sessions() -> int:
        conn = await asyncpg.connect(DSN)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))
        finally:
            await conn.close()

    count: Callable[[], int] = lambda: asyncio.run(sessions())  # noqa: E731
    wait_until_sync(lambda: count() == 0)
