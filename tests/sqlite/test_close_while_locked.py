"""close() while a call waits out another connection's write lock returns promptly, not after busy_timeout.

Before, close() waited for its connection thread, which went on retrying the
waiting call (a worker's claim) until busy_timeout ran out: 60 s with
``?busy_timeout=60``, so ``sitq worker`` took a minute to stop on Ctrl-C while a
maintenance script held the lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from sitq_core.errors import BackendError
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

from sitq_test_helpers import in_child, wait_until


def retrying_on(thread_prefix: str) -> bool:
    """True while a thread named ``thread_prefix...`` is inside the backend's busy-retry loop."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        if not thread.name.startswith(thread_prefix) or thread.ident not in frames:
            continue
        frame = frames[thread.ident]
        while frame is not None:
            if frame.f_code.co_name == "_retrying" and frame.f_code.co_filename.endswith("connections.py"):
                return True
            frame = frame.f_back
    return False


@pytest.mark.asyncio
async def test_close_gives_up_a_claim_waiting_for_another_connections_lock(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    backend = SQLiteBackend(path, busy_timeout=60)
    await backend.connect()
    task = Task(id=new_id(), payload=b"x")
    await backend.enqueue(task)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # a maintenance script's long transaction
    try:
        claim = asyncio.ensure_future(backend.reserve(worker_id="w", limit=1, lease_seconds=30))
        await wait_until(lambda: asyncio.sleep(0, retrying_on("sitq-sqlite:")))
        began = time.monotonic()
        await asyncio.wait_for(backend.close(), 20)  # well below busy_timeout=60
        took = time.monotonic() - began
        with pytest.raises(BackendError) as info:
            await asyncio.wait_for(claim, 20)
        message = str(info.value)
        assert "closed" in message and "reserve" in message and "nothing was changed" in message, message
        assert "busy_timeout" not in message, "not blamed on the lock outlasting busy_timeout"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert took < 20
    # the claim was rolled back, not half done: the task is still there to be claimed
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT status FROM tasks WHERE id = ?", (task.id,)).fetchall() == [("queued",)]
    async with backend:  # connects again and works
        assert [r.task.id for r in await backend.reserve(worker_id="w", limit=1, lease_seconds=30)] == [task.id]


@pytest.mark.asyncio
async def test_close_gives_up_writes_queued_behind_a_waiting_one(tmp_path: Path) -> None:
    """Several calls waiting on the thread: each fails at once with the same clear error."""
    path = tmp_path / "queued.db"
    backend = SQLiteBackend(path, busy_timeout=60)
    await backend.counts()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        writes = [
            asyncio.ensure_future(backend.enqueue_many([Task(id=new_id(), payload=b"x") for _ in range(20)]))
            for _ in range(3)
        ]
        await wait_until(lambda: asyncio.sleep(0, retrying_on("sitq-sqlite:")))
        await asyncio.wait_for(backend.close(), 20)
        for write in writes:
            with pytest.raises(BackendError, match="closed"):
                await asyncio.wait_for(write, 20)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


@pytest.mark.asyncio
async def test_close_after_a_fork_returns_while_another_connection_holds_the_lock(tmp_path: Path) -> None:
    """A fork closes the backend's connection; close() opened it again for its checkpoint, met the lock of
    another connection and raised its internal ``_Closing`` ("close failed: _Closing: database is locked")."""
    path = tmp_path / "forked.db"
    backend = SQLiteBackend(path, busy_timeout=60, journal_mode="DELETE")
    await backend.connect()
    task = Task(id=new_id(), payload=b"x")
    await backend.enqueue(task)
    assert in_child(lambda: None) == 0  # the fork closes the connection; the next call opens a new one
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # opening a connection (setting its journal mode) must wait for this
    try:
        await asyncio.wait_for(backend.close(), 20)  # well below busy_timeout=60, and no error
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT id, status FROM tasks").fetchall() == [(task.id, "queued")]
    async with backend:  # connects again and works
        assert [r.task.id for r in await backend.reserve(worker_id="w", limit=1, lease_seconds=30)] == [task.id]
