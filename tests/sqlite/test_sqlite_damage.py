"""A damaged or incomplete SQLite file: clear errors instead of a crash, a lost index made again."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from sitq_core.errors import BackendError
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

TESTS = Path(__file__).resolve().parents[1]


def new_task() -> Task:
    return Task(id=new_id(), payload=b"data")


def run_sitq(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "sitq", *args], capture_output=True, text=True, env=env, timeout=60)


# ------------------------------------------------------------------ damaged rows


@pytest.mark.asyncio
async def test_counts_refuses_a_status_outside_the_five(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(new_task())
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE tasks SET status = 'bogus'")
    async with SQLiteBackend(path) as backend:
        with pytest.raises(BackendError) as info:
            await backend.counts()
    assert "damaged" in str(info.value) and "PRAGMA integrity_check" in str(info.value)
    assert "'bogus'" in str(info.value), "it names what it found"


@pytest.mark.asyncio
async def test_reading_a_damaged_task_row_is_a_backend_error_naming_the_damage(tmp_path: Path) -> None:
    """list_tasks and get_task raised a bare ValueError from TaskStatus('bogus')."""
    path = tmp_path / "rows.db"
    task = new_task()
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(task)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE tasks SET status = 'bogus'")
    async with SQLiteBackend(path) as backend:
        for read in (backend.list_tasks(), backend.get_task(task.id)):
            with pytest.raises(BackendError) as info:
                await read
            assert "PRAGMA integrity_check" in str(info.value), str(info.value)


@pytest.mark.asyncio
async def test_a_read_that_meets_a_damaged_row_leaves_no_statement_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rows after the bad one stayed unread in an open statement: the checkpoint at close then failed
    ("database table is locked") and said so in a warning."""
    path = tmp_path / "open.db"
    async with SQLiteBackend(path) as backend:
        for _ in range(3):
            await backend.enqueue(new_task())
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("UPDATE tasks SET status = 'bogus' WHERE seq = 1")
    caplog.set_level(logging.DEBUG, logger="sitq")
    async with SQLiteBackend(path) as backend:
        with pytest.raises(BackendError):
            await backend.list_tasks()
        with pytest.raises(BackendError):
            await backend.counts()
    assert "checkpoint at close failed" not in caplog.text, caplog.text
    with closing(sqlite3.connect(path)) as conn:  # the WAL was checkpointed into the file at close
        assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] in (0, -1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    [b"\x00" * 256, b"\xde\xad\xbe\xef" * 64],
    ids=["zeroed: a row reads back with a NULL status", "garbage: the page reads as malformed"],
)
def test_sitq_stats_on_a_damaged_file_exits_2_with_a_clear_message(tmp_path: Path, damage: bytes) -> None:
    """256 bytes overwritten in the middle of a page: stats crashed on a None status with a TypeError (exit 1)."""
    path = tmp_path / "bad.db"
    code = textwrap.dedent(
        """
        import asyncio, sys
        import sitq_test_tasks as tasks
        from sitq import TaskQueue
        async def main():
            async with TaskQueue("sqlite:///" + sys.argv[1]) as queue:
                await queue.enqueue_many([(tasks.add, ("p" * 200,)) for i in range(3000)])
        asyncio.run(main())
        """
    )
    made = subprocess.run([sys.executable, "-c", code, str(path)], env=dict(os.environ, PYTHONPATH=str(TESTS)))
    assert made.returncode == 0
    with open(path, "r+b") as damaged:
        damaged.seek(path.stat().st_size // 2 // 4096 * 4096 + 2048)
        damaged.write(damage)
    for extra in ([], ["--json"]):
        done = run_sitq("stats", "-b", f"sqlite:///{path}", *extra)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert "damaged" in done.stderr and "PRAGMA integrity_check" in done.stderr, done.stderr


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


def test_an_io_error_at_open_on_a_nearly_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at open read only 'disk I/O error' (SQLite cannot grow the -shm file): nothing to act on."""
    import shutil as shutil_module
    from collections import namedtuple

    from sitq_sqlite import backend as sqlite_backend

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _path: usage(16 << 20, (16 << 20) - 4096, 4096))
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = 4874  # type: ignore[attr-defined]  # SQLITE_IOERR_SHMSIZE
    hint = sqlite_backend._disk_full_hint(str(tmp_path / "q.db"), io_error)
    assert "4,096 bytes free" in hint and "full disk" in hint
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _path: usage(16 << 30, 0, 8 << 30))
    assert sqlite_backend._disk_full_hint(str(tmp_path / "q.db"), io_error) == "", "plenty of room: no such claim"
    other = sqlite3.OperationalError("no such table: tasks")
    other.sqlite_errorcode = 1  # type: ignore[attr-defined]
    assert sqlite_backend._disk_full_hint(str(tmp_path / "q.db"), other) == ""
