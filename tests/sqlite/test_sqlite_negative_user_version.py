"""A sitq file whose ``PRAGMA user_version`` is negative is refused like an unknown version, left as it was.

No sitq-sqlite writes a negative version; one was silently rewritten to the
current version (and the tables taken as current) at the next connect. Version
0 stays accepted: a file restored from a dump carries no ``user_version``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from sitq import ConnectionError, SQLiteBackend, TaskQueue
from sitq_core.backend import reading_only
from sitq_sqlite.schema import SCHEMA_VERSION

import sitq_test_tasks as tasks


def _snapshot(path: Path) -> tuple[Any, ...]:
    with closing(sqlite3.connect(path)) as conn:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA user_version").fetchone()[0],
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
            conn.execute("SELECT id, status FROM tasks ORDER BY id").fetchall(),
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("reading", [False, True], ids=["writing", "reading-only"])
@pytest.mark.parametrize("version", [-1, -(2**31)])
async def test_a_negative_user_version_on_a_sitq_file_is_refused_untouched(
    tmp_path: Path, version: int, reading: bool
) -> None:
    path = tmp_path / "negative.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        await queue.enqueue(tasks.add, 1, 2)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    before = _snapshot(path)
    assert before[1] == version
    backend = SQLiteBackend(path)
    try:
        with pytest.raises(ConnectionError) as info:
            if reading:
                with reading_only():
                    await backend.counts()
            else:
                await backend.enqueue_many([])
                await backend.counts()
    finally:
        await backend.close()
    message = str(info.value)
    assert f"has schema version {version} (PRAGMA user_version)" in message, message
    assert f"PRAGMA user_version = {SCHEMA_VERSION}" in message, message  # what to do
    assert "nothing in this one was changed" in message and "newer" not in message, message
    assert _snapshot(path) == before


@pytest.mark.asyncio
async def test_a_zero_user_version_on_sitqs_tables_is_still_taken_as_a_restored_dump(tmp_path: Path) -> None:
    path = tmp_path / "restored.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        kept = await queue.enqueue(tasks.add, 1, 2)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 0")
    async with TaskQueue(SQLiteBackend(path)) as queue:
        assert await queue.get_task(kept) is not None
    assert _snapshot(path)[1] == SCHEMA_VERSION
