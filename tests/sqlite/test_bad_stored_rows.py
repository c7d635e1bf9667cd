"""A task row holding a value of the wrong type (written around sitq) fails alone; the others run.

SQLite columns are dynamically typed: ``UPDATE tasks SET timeout = 'ten'`` is
accepted. Such a row made the worker's loader die (a TypeError) with four tasks
held for good, made every claim raise (a text priority), or dropped a whole
claimed batch as "database disk image is malformed" until its tasks failed
with "lease expired after 3 attempts" without ever running.
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
from sitq_core.models import Task, TaskStatus, new_id

import sitq_test_tasks as tasks

BAD_ROWS = {
    "timeout text": ("timeout = 'ten'", "timeout", "'ten' (text)"),
    "priority text": ("priority = 'high'", "priority", "'high' (text)"),
    "priority real": ("priority = 1.5", "priority", "1.5 (real)"),
    "payload text": ("payload = 'x'", "payload", "'x' (text)"),
    "eta text": ("eta = 'now'", "eta", "'now' (text)"),
    "enqueued_at text": ("enqueued_at = 'x'", "enqueued_at", "'x' (text)"),
    "enqueued_at huge": ("enqueued_at = 9223372036854775807", "enqueued_at", "9223372036854775807 (integer"),
    "enqueued_at negative": ("enqueued_at = -9223372036854775807", "enqueued_at", "-9223372036854775807 (integer"),
    "function_name blob": ("function_name = X'ff00'", "function_name", "b'\\xff\\x00' (blob)"),
    "queue blob": ("queue = X'ff'", "queue", "b'\\xff' (blob)"),
    "max_retries text": ("max_retries = 'x'", "max_retries", "'x' (text)"),
    "retry_backoff text": ("retry_backoff = 'x'", "retry_backoff", "'x' (text)"),
    "max_lease_expiries text": ("max_lease_expiries = 'x'", "max_lease_expiries", "'x' (text)"),
}


def spoil(path: Path, task_id: str, assignment: str) -> None:
    """Write a value of the wrong type into one task row, as any sqlite3 user can."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"UPDATE tasks SET {assignment} WHERE id = ?", (task_id,))


def stored(path: Path, task_id: str) -> tuple[Any, ...]:
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT status, attempts, lease_expiries, error FROM tasks WHERE id = ?", (task_id,))
        return tuple(row.fetchone())


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("assignment, column, shown", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
async def test_a_row_with_a_value_of_the_wrong_type_fails_alone_and_the_others_run(
    tmp_path: Path, assignment: str, column: str, shown: str
) -> None:
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path), serializer="msgpack") as queue:
        ids = [await queue.enqueue(tasks.add, i, 1) for i in range(8)]
        bad, good = ids[0], ids[1:]
        spoil(path, bad, assignment)
        worker = Worker(queue.backend, serializer="msgpack", max_concurrency=4, lease_timeout=3)
        await worker.start()
        try:
            results = await asyncio.gather(*(queue.get_result(task_id, timeout=30) for task_id in ids))
        finally:
            await worker.stop(timeout=10)
        for index, (task_id, result) in enumerate(zip(good, results[1:], strict=True), start=1):
            assert result is not None, f"task {index} never finished: {stored(path, task_id)}"
            assert result.status == "success" and queue.deserialize_result(result) == index + 1, result
            assert result.attempts == 1, "a good task of the bad row's batch runs once, not after a lost lease"
        failed = results[0]
        assert failed is not None, f"the bad row never ended: {stored(path, bad)}"
        assert failed.status == "failed", failed
        assert failed.error is not None and f"stored {column} is not" in failed.error, failed.error
        assert shown in failed.error, failed.error
        assert failed.attempts == 1, "it fails at its first claim, not after its lease expired three times"
        status, attempts, expiries, error = stored(path, bad)
        assert (status, attempts, expiries, error) == ("failed", 1, 0, failed.error)
        # the row reads back (with the error saying why), and so do the others
        listed = {task.id: task for task in await queue.list_tasks()}
        assert set(listed) == set(ids)
        assert listed[bad].status == TaskStatus.FAILED and f"stored {column} is not" in (listed[bad].error or "")
        assert all(listed[task_id].status == TaskStatus.SUCCESS for task_id in good)
        task = await queue.get_task(bad)
        assert task is not None and task.status == TaskStatus.FAILED and task.error == listed[bad].error


@pytest.mark.asyncio
async def test_reserve_hands_out_the_good_rows_of_a_batch_and_fails_the_bad_one_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "batch.db"
    good = [Task(id=new_id(), payload=b"ok") for _ in range(3)]
    bad = Task(id=new_id(), payload=b"spoiled")
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([bad, *good])
        spoil(path, bad.id, "payload = 'x'")
        leases = await backend.reserve(worker_id="w", limit=10, lease_seconds=30)
        assert [lease.id for lease in leases] == [task.id for task in good]
        result = await backend.get_result(bad.id)
        assert result is not None and result.status == "failed" and result.attempts == 1, result
        assert result.error is not None and "stored payload is not bytes: 'x' (text)" in result.error
        assert result.enqueued_at == bad.enqueued_at
        for lease in leases:
            assert await backend.complete(lease, b"done")
        assert await backend.reserve(worker_id="w", limit=10, lease_seconds=30) == []
        assert await backend.counts() == {"queued": 0, "running": 0, "success": 3, "failed": 1, "cancelled": 0}


@pytest.mark.asyncio
@pytest.mark.parametrize("lanes", [2, 70], ids=["lane by lane", "one pass over many lanes"])
async def test_a_text_priority_does_not_stop_every_claim(tmp_path: Path, lanes: int) -> None:
    """sorted() of the lanes' priorities raised TypeError: str < int, on every reserve, so nothing ran."""
    path = tmp_path / "priority.db"
    good = [Task(id=new_id(), payload=b"ok", queue=f"q{i}", priority=i) for i in range(lanes)]
    bad = Task(id=new_id(), payload=b"spoiled")
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([bad, *good])
        spoil(path, bad.id, "priority = 'high'")
        claimed: list[str] = []
        while leases := await backend.reserve(worker_id="w", limit=8, lease_seconds=30):
            claimed += [lease.id for lease in leases]
        assert sorted(claimed) == sorted(task.id for task in good)
        result = await backend.get_result(bad.id)
        assert result is not None and result.status == "failed", result
        assert result.error is not None and "stored priority is not an integer: 'high' (text)" in result.error


@pytest.mark.asyncio
async def test_reads_give_a_row_they_cannot_convert_with_an_error_saying_why(tmp_path: Path) -> None:
    """One bad row made list_tasks raise 'database disk image is malformed' for every page holding it."""
    path = tmp_path / "reads.db"
    first, bad, last = (Task(id=new_id(), payload=b"ok", timeout=2.5) for _ in range(3))
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([first, bad, last])
        spoil(path, bad.id, "payload = 'x', timeout = 'ten'")
        listed = await backend.list_tasks()
        assert [task.id for task in listed] == [first.id, bad.id, last.id], "no row is skipped: pages stay whole"
        assert listed[0] == await backend.get_task(first.id) and listed[0].payload == b"ok"
        marked = listed[1]
        assert marked == await backend.get_task(bad.id)
        assert marked.status == TaskStatus.QUEUED, "what can be read is kept"
        assert marked.payload == b"" and marked.timeout is None, "what cannot be read is left empty"
        assert marked.error is not None and marked.error.startswith("task row cannot be read: "), marked.error
        assert "stored payload is not bytes: 'x' (text)" in marked.error, marked.error
        assert "stored timeout is not a number: 'ten' (text)" in marked.error, marked.error


@pytest.mark.asyncio
async def test_get_result_of_a_result_row_it_cannot_convert_is_a_failure_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    task = Task(id=new_id(), payload=b"ok")
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(task)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert await backend.complete(lease, b"value")
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("UPDATE results SET value = 'x', enqueued_at = 'then' WHERE task_id = ?", (task.id,))
        result = await backend.get_result(task.id)
        assert result is not None
        assert result.status == "failed", "a success whose value cannot be read is not delivered as one"
        assert result.value is None and result.enqueued_at is None and result.finished_at is not None
        assert result.error is not None and "stored value is not bytes: 'x' (text)" in result.error, result.error
        assert "stored enqueued_at is not a time" in result.error, result.error


@pytest.mark.asyncio
async def test_next_eta_passes_over_a_due_that_is_not_a_time(tmp_path: Path) -> None:
    """An idle worker asks next_eta after each empty reserve: from_us('x') raised there, every time."""
    path = tmp_path / "due.db"
    later = Task(id=new_id(), payload=b"later", eta=datetime.now(UTC) + timedelta(hours=1))
    spoiled = Task(id=new_id(), payload=b"spoiled", queue="other", eta=later.eta)
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([later, spoiled])
        spoil(path, spoiled.id, "due = 'x'")
        assert await backend.next_eta() == later.eta
        assert await backend.next_eta(["other"]) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["lane by lane", "lane walk", "one pass"])
async def test_rows_of_odd_types_keep_the_index_order_on_every_claim_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A text or real priority, a NULL due at the head of its lane and a text due: every claim path hands out
    the good rows in the claim index's order (priority DESC, due, seq), and none stops on the odd ones."""
    import sitq_sqlite.claims as claims

    if path != "lane by lane":
        monkeypatch.setattr(claims, "_FIRST_LANES", 2)
        monkeypatch.setattr(claims, "_SCAN_ROWS_PER_LANE", 0 if path == "lane walk" else 10**9)
    dbfile = tmp_path / "odd.db"
    now = datetime.now(UTC)
    batch = [
        Task(id=new_id(), payload=b"ok", queue=f"q{i % 12:02}", priority=i % 3, eta=now - timedelta(minutes=i % 4))
        for i in range(36)
    ]
    async with SQLiteBackend(dbfile) as backend:
        await backend.enqueue_many(batch)
        text_priority, real_priority, no_due, text_due = batch[4].id, batch[8].id, batch[3].id, batch[5].id
        spoil(dbfile, text_priority, "priority = 'high'")
        spoil(dbfile, real_priority, "priority = 1.5")
        spoil(dbfile, no_due, "due = NULL")  # sorts first in its lane (q03, 0): its lane's other rows still come
        spoil(dbfile, text_due, "due = 'soon'")  # sorts after every number: never due
        with closing(sqlite3.connect(dbfile)) as conn:
            order = [
                row[0]
                for row in conn.execute(
                    "SELECT id FROM tasks WHERE status = 'queued' AND due <= ? ORDER BY priority DESC, due, seq",
                    (int(datetime.now(UTC).timestamp() * 1_000_000),),
                )
            ]
        assert order[0] == text_priority and no_due not in order and text_due not in order
        assert await backend.next_eta() == min(t.eta for t in batch if t.id not in (no_due, text_due))
        handed: list[str] = []
        for _ in range(20):
            handed += [lease.id for lease in await backend.reserve(worker_id="w", limit=5, lease_seconds=30)]
        assert handed == [task_id for task_id in order if task_id not in (text_priority, real_priority)]
        for task_id in (text_priority, real_priority):
            result = await backend.get_result(task_id)
            assert result is not None and result.status == "failed", result
        assert stored(dbfile, no_due)[0] == stored(dbfile, text_due)[0] == "queued"
