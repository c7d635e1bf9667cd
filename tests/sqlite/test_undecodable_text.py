"""A TEXT value that is not valid UTF-8 (written around sitq, or a flipped byte) costs only its own row.

``UPDATE tasks SET function_name = CAST(x'61ff' AS TEXT)`` is accepted by
SQLite, but Python's sqlite3 raises "Could not decode to UTF-8 column ..."
on reading it. That error made every claim that took the row fail (the
worker retried the same claim forever, with the outcomes finished in the
same transaction unstored), and made get_task, list_tasks and get_result
raise. Such a value reads with each bad byte as a backslash escape
(``a\\xff``) and follows the rules of the other values changed by hand.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import Outcome, Task, TaskStatus, new_id
from sitq_sqlite.newresults import NewResults

import sitq_test_tasks as tasks

BAD = "CAST(x'61ff' AS TEXT)"  # 'a' then a byte that is never UTF-8
SHOWN = "'a\\xff'"  # how messages show it
READ = "a\\xff"  # what a read gives in its place (a backslash escape: nothing is lost)


def spoil(path: Path, where: str, assignment: str, *params: Any, table: str = "tasks") -> None:
    """Write bytes that are not UTF-8 into one row's TEXT column, as any sqlite3 user can."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"UPDATE {table} SET {assignment} WHERE {where}", params)


def stored(path: Path, task_id: str) -> tuple[Any, ...]:
    with closing(sqlite3.connect(path)) as conn:
        conn.text_factory = bytes
        row = conn.execute("SELECT status, attempts, error FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return tuple(row) if row is not None else ()


# column -> whether the claim must end the task failed (False: the claim writes the column afresh, so it runs)
CLAIMED = {
    "function_name": True,
    "queue": True,
    "serializer": True,
    "error": True,
    "id": True,
    "worker_id": False,
    "lease_token": False,
}


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("column", list(CLAIMED))
async def test_a_row_with_text_that_is_not_utf8_fails_alone_and_the_others_run(tmp_path: Path, column: str) -> None:
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path), serializer="msgpack") as queue:
        ids = [await queue.enqueue(tasks.add, i, 1) for i in range(8)]
        bad, good = ids[2], ids[:2] + ids[3:]
        with closing(sqlite3.connect(path)) as conn:
            (seq,) = conn.execute("SELECT seq FROM tasks WHERE id = ?", (bad,)).fetchone()
        spoil(path, "seq = ?", f"{column} = {BAD}", seq)
        worker = Worker(queue.backend, serializer="msgpack", max_concurrency=4, lease_timeout=3)
        await worker.start()
        try:
            results = await asyncio.gather(*(queue.get_result(task_id, timeout=30) for task_id in good))
            if column != "id":
                ended = await queue.get_result(bad, timeout=30)
            counts = await queue.backend.counts()
        finally:
            await worker.stop(timeout=10)
        for task_id, result in zip(good, results, strict=True):
            assert result is not None, f"task {task_id} never finished: {stored(path, task_id)}"
            assert result.status == "success" and result.attempts == 1, result
        if not CLAIMED[column]:
            assert ended is not None and ended.status == "success", "the claim wrote the column afresh"
            assert counts["success"] == 8, counts
            return
        assert counts == {"queued": 0, "running": 0, "success": 7, "failed": 1, "cancelled": 0}
        with closing(sqlite3.connect(path)) as conn:
            conn.text_factory = bytes
            status, attempts, expiries, error = conn.execute(
                "SELECT status, attempts, lease_expiries, error FROM tasks WHERE seq = ?", (seq,)
            ).fetchone()
        assert (status, attempts, expiries) == (b"failed", 1, 0), "failed at its first claim, not after lost leases"
        message = f"task row cannot be read: stored {column} is not valid UTF-8: {SHOWN} (text)"
        assert error.decode() == message
        if column != "id":
            assert ended is not None and ended.status == "failed" and ended.error == message, ended
            assert ended.attempts == 1
        listed = {task.id: task for task in await queue.list_tasks()}
        shown_id = READ if column == "id" else bad
        assert set(listed) == {*good, shown_id}, "no row is skipped"
        assert listed[shown_id].status == TaskStatus.FAILED and message in (listed[shown_id].error or "")
        if column != "id":
            task = await queue.get_task(bad)
            assert task is not None and task.error == listed[bad].error
            assert getattr(task, column) in (READ, listed[bad].error), "the bad text reads with backslash escapes"


@pytest.mark.asyncio
async def test_the_outcomes_finished_with_the_claim_that_takes_the_row_are_stored(tmp_path: Path) -> None:
    """finish_and_reserve's transaction was rolled back whole: the healthy outcome stayed unstored."""
    path = tmp_path / "finish.db"
    first, bad, last = (Task(id=new_id(), payload=b"ok") for _ in range(3))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([first, bad, last])
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        spoil(path, "id = ?", f"function_name = {BAD}", bad.id)
        outcome = Outcome(task_id=lease.id, lease_token=lease.lease_token, kind="success", value=b"done")
        accepted, leases = await backend.finish_and_reserve([outcome], worker_id="w", limit=5, lease_seconds=30)
        assert accepted == [True]
        assert [held.id for held in leases] == [last.id]
        with closing(sqlite3.connect(path)) as conn:  # committed: another connection sees it
            assert conn.execute("SELECT status FROM tasks WHERE id = ?", (first.id,)).fetchone() == ("success",)
        result = await backend.get_result(bad.id)
        assert result is not None and result.status == "failed", result
        assert result.error == f"task row cannot be read: stored function_name is not valid UTF-8: {SHOWN} (text)"


@pytest.mark.asyncio
async def test_reads_return_such_a_row_with_the_bad_text_escaped(tmp_path: Path) -> None:
    path = tmp_path / "reads.db"
    first, bad, last = (Task(id=new_id(), payload=b"ok", queue="q") for _ in range(3))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([first, bad, last])
        spoil(path, "id = ?", f"function_name = {BAD}, worker_id = {BAD}, error = {BAD}", bad.id)
        listed = await backend.list_tasks()
        assert [task.id for task in listed] == [first.id, bad.id, last.id], "no row is skipped: pages stay whole"
        assert await backend.list_tasks(queue="q", status="queued", limit=2, offset=1) == listed[1:]
        marked = listed[1]
        assert marked == await backend.get_task(bad.id)
        assert marked.status == TaskStatus.QUEUED and marked.payload == b"ok", "what can be read is kept"
        assert marked.function_name == READ and marked.worker_id == READ
        assert marked.error == (
            f"task row cannot be read: stored function_name is not valid UTF-8: {SHOWN} (text); "
            f"stored worker_id is not valid UTF-8: {SHOWN} (text); "
            f"stored error is not valid UTF-8: {SHOWN} (text) (its stored error: {READ})"
        )
        assert listed[0] == await backend.get_task(first.id) and listed[0].error is None
        assert await backend.counts() == {"queued": 3, "running": 0, "success": 0, "failed": 0, "cancelled": 0}
        assert await backend.counts(queue="q") == await backend.counts()


@pytest.mark.asyncio
async def test_a_task_id_that_is_not_utf8_reads_escaped_and_the_others_by_their_ids(tmp_path: Path) -> None:
    path = tmp_path / "id.db"
    first, bad = (Task(id=new_id(), payload=b"ok") for _ in range(2))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([first, bad])
        spoil(path, "id = ?", f"id = {BAD}", bad.id)
        listed = await backend.list_tasks()
        assert [task.id for task in listed] == [first.id, READ]
        assert listed[1].error == f"task row cannot be read: stored id is not valid UTF-8: {SHOWN} (text)"
        assert await backend.get_task(bad.id) is None and await backend.get_task(first.id) == listed[0]
        leases = await backend.reserve(worker_id="w", limit=5, lease_seconds=30)
        assert [lease.id for lease in leases] == [first.id], "the bad row ends failed, found by its rowid"
        assert await backend.reserve(worker_id="w", limit=5, lease_seconds=30) == []
        assert await backend.counts() == {"queued": 0, "running": 1, "success": 0, "failed": 1, "cancelled": 0}
        assert await backend.complete(leases[0], b"done")
        assert await backend.purge() == 2, "purge deletes it and its result too"
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)


@pytest.mark.asyncio
async def test_get_result_of_a_result_row_with_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    task = Task(id=new_id(), payload=b"ok")
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(task)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert await backend.complete(lease, b"value")
        spoil(path, "task_id = ?", f"serializer = {BAD}, traceback = {BAD}, id = {BAD}", task.id, table="results")
        result = await backend.get_result(task.id)
        assert result is not None
        assert result.status == "failed", "a success whose serializer cannot be read is not delivered as one"
        assert result.serializer == READ and result.traceback == READ and result.id == READ
        assert result.error == (
            f"result row cannot be read: stored id is not valid UTF-8: {SHOWN} (text); "
            f"stored traceback is not valid UTF-8: {SHOWN} (text); "
            f"stored serializer is not valid UTF-8: {SHOWN} (text)"
        )
        assert await backend.wait_for_result(task.id, timeout=5) == result
        spoil(path, "task_id = ?", f"error = {BAD}, value = {BAD}", task.id, table="results")
        error = (await backend.get_result(task.id) or pytest.fail("gone")).error
        assert error is not None and f"stored value is not bytes: {SHOWN} (text)" in error, error
        assert f"stored error is not valid UTF-8: {SHOWN} (text)" in error, error


@pytest.mark.asyncio
async def test_a_queue_name_that_is_not_utf8_stops_neither_claims_nor_next_eta(tmp_path: Path) -> None:
    """The claim walks the queues by name and binds each name again: a name it cannot read stopped every claim."""
    path = tmp_path / "queue.db"
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = Task(id=new_id(), payload=b"later", queue="bad", eta=later)
    soon = Task(id=new_id(), payload=b"soon", queue="other", eta=later - timedelta(minutes=1))
    good = [Task(id=new_id(), payload=b"ok", queue=f"q{i}") for i in range(3)]
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([waiting, soon, *good])
        spoil(path, "id = ?", f"queue = {BAD}", waiting.id)
        leases = await backend.reserve(worker_id="w", limit=10, lease_seconds=30)
        assert sorted(lease.id for lease in leases) == sorted(task.id for task in good)
        for lease in leases:
            assert await backend.complete(lease, b"done")
        assert await backend.next_eta() == soon.eta
        assert await backend.next_eta(["other"]) == soon.eta
        assert (await backend.get_task(waiting.id) or pytest.fail("gone")).queue == READ
        spoil(path, "id = ?", "eta = 0, due = 0", waiting.id)  # due now: the claim takes it and ends it failed
        assert await backend.reserve(worker_id="w", limit=10, lease_seconds=30) == []
        result = await backend.get_result(waiting.id)
        assert result is not None and result.status == "failed", result
        assert result.error == f"task row cannot be read: stored queue is not valid UTF-8: {SHOWN} (text)"


@pytest.mark.asyncio
async def test_cancel_and_lease_expiry_of_a_row_with_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    queued, running = (Task(id=new_id(), payload=b"ok", max_lease_expiries=1) for _ in range(2))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(running)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        await backend.enqueue(queued)
        spoil(path, "id = ?", f"serializer = {BAD}", queued.id)
        assert await backend.cancel(queued.id)
        result = await backend.get_result(queued.id)
        assert result is not None and result.status == "cancelled" and result.serializer == READ, result
        # a running row changed while its worker is gone: the lease runs out, and the claim ends it
        spoil(path, "id = ?", f"serializer = {BAD}, function_name = {BAD}, due = 0", lease.id)
        assert await backend.reserve(worker_id="w", limit=1, lease_seconds=30) == []
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "failed" and result.serializer == READ, result
        assert result.error == (  # the result copies the row as stored, and reads as any result row changed by hand
            f"result row cannot be read: stored serializer is not valid UTF-8: {SHOWN} (text) "
            "(its stored error: lease expired after 1 attempts)"
        )


def test_the_change_watcher_reads_new_results_past_a_task_id_that_is_not_utf8(tmp_path: Path) -> None:
    """Its scan raised on such a row at every commit, waking every result waiter each time."""
    path = tmp_path / "watch.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE results (task_id TEXT, finished_at INTEGER)")
        conn.execute("INSERT INTO results VALUES ('first', 1)")
        scan = NewResults()
        assert scan.scan(conn) is None  # the first look only marks where it is
        conn.execute(f"INSERT INTO results VALUES ({BAD}, 2), ('after', 3)")
        assert scan.scan(conn) == ["after"]
        conn.execute("INSERT INTO results VALUES ('later', 4)")
        assert scan.scan(conn) == ["later"]
        assert conn.text_factory is str


@pytest.mark.asyncio
async def test_only_the_call_that_meets_such_text_reads_with_the_tolerant_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path keeps sqlite3's own decoding: the tolerant text_factory is put back after the call."""
    import sitq_sqlite.claims as claims
    import sitq_sqlite.undecodable as undecodable
    from sitq_sqlite.undecodable import tolerant_text

    calls: list[bytes] = []

    def counted(raw: bytes) -> Any:
        calls.append(raw)
        return tolerant_text(raw)

    monkeypatch.setattr(claims, "tolerant_text", counted)  # what the lane walk compares with
    monkeypatch.setattr(undecodable, "tolerant_text", counted)  # what read_tolerantly switches to
    path = tmp_path / "hot.db"
    good, bad = (Task(id=new_id(), payload=b"ok") for _ in range(2))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([good, bad])
        spoil(path, "id = ?", f"function_name = {BAD}", bad.id)
        assert (await backend.get_task(bad.id) or pytest.fail("gone")).function_name == READ
        assert len(await backend.list_tasks()) == 2
        assert calls, "the fallback ran"
        calls.clear()
        assert await backend.get_task(good.id) is not None
        await backend.cancel(bad.id)
        assert len(await backend.list_tasks(status="queued")) == 1
        (lease,) = await backend.reserve(worker_id="w", limit=5, lease_seconds=30)
        assert await backend.complete(lease, b"done")
        assert calls == [], "the calls after it decode as sqlite3 does"
