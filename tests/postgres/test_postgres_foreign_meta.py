"""An application's own ``meta`` table is told from sitq's by a row sitq writes, not by a ``schema_version`` row.

An app's ``meta(key text primary key, value text)`` holding
``('schema_version', '1')`` was taken for sitq's (sitq then created tasks and
results beside it), and one holding ``'7'`` was refused as "sitq schema version
7, newer than this sitq-postgres understands". sitq's ``meta`` now carries a
``made_by`` row; a schema made before that row existed is still sitq's when
sitq's ``tasks`` or ``results`` stand beside its ``meta``.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import ConnectionError, TaskQueue
from sitq_core.backend import reading_only
from sitq_core.models import Task, new_id
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks


async def _tables(conn: Any, schema: str) -> list[Any]:
    return list(
        await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
            schema,
        )
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("reading", [False, True], ids=["writing", "reading-only"])
@pytest.mark.parametrize("version", ["1", "7"])
async def test_an_apps_meta_with_a_numeric_schema_version_is_refused_untouched(
    pg_dsn: str, pg_schema: str, version: str, reading: bool
) -> None:
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            f'CREATE SCHEMA "{pg_schema}"; CREATE TABLE "{pg_schema}".meta (key text PRIMARY KEY, value text)'
        )
        await admin.execute(f'INSERT INTO "{pg_schema}".meta VALUES ($1, $2)', "schema_version", version)
        before = (await _tables(admin, pg_schema), await admin.fetch(f'SELECT * FROM "{pg_schema}".meta'))
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with pytest.raises(ConnectionError) as info:
                if reading:
                    with reading_only():
                        await backend.counts()
                else:
                    await backend.enqueue(Task(id=new_id(), payload=b"p"))
        finally:
            await backend.close()
        message = str(info.value)
        assert "meta" in message and ("did not create" in message or "not made by sitq" in message), message
        assert "newer than this" not in message
        assert (await _tables(admin, pg_schema), await admin.fetch(f'SELECT * FROM "{pg_schema}".meta')) == before
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_a_schema_sitq_makes_marks_its_meta(pg_dsn: str, pg_schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        await queue.counts()
    admin = await asyncpg.connect(pg_dsn)
    try:
        rows = dict(await admin.fetch(f'SELECT key, value FROM "{pg_schema}".meta'))
    finally:
        await admin.close()
    assert rows == {"schema_version": "1", "made_by": "sitq-postgres"}


@pytest.mark.asyncio
@pytest.mark.parametrize("dropped", [None, "results", "tasks"])
async def test_a_schema_made_before_the_mark_is_still_sitqs(pg_dsn: str, pg_schema: str, dropped: str | None) -> None:
    """An earlier sitq-postgres wrote only schema_version: its tasks or results beside meta say whose it is."""
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        kept = await queue.enqueue(tasks.add, 1, 2)
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"DELETE FROM \"{pg_schema}\".meta WHERE key = 'made_by'")
        if dropped:
            await admin.execute(f'DROP TABLE "{pg_schema}".{dropped}')
        with reading_only():  # sitq stats on it, creating nothing
            if dropped is None:
                async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
                    assert (await queue.counts())["queued"] == 1
            else:
                with pytest.raises(ConnectionError, match=f"{dropped} missing"):
                    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
                        await queue.counts()
        async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
            await queue.enqueue(tasks.add, 3, 4)
            assert (await queue.counts())["queued"] == (1 if dropped == "tasks" else 2)
            if dropped != "tasks":
                assert await queue.get_task(kept) is not None
    finally:
        await admin.close()
