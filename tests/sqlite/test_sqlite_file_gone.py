"""The database file deleted or replaced under a running process: writes are refused, not silently lost.

Before, enqueue went on returning ids for tasks written to the deleted inode,
which nobody could ever see again (the WAL was even checkpointed into it at close).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import sitq_sqlite.connections as connections
from sitq import StoreGoneError, SyncTaskQueue, TaskQueue
from sitq_core.errors import ConnectionError, SitqError, WorkerError
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

TESTS = Path(__file__).resolve().parents[1]


def new_task() -> Task:
    return Task(id=new_id(), payload=b"data")


def ids_in(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM tasks")}


# ------------------------------------------------------------------ deleted or replaced file


@pytest.fixture
def check_every_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compare the file with the one opened at every write (normally at most every _FILE_CHECK_INTERVAL)."""
    monkeypatch.setattr(connections, "_FILE_CHECK_INTERVAL", 0.0)


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
async def test_writes_to_a_deleted_file_are_refused_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """rm q.db under a producer: every write path refuses (no id for a task nobody can see again)."""
    path = tmp_path / "q.db"
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        first = await queue.enqueue(tasks.add, 1, 2)
        os.remove(path)  # a cleanup script, a mistaken rm
        returned: list[str] = []
        with caplog.at_level(logging.ERROR, logger="sitq.sqlite"):
            for attempt in (
                lambda: queue.enqueue(tasks.add, 3, 4),  # the single-enqueue fast path
                lambda: queue.enqueue_many([(tasks.add, (i,)) for i in range(3)]),  # a small batch
                lambda: queue.enqueue_many([(tasks.add, (i,)) for i in range(500)]),  # a streamed batch
                lambda: backend.enqueue(new_task()),
                lambda: backend.reserve(worker_id="w", limit=1, lease_seconds=30),
                lambda: backend.cancel(first),
            ):
                with pytest.raises(ConnectionError) as info:
                    got = await attempt()
                    returned += got if isinstance(got, list) else [str(got)]
                message = str(info.value)
                assert "deleted or replaced" in message and str(path) in message
                assert "restart this process" in message.lower() and "connect again" in message, "it says what to do"
        assert returned == []
        gone = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
        assert len(gone) == 1, "logged once, not once per refused write"
        # reads of what this process already has still answer
        assert await queue.get_task(first) is not None


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
async def test_the_watcher_and_the_write_check_log_a_deleted_file_once_between_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer with a worker in one process logged two ERRORs for one rm (the watcher's 'restart it' and the
    write check's 'writes are refused'); a file connected to afresh and deleted again is news again."""
    path = tmp_path / "q.db"
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        await queue.enqueue(tasks.add, 1, 2)
        waiting = asyncio.ensure_future(backend.wait_for_work(30))  # the change watcher opens the file
        await wait_until(lambda: asyncio.sleep(0, backend._watcher is not None and backend._watcher._identity))
        with caplog.at_level(logging.ERROR, logger="sitq.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{path}{suffix}")
            await wait_until(lambda: asyncio.sleep(0, "deleted or replaced" in caplog.text))
            with pytest.raises(ConnectionError):
                await queue.enqueue(tasks.add, 3, 4)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    gone = [r.getMessage() for r in caplog.records if "deleted or replaced" in r.getMessage()]
    assert len(gone) == 1, gone
    assert "other processes no longer see" in gone[0] and "writes are refused" in gone[0]
    caplog.clear()
    async with TaskQueue(SQLiteBackend(path)) as again:  # connects to the file at the path now
        await again.enqueue(tasks.add, 5, 6)
        os.remove(path)
        with caplog.at_level(logging.ERROR, logger="sitq.sqlite"), pytest.raises(ConnectionError):
            await again.enqueue(tasks.add, 7, 8)
    assert len([r for r in caplog.records if "deleted or replaced" in r.getMessage()]) == 1


@pytest.mark.usefixtures("check_every_write")
def test_a_blocking_enqueue_to_a_deleted_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        queue.enqueue(tasks.add, 1)
        os.remove(path)
        with pytest.raises(SitqError, match="deleted or replaced") as info:
            queue.enqueue(tasks.add, 2)
        assert isinstance(info.value.__cause__, ConnectionError)


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
async def test_a_replaced_file_refuses_writes_until_the_backend_reconnects(tmp_path: Path) -> None:
    """mv backup.db q.db under a running process: refused; close() and connect() then use the file now there."""
    path, backup = tmp_path / "q.db", tmp_path / "backup.db"
    async with SQLiteBackend(backup) as other:
        kept = await other.enqueue(new_task())
    backend = SQLiteBackend(path)
    async with backend:
        await backend.enqueue(new_task())
        shutil.copy(backup, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)
        with pytest.raises(ConnectionError, match="deleted or replaced"):
            await backend.enqueue(new_task())
    async with backend:  # a later connect opens the file that is at the path now
        added = await backend.enqueue(new_task())
    assert ids_in(path) == {kept, added}


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
async def test_a_deleted_file_is_a_new_empty_database_after_reconnecting(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    backend = SQLiteBackend(path)
    async with backend:
        await backend.enqueue(new_task())
        os.remove(path)
        with pytest.raises(ConnectionError):
            await backend.enqueue(new_task())
    async with backend:
        added = await backend.enqueue(new_task())
    assert ids_in(path) == {added}
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.asyncio
async def test_the_file_check_is_throttled_on_the_hot_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop of single enqueues stats the file at most about once per _FILE_CHECK_INTERVAL, not per call."""
    calls = 0
    real = connections._file_identity

    def counting(path: str) -> tuple[int, int] | None:
        nonlocal calls
        calls += 1
        return real(path)

    monkeypatch.setattr(connections, "_file_identity", counting)
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db", synchronous="OFF")) as queue:
        at_connect = calls
        began = time.monotonic()
        for _ in range(200):
            await queue.enqueue(tasks.add, 1)
        elapsed = time.monotonic() - began
    assert calls - at_connect <= elapsed / connections._FILE_CHECK_INTERVAL + 1
    assert calls - at_connect < 20, "not one stat per enqueue"


def _stat_failing(monkeypatch: pytest.MonkeyPatch, path: Path, error: int) -> Callable[[], None]:
    """os.stat of ``path`` raises ``error`` (as on NFS: ESTALE, EIO; or EACCES once a folder's mode changed);
    returns what puts the real os.stat back."""
    real = os.stat

    def failing(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(target) == str(path):
            raise OSError(error, os.strerror(error), str(target))  # EACCES: a PermissionError
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    return lambda: monkeypatch.setattr(os, "stat", real)


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
@pytest.mark.parametrize("error", [errno.EACCES, errno.ESTALE, errno.EIO], ids=errno.errorcode.get)
async def test_a_file_that_cannot_be_looked_at_for_a_while_is_not_taken_for_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: int
) -> None:
    """Any failing stat counted as "deleted or replaced": writes were refused until the next connect, and a
    worker stopped (exit 2). Only a file that is not there, or another file at the path, is gone; another
    error says nothing either way: writes go on, the file is looked at again later, and the first failure
    is logged as a warning."""
    from sitq import Worker

    path = tmp_path / "q.db"
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.05, max_concurrency=2)
        running = asyncio.ensure_future(worker.run(handle_signals=False))
        try:
            assert await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=10) is not None
            restore = _stat_failing(monkeypatch, path, error)
            with caplog.at_level(logging.DEBUG, logger="sitq"):
                ids = [await queue.enqueue(tasks.add, i, 1) for i in range(3)]
                ids += await queue.enqueue_many([(tasks.add, (i, i)) for i in range(3)])
                ids += await queue.enqueue_many([(tasks.add, (i, 2)) for i in range(500)])  # streamed
                for task_id in ids:
                    assert await queue.get_result(task_id, timeout=10) is not None
            assert not running.done(), "the worker goes on"
            messages = [r.getMessage() for r in caplog.records]
            assert not [m for m in messages if "deleted or replaced" in m]
            warned = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot tell whether" in r.msg]
            assert len(warned) == 1 and str(path) in warned[0].getMessage(), messages
            restore()
            # once the file can be looked at again, a deleted file is still found out
            os.remove(path)
            with pytest.raises(StoreGoneError, match="deleted or replaced"):
                await queue.enqueue(tasks.add, 9, 9)
            with pytest.raises(WorkerError, match="deleted or replaced"):
                await asyncio.wait_for(running, timeout=60)  # a bound, not a timing
        finally:
            if not running.done():
                await worker.stop()
                await asyncio.gather(running, return_exceptions=True)


# ------------------------------------------------------------------ a worker stops on it


@pytest.mark.asyncio
@pytest.mark.usefixtures("check_every_write")
@pytest.mark.parametrize("busy", [False, True])
async def test_a_worker_whose_file_was_deleted_stops_and_run_raises(tmp_path: Path, busy: bool) -> None:
    """A worker kept retrying (or, idle, kept waiting on the old file for work nobody could give it) forever
    after logging "Restart this process": run() now ends with a WorkerError whose cause is the StoreGoneError."""
    from sitq import StoreGoneError, Worker
    from sitq_core.errors import WorkerError

    path = tmp_path / "q.db"
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.05, max_concurrency=2)
        running = asyncio.ensure_future(worker.run(handle_signals=False))
        first = await queue.enqueue(tasks.add, 1, 2)
        assert await queue.get_result(first, timeout=10) is not None  # it works
        if busy:
            await queue.enqueue_many([(tasks.add, (i, i)) for i in range(50)])
        os.remove(path)
        with pytest.raises(WorkerError, match="deleted or replaced") as info:
            await asyncio.wait_for(running, timeout=60)  # a bound, not a timing: it used to run forever
        assert isinstance(info.value.cause, StoreGoneError) and isinstance(info.value.cause, ConnectionError)
        assert not worker.running


@pytest.mark.slow
def test_sitq_worker_exits_2_when_its_file_is_deleted(tmp_path: Path) -> None:
    """systemd's Restart=on-failure restarts a worker only if it exits: it logged the fault and ran on."""
    path = tmp_path / "q.db"
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        first = queue.enqueue(tasks.add, 1, 2)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sitq",
                "worker",
                "-b",
                f"sqlite:///{path}",
                "-i",
                "sitq_test_tasks",
                "--poll-interval",
                "0.05",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert queue.get_result(first, timeout=30) == 3  # the worker is up and working
            os.remove(path)
            _out, err = child.communicate(timeout=60)  # a bound: it used to run until killed
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 2, err[-2000:]
    assert "deleted or replaced" in err and "sitq: error:" in err
    assert "Traceback" not in err
