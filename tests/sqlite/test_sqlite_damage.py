"""A damaged or incomplete SQLite file: clear errors instead of a crash, a lost index made again."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

TESTS = Path(__file__).resolve().parents[1]


def new_task() -> Task:
    return Task(id=new_id(), payload=b"data")


# ------------------------------------------------------------------ missing index


@pytest.mark.asyncio
async def test_a_dropped_claim_index_is_made_again_at_connect(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(path) as backend:
        for _ in range(3):
            await backend.enqueue(new_task())
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DROP INDEX tasks_claim")
        before = conn.execute("SELECT * FROM tasks ORDER BY seq").fetchall()
    async with SQLiteBackend(path) as backend:
        reserved = await backend.reserve(worker_id="w", limit=10, lease_seconds=30)
        assert len(reserved) == 3
    with closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "tasks_claim" in names
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        after = conn.execute("SELECT seq, id, payload, enqueued_at FROM tasks ORDER BY seq").fetchall()
    assert after == [(row[0], row[1], row[7], row[14]) for row in before], "no data touched"
