"""A schema sitq made (its ``made_by`` row) whose ``meta.schema_version`` cannot be read is refused as sitq's.

It said "already holds table(s) meta, tasks, results that sitq did not
create": wrong, and it sent the user to make another schema. Now the refusal
says the version is unreadable, quotes it, says how to put it back, and
nothing in the schema changes.
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


async def _state(conn: Any, schema: str) -> tuple[list[Any], list[Any], list[Any]]:
    columns = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2", schema
    )
    meta = await conn.fetch(f'SELECT key, value FROM "{schema}".meta ORDER BY key')
    rows = await conn.fetch(f'SELECT id, status FROM "{schema}".tasks ORDER BY id')
    return list(columns), list(meta), list(rows)


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["writing", "reading-only", "exists"])
@pytest.mark.parametrize("version", ["abc", "1.0", " 2", "-1", "0", "\u00b2", None], ids=repr)
async def test_an_unreadable_schema_version_in_sitqs_meta_is_refused_as_such(
    pg_dsn: str, pg_schema: str, version: str | None, how: str
) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        await queue.enqueue(tasks.add, 1, 2)
    admin = await asyncpg.connect(pg_dsn)
    try:
        if version is None:
            await admin.execute(f"DELETE FROM \"{pg_schema}\".meta WHERE key = 'schema_version'")
        else:
            await admin.execute(f"UPDATE \"{pg_schema}\".meta SET value = $1 WHERE key = 'schema_version'", version)
        before = await _state(admin, pg_schema)
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with pytest.raises(ConnectionError) as info:
                if how == "exists":
                    await backend.exists()
                elif how == "reading-only":
                    with reading_only():
                        await backend.counts()
                else:
                    await backend.enqueue(Task(id=new_id(), payload=b"p"))
        finally:
            await backend.close()
        message = str(info.value)
        assert "did not create" not in message and "not made by sitq" not in message, message
        said = "has no schema_version row" if version is None else f"schema_version is {version!r}"
        assert f"PostgreSQL schema {pg_schema!r} holds sitq's tables" in message and said in message, message
        assert "UPDATE" in message or "INSERT" in message, message  # what to do
        assert "nothing in this one was changed" in message, message
        assert await _state(admin, pg_schema) == before
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_a_meta_with_an_unreadable_version_and_no_mark_is_still_refused_as_not_sitqs(
    pg_dsn: str, pg_schema: str
) -> None:
    """Without sitq's mark, nothing says whose the tables are: the refusal stays as it was."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            f'CREATE SCHEMA "{pg_schema}"; CREATE TABLE "{pg_schema}".meta (key text PRIMARY KEY, value text)'
        )
        await admin.execute(f"INSERT INTO \"{pg_schema}\".meta VALUES ('schema_version', 'abc')")
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with pytest.raises(ConnectionError, match="did not create"):
                await backend.enqueue(Task(id=new_id(), payload=b"p"))
        finally:
            await backend.close()
    finally:
        await admin.close()
