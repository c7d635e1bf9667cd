"""A commit by another connection wakes only the result waiters it concerns (not every waiter)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

import sitq_sqlite.backend as sqlite_backend
from sitq_core.models import Result, Task, new_id
from sitq_sqlite import SQLiteBackend
from sitq_sqlite.newresults import NewResults
from sitq_sqlite.schema import create_schema

from sitq_test_helpers import wait_until


class CountingBackend(SQLiteBackend):
    """Counts result reads: each is one query a waiter made."""

    reads = 0

    async def get_result(self, task_id: str) -> Result | None:
        self.reads += 1
        return await super().get_result(task_id)


def _results_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    create_schema(conn)
    return conn


def _store_result(conn: sqlite3.Connection, task_id: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO results (task_id, id, status, attempts, serializer) VALUES (?, ?, 'success', 1, 'x')",
        (task_id, task_id),
    )


def test_scan_reports_the_rows_added_since_the_last_scan(tmp_path: Path) -> None:
    conn = _results_db(tmp_path / "r.db")
    _store_result(conn, "old")
    scan = NewResults()
    assert scan.scan(conn) is None  # the first look cannot know what changed: wake everybody
    assert scan.scan(conn) == []
    _store_result(conn, "a")
    _store_result(conn, "b")
    assert scan.scan(conn) == ["a", "b"]
    assert scan.scan(conn) == []
    _store_result(conn, "a")  # stored again (a replaced row gets a new rowid)
    assert scan.scan(conn) == ["a"]


def test_scan_notices_a_reused_rowid_even_when_the_maximum_is_back(tmp_path: Path) -> None:
    conn = _results_db(tmp_path / "r.db")
    scan = NewResults()
    for task_id in ("a", "b"):
        _store_result(conn, task_id)
    scan.scan(conn)
    conn.execute("DELETE FROM results WHERE task_id = 'b'")  # a requeue: rowid 2 comes free
    _store_result(conn, "c")  # rowid 2 again: the maximum is where it was
    assert scan.scan(conn) is None
    conn.execute("DELETE FROM results WHERE task_id = 'c'")
    conn.execute(
        "INSERT INTO results (task_id, id, status, attempts, serializer, finished_at)"
        " VALUES ('c', 'c', 'success', 1, 'x', 7)"
    )  # the same task finished again, at the same rowid
    assert scan.scan(conn) is None
    assert scan.scan(conn) == []


def test_scan_wakes_everybody_after_the_newest_rows_were_deleted(tmp_path: Path) -> None:
    conn = _results_db(tmp_path / "r.db")
    scan = NewResults()
    for task_id in ("a", "b", "c"):
        _store_result(conn, task_id)
    scan.scan(conn)
    conn.execute("DELETE FROM results WHERE task_id IN ('b', 'c')")  # a purge: rowids 2 and 3 come free
    _store_result(conn, "d")  # gets rowid 2, below the 3 seen last
    assert scan.scan(conn) is None
    _store_result(conn, "e")
    assert scan.scan(conn) == ["e"]


def test_forget_starts_over(tmp_path: Path) -> None:
    conn = _results_db(tmp_path / "r.db")
    scan = NewResults()
    scan.scan(conn)
    scan.forget()
    _store_result(conn, "a")
    assert scan.scan(conn) is None


@pytest.mark.asyncio
async def test_another_connections_results_wake_only_their_own_waiters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "_RECHECK_FIRST", 60.0)  # no safety-net re-checks during the test
    path = tmp_path / "tasks.db"
    waiting, finishing = CountingBackend(path), SQLiteBackend(path)
    count, finished = 40, 12
    async with waiting, finishing:
        ids = await finishing.enqueue_many([Task(id=new_id(), payload=b"p") for _ in range(count)])
        leases = {lease.id: lease for lease in await finishing.reserve(worker_id="w", limit=count, lease_seconds=60)}
        waiters = {task_id: asyncio.create_task(waiting.wait_for_result(task_id, 30)) for task_id in ids}

        async def all_checked() -> bool:
            return waiting.reads >= count

        await wait_until(all_checked, interval=0.005)
        before = waiting.reads
        for task_id in ids[:finished]:  # one commit at a time, each from the other connection
            assert await finishing.complete(leases[task_id], task_id.encode())
            result = await asyncio.wait_for(waiters[task_id], 10)
            assert result is not None and result.value == task_id.encode()
        extra = waiting.reads - before
        # Each finished waiter reads once more; the watcher's first look may wake everybody once.
        # Waking every waiter on every commit would cost at least finished * (count - finished) reads.
        assert extra <= finished + count, extra
        assert not any(waiters[task_id].done() for task_id in ids[finished:])
        for task_id in ids[finished:]:
            waiters[task_id].cancel()
        await asyncio.gather(*waiters.values(), return_exceptions=True)


@pytest.mark.asyncio
async def test_a_change_watcher_that_could_not_open_the_file_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher thread that died (no file descriptor left, say) used to stay in place: no wake-ups for good."""
    from sitq_sqlite.watcher import Watcher

    real_connect = Watcher._connect
    attempts: list[int] = []

    def connect_failing_once(self: Watcher) -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(self)

    monkeypatch.setattr(Watcher, "_connect", connect_failing_once)
    backend = SQLiteBackend(tmp_path / "watched.db")
    async with backend:
        await backend.wait_for_work(0.05)  # starts the watcher, which fails to open the file and ends
        first = backend._watcher
        assert first is not None
        await asyncio.to_thread(first._thread.join, 10)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await backend.wait_for_work(10)  # a new watcher's first reading wakes this wait
        waited = loop.time() - began
    assert len(attempts) == 2, "no new watcher was started"
    assert waited < 5, f"the wait ran its whole course ({waited:.1f} s): nobody watched the file"


@pytest.mark.asyncio
async def test_a_database_file_deleted_under_a_running_process_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The process went on with the deleted file, unseen by every other process, and said nothing."""
    import os

    path = tmp_path / "deleted.db"
    backend = SQLiteBackend(path)
    async with backend:

        async def idle_worker() -> None:  # waits for work again and again: its watcher keeps running
            while True:
                await backend.wait_for_work(1)

        waiting = asyncio.ensure_future(idle_worker())
        # the watcher has opened the file
        await wait_until(lambda: asyncio.sleep(0, backend._watcher is not None and backend._watcher._identity))
        with caplog.at_level("ERROR", logger="sitq.sqlite"):
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{path}{suffix}")
            await wait_until(lambda: asyncio.sleep(0, "was deleted or replaced" in caplog.text))
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert "was deleted or replaced" in caplog.text and "restart this process" in caplog.text
