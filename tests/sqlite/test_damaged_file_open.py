"""A file that SQLite finds damaged when it is opened: the documented hint, and no files left beside it.

A producer's or worker's connect said only "database disk image is
malformed"; ``sitq stats``, which promises to create nothing, left an empty
-wal and a 32 KB -shm file beside the damaged file (its read-only look at the
file opened it ``mode=ro``, and SQLite leaves a read-only connection's -wal
and -shm files behind at close).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitq import TaskQueue
from sitq_core.errors import ConnectionError
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

import sitq_test_tasks as tasks

TESTS = Path(__file__).resolve().parents[1]
DAMAGED = "the file is damaged: check it with 'PRAGMA integrity_check;'"


def _sitq_file(path: Path) -> None:
    """A real sitq file of about 700 KB, closed (checkpointed: no -wal beside it)."""

    async def fill() -> None:
        async with SQLiteBackend(path) as backend:
            await backend.enqueue_many([Task(id=new_id(), payload=b"p" * 300) for _ in range(2000)])

    asyncio.run(fill())
    assert path.stat().st_size > 400_000


@pytest.fixture(params=["header", "truncated"])
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """``header``: a sitq file's first 100 bytes (its header, which says WAL); ``truncated``: its first 200 KB."""
    whole = tmp_path / "whole" / "q.db"
    _sitq_file(whole)
    path = tmp_path / "bad" / f"{request.param}.db"
    path.parent.mkdir()
    path.write_bytes(whole.read_bytes()[: 100 if request.param == "header" else 200_000])
    return path


@pytest.mark.asyncio
async def test_a_connect_to_a_damaged_file_says_it_is_damaged(damaged: Path) -> None:
    path = damaged
    before = path.read_bytes()
    backend = SQLiteBackend(path)
    with pytest.raises(ConnectionError) as info:
        await backend.connect()
    assert "database disk image is malformed" in str(info.value)
    assert DAMAGED in str(info.value), str(info.value)
    with pytest.raises(ConnectionError) as info:  # a producer's first enqueue connects the same way
        async with TaskQueue(SQLiteBackend(path)) as queue:
            await queue.enqueue(tasks.add, 1, 2)
    assert DAMAGED in str(info.value), str(info.value)
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert path.read_bytes() == before


@pytest.mark.asyncio
async def test_the_read_only_look_at_a_damaged_file_creates_nothing(damaged: Path) -> None:
    path = damaged
    with pytest.raises(ConnectionError) as info:
        await SQLiteBackend(path).exists()
    assert DAMAGED in str(info.value), str(info.value)
    assert sorted(os.listdir(path.parent)) == [path.name]


@pytest.fixture
def idle_file(tmp_path: Path) -> Path:
    path = tmp_path / "q.db"
    _sitq_file(path)
    return path


@pytest.mark.asyncio
async def test_the_read_only_look_at_a_healthy_idle_file_creates_nothing(idle_file: Path, tmp_path: Path) -> None:
    path = idle_file
    assert await SQLiteBackend(path).exists() is True
    assert sorted(os.listdir(tmp_path)) == [path.name]


@pytest.mark.asyncio
async def test_the_read_only_look_leaves_a_live_writers_wal_alone(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(path) as writer:
        await writer.enqueue(Task(id=new_id(), payload=b"first"))
        assert (tmp_path / "q.db-wal").exists()
        assert await SQLiteBackend(path).exists() is True
        assert (tmp_path / "q.db-wal").exists() and (tmp_path / "q.db-shm").exists()
        await writer.enqueue(Task(id=new_id(), payload=b"second"))
        async with SQLiteBackend(path) as other:  # a second connection sees both through the writer's WAL
            assert (await other.counts())["queued"] == 2
    async with SQLiteBackend(path) as backend:
        assert (await backend.counts())["queued"] == 2


@pytest.mark.slow
def test_sitq_stats_and_a_worker_on_a_damaged_file_say_so_and_leave_no_files(damaged: Path) -> None:
    """docs/how-to/sqlite-backend.md: "Read-only tools (`sitq stats`) create and change nothing"."""
    path = damaged
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    for command in ("stats", "worker"):
        done = subprocess.run(
            [sys.executable, "-m", "sitq", command, "-b", f"sqlite:///{path}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert DAMAGED in done.stderr, done.stderr
        assert sorted(os.listdir(path.parent)) == [path.name], command
        assert path.read_bytes() == before
