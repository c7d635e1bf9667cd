"""PostgreSQL: a queued task that carries a cancel request (left by older sitq) ends cancelled, unrun.

As on SQLite (tests/sqlite/test_upgrade_cancel_flag.py): sitq before its
cancel rule, or an old worker still running during a rolling deploy, queued a
task again with ``cancel_requested`` set; ``cancel()`` had answered True, so
the claim ends it ``cancelled`` instead of handing it out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import SyncTaskQueue, TaskQueue, Worker
from sitq_core.errors import TaskCancelledError
from sitq_core.models import TaskStatus
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks

# What sitq did before the rule, as SQL on the store: the retry and the give-back (release) of a running task,
# whatever its cancel_requested said.
OLD_RETRY = (
    "UPDATE {}.tasks SET status = 'queued', due = eta, error = 'boom', lease_token = NULL "
    "WHERE id = $1 AND status = 'running'"
)
OLD_RELEASE = (
    "UPDATE {}.tasks SET status = 'queued', due = eta, lease_token = NULL, attempts = greatest(attempts - 1, 0), "
    "started_at = CASE WHEN attempts <= 1 THEN NULL ELSE started_at END, "
    "worker_id = CASE WHEN attempts <= 1 THEN NULL ELSE worker_id END WHERE id = $1 AND status = 'running'"
)
FLAG = "UPDATE {}.tasks SET cancel_requested = true WHERE id = $1 AND status = 'queued'"


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["retried after its cancel", "given back after its cancel", "flag set on a queued row"])
async def test_a_queued_task_with_a_cancel_request_ends_cancelled_without_running(
    pg_dsn: str, pg_schema: str, tmp_path: Path, how: str
) -> None:
    marker = tmp_path / "ran"
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        task_id = await queue.with_options(max_retries=3, retry_backoff=0).enqueue(tasks.record, str(marker), 1)
        if how != "flag set on a queued row":
            [lease] = await queue.backend.reserve(worker_id="old-worker", limit=1, lease_seconds=60)
            assert lease.id == task_id
            assert await queue.cancel(task_id) is True  # the cancel is accepted while it runs
        statement = {"retried after its cancel": OLD_RETRY, "given back after its cancel": OLD_RELEASE}.get(how, FLAG)
        db = await asyncpg.connect(pg_dsn)
        try:
            assert await db.execute(statement.format(pg_schema), task_id) == "UPDATE 1"
        finally:
            await db.close()
        before = await queue.get_task(task_id)
        assert before is not None and before.status == TaskStatus.QUEUED and before.cancel_requested
        worker = Worker(PostgresBackend(pg_dsn, schema=pg_schema), poll_interval=0.05)
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
    raised = await asyncio.to_thread(_sync_get_result, pg_dsn, pg_schema, task_id)
    assert isinstance(raised, TaskCancelledError) and raised.task_id == task_id, raised


def _sync_get_result(dsn: str, schema: str, task_id: str) -> BaseException | None:
    """What ``SyncTaskQueue.get_result`` raises for the task (it returns nothing for a cancelled one)."""
    with SyncTaskQueue(PostgresBackend(dsn, schema=schema)) as queue:
        try:
            queue.get_result(task_id, timeout=0)
        except TaskCancelledError as exc:
            return exc
    return None
