"""A queued task that carries a cancel request (left by sitq before its cancel rule) ends cancelled, unrun.

Before the rule that a retry or release of a task whose cancel was requested
ends it ``cancelled``, a worker queued such a task again with
``cancel_requested`` still set; an old worker still running during a rolling
deploy keeps doing so. ``cancel()`` had answered True, so the task must end
``cancelled`` without running: the claim ends it instead of handing it out.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, Worker
from sitq_core.errors import TaskCancelledError
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks

# What sitq did before the rule, as SQL on the store: the retry and the give-back (release) of a running task,
# whatever its cancel_requested said.
OLD_RETRY = (
    "UPDATE tasks SET status = 'queued', due = eta, error = 'boom', lease_token = NULL "
    "WHERE id = ? AND status = 'running'"
)
OLD_RELEASE = (
    "UPDATE tasks SET status = 'queued', due = eta, lease_token = NULL, attempts = max(attempts - 1, 0), "
    "started_at = CASE WHEN attempts <= 1 THEN NULL ELSE started_at END, "
    "worker_id = CASE WHEN attempts <= 1 THEN NULL ELSE worker_id END WHERE id = ? AND status = 'running'"
)


async def _leave_old_state(queue: TaskQueue, path: Path, how: str, marker: Path) -> str:
    """A queued task row with cancel_requested = 1, as old code left it (``how``); returns its id."""
    task_id = await queue.with_options(max_retries=3, retry_backoff=0).enqueue(tasks.record, str(marker), 1)
    if how != "flag set on a queued row":
        [lease] = await queue.backend.reserve(worker_id="old-worker", limit=1, lease_seconds=60)
        assert lease.id == task_id
        assert await queue.cancel(task_id) is True  # the cancel is accepted while it runs
    with sqlite3.connect(path) as db:
        if how == "retried after its cancel":
            assert db.execute(OLD_RETRY, (task_id,)).rowcount == 1
        elif how == "given back after its cancel":
            assert db.execute(OLD_RELEASE, (task_id,)).rowcount == 1
        else:
            assert db.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task_id,)).rowcount == 1
    db.close()
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status == TaskStatus.QUEUED and stored.cancel_requested
    return task_id


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["retried after its cancel", "given back after its cancel", "flag set on a queued row"])
async def test_a_queued_task_with_a_cancel_request_ends_cancelled_without_running(tmp_path: Path, how: str) -> None:
    path = tmp_path / "upgraded.db"
    marker = tmp_path / "ran"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        task_id = await _leave_old_state(queue, path, how, marker)
        before = await queue.get_task(task_id)
        assert before is not None
        worker = Worker(SQLiteBackend(path), poll_interval=0.05)
        await worker.start()
        try:
            result = await queue.get_result(task_id, timeout=10)
        finally:
            await worker.stop()
        stored = await queue.get_task(task_id)
    assert not marker.exists(), "the task ran after its cancel was accepted"
    assert result is not None and (result.status, result.error, result.value) == ("cancelled", "cancelled", None)
    assert stored is not None and stored.status == TaskStatus.CANCELLED and stored.error == "cancelled"
    assert stored.attempts == before.attempts == result.attempts, "a run that did not happen was counted"
    assert stored.finished_at is not None and result.finished_at == stored.finished_at
    raised = await asyncio.to_thread(_sync_get_result, path, task_id)
    assert isinstance(raised, TaskCancelledError) and raised.task_id == task_id, raised


def _sync_get_result(path: Path, task_id: str) -> BaseException | None:
    """What ``SyncTaskQueue.get_result`` raises for the task (it returns nothing for a cancelled one)."""
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        try:
            queue.get_result(task_id, timeout=0)
        except TaskCancelledError as exc:
            return exc
    return None


@pytest.mark.asyncio
async def test_it_ends_cancelled_as_a_cancel_of_a_queued_task_does(tmp_path: Path) -> None:
    """The same result row as ``cancel()`` of a queued task stores, and no other task is held back."""
    path = tmp_path / "upgraded.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        flagged = await _leave_old_state(queue, path, "flag set on a queued row", tmp_path / "ran")
        cancelled = await queue.enqueue(tasks.add, 1)
        assert await queue.cancel(cancelled) is True
        runs = await queue.enqueue(tasks.add, 2, 3)
        assert [r.id for r in await queue.backend.reserve(worker_id="new", limit=5, lease_seconds=30)] == [runs]
        ours, theirs = await queue.get_result(flagged, timeout=0), await queue.get_result(cancelled, timeout=0)
    assert ours is not None and theirs is not None
    shape = ("status", "value", "error", "traceback", "attempts")
    assert {k: getattr(ours, k) for k in shape} == {k: getattr(theirs, k) for k in shape}
