"""TaskQueue.requeue_many and SyncTaskQueue.requeue_many: many tasks run again in one call to the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, ValidationError, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as q:
        yield q


async def failed(queue: TaskQueue, count: int) -> list[str]:
    """``count`` tasks that failed for real, run by a worker."""
    ids = await queue.with_options(max_retries=0).enqueue_many([tasks.boom] * count)
    worker = Worker(queue.backend, max_concurrency=4)
    await worker.start()
    try:
        for task_id in ids:
            result = await queue.get_result(task_id, timeout=30)
            assert result is not None and result.status == "failed"
    finally:
        await worker.stop()
    return ids


@pytest.mark.asyncio
async def test_requeue_many_answers_per_id_and_the_tasks_run_again(queue: TaskQueue) -> None:
    first, second = await failed(queue, 2)
    done = await queue.enqueue(tasks.add, 1, 2)
    worker = Worker(queue.backend)
    await worker.start()
    try:
        assert await queue.get_result(done, timeout=30) is not None
        assert await queue.requeue_many([first, done, "no-such-task", second, first]) == [
            True,
            False,
            False,
            True,
            False,
        ]
        for task_id in (first, second):  # the idle worker is woken and runs them again (they fail again)
            result = await queue.get_result(task_id, timeout=30)
            assert result is not None and result.attempts == 1
    finally:
        await worker.stop()
    assert (await queue.counts())["failed"] == 2


@pytest.mark.asyncio
async def test_a_past_eta_means_now_and_a_later_one_is_kept(queue: TaskQueue) -> None:
    early, late = await failed(queue, 2)
    before = datetime.now(UTC)
    assert await queue.requeue_many([early], eta=datetime(2000, 1, 1, tzinfo=UTC)) == [True]
    stored = await queue.get_task(early)
    assert stored is not None
    assert stored.eta >= before - timedelta(seconds=1), stored.eta
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await queue.requeue_many([late], eta=later) == [True]
    stored = await queue.get_task(late)
    assert stored is not None and stored.status is TaskStatus.QUEUED and stored.eta == later


@pytest.mark.asyncio
async def test_bad_ids_are_refused_before_any_is_requeued(queue: TaskQueue) -> None:
    (task_id,) = await failed(queue, 1)
    for bad in ([task_id, "   "], [task_id, ""], task_id, [task_id, None], {task_id}):
        with pytest.raises(ValidationError) as info:
            await queue.requeue_many(cast(Any, bad))
        assert info.value.parameter == "task_ids", bad
    with pytest.raises(ValidationError) as info:
        await queue.requeue_many([task_id], eta=datetime(2030, 1, 1))
    assert info.value.parameter == "eta"
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status is TaskStatus.FAILED
    assert await queue.requeue_many([]) == []


def test_the_sync_queue_requeues_many(tmp_path: Path) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        task_id = queue.with_options(max_retries=0).enqueue(tasks.boom)
        waiting = queue.enqueue(tasks.add, 1, 2)
        assert queue.cancel(waiting)
        assert queue.requeue_many([task_id, waiting]) == [False, True]  # the first never ran: it is queued
        with pytest.raises(ValidationError):
            queue.requeue_many(task_id)


@pytest.mark.asyncio
async def test_the_default_requeue_many_gives_every_id_the_same_instant(tmp_path: Path) -> None:
    """Backend.requeue_many (not overridden: dictstore) promises one due time for every id of a call."""
    from sitq_dictstore import DictStoreBackend

    backend = DictStoreBackend(store=tmp_path.name)
    assert "requeue_many" not in vars(DictStoreBackend)
    async with TaskQueue(backend) as dict_queue:
        ids = await failed(dict_queue, 5)
        assert await backend.requeue_many(ids) == [True] * 5
        stored = [await backend.get_task(task_id) for task_id in ids]
    etas = {task.eta for task in stored if task is not None and task.status == TaskStatus.QUEUED}
    assert len(etas) == 1, etas
