"""``current_task()``: the task the calling code runs in (Celery's request.id, RQ's get_current_job)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq import CurrentTask, SQLiteBackend, TaskQueue, Worker, current_task


def described() -> dict[str, Any]:
    """What a library deep inside a task sees, without the id being passed down."""
    task = current_task()
    assert task is not None
    return {"id": task.id, "attempt": task.attempt, "queue": task.queue, "function": task.function_name}


async def async_task() -> dict[str, Any]:
    await asyncio.sleep(0)
    return described()


def sync_task() -> dict[str, Any]:
    return described()


def fails_once_then_describes(marker: str) -> dict[str, Any]:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return described()


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "current.db")) as q:
        yield q


async def run_all(queue: TaskQueue, ids: list[str], **worker_options: Any) -> list[dict[str, Any]]:
    """Run the tasks on a worker of their own and return what each one saw."""
    worker = Worker(queue.backend, **worker_options)
    await worker.start()
    try:
        return await results(queue, ids)
    finally:
        await worker.stop()


async def results(queue: TaskQueue, ids: list[str]) -> list[dict[str, Any]]:
    values = []
    for task_id in ids:
        result = await queue.get_result(task_id, timeout=15)
        assert result is not None and result.status == "success", result
        values.append(queue.deserialize_result(result))
    return values


def test_outside_a_worker_there_is_no_current_task() -> None:
    assert current_task() is None


@pytest.mark.asyncio
@pytest.mark.parametrize("func", [async_task, sync_task], ids=["async", "sync"])
async def test_a_task_sees_its_own_id_attempt_queue_and_function(queue: TaskQueue, func: Any) -> None:
    task_id = await queue.with_options(queue_name="mail").enqueue(func)
    worker = Worker(queue.backend, queues=["mail"])
    await worker.start()
    try:
        [seen] = await results(queue, [task_id])
    finally:
        await worker.stop()
    assert seen == {"id": task_id, "attempt": 1, "queue": "mail", "function": f"{__name__}:{func.__name__}"}
    assert current_task() is None, "the worker's own context is left as it was"


@pytest.mark.asyncio
async def test_sync_tasks_sharing_a_thread_each_see_their_own(queue: TaskQueue) -> None:
    ids = await queue.enqueue_many([sync_task] * 20)  # one reservation: they run in shared thread hops
    seen = await run_all(queue, ids, max_concurrency=2)
    assert [item["id"] for item in seen] == ids


@pytest.mark.asyncio
async def test_a_timed_task_and_a_retry_see_theirs(queue: TaskQueue, tmp_path: Path) -> None:
    timed = await queue.with_options(timeout=10).enqueue(sync_task)
    retried = await queue.with_options(max_retries=1, retry_backoff=0.01).enqueue(
        fails_once_then_describes, str(tmp_path / "marker")
    )
    worker = Worker(queue.backend)
    await worker.start()
    try:
        timed_seen, retried_seen = await results(queue, [timed, retried])
    finally:
        await worker.stop()
    assert timed_seen["id"] == timed
    assert (retried_seen["id"], retried_seen["attempt"]) == (retried, 2)


def test_current_task_is_a_frozen_record() -> None:
    task = CurrentTask(id="t", attempt=1, queue="default", function_name="m:f", worker_id="w")
    with pytest.raises(AttributeError):
        task.id = "other"  # type: ignore[misc]


def returns_an_awaitable() -> Any:
    async def later() -> dict[str, Any]:
        return described()

    return later()


@pytest.mark.asyncio
async def test_an_awaitable_returned_by_a_sync_task_in_a_shared_thread_sees_its_own_task(queue: TaskQueue) -> None:
    ids = await queue.enqueue_many([returns_an_awaitable] * 6)
    seen = await run_all(queue, ids, max_concurrency=1)
    assert [item["id"] for item in seen] == ids


@pytest.mark.asyncio
async def test_start_observers_see_the_task_that_starts(queue: TaskQueue) -> None:
    from sitq import hookimpl
    from sitq_core.plugins import get_plugin_manager

    seen: list[tuple[str, str | None]] = []

    class Observer:
        @hookimpl
        def sitq_task_started(self, task: Any, attempt: int, worker_id: str) -> None:
            current = current_task()
            seen.append((task.id, None if current is None else current.id))

    get_plugin_manager().register_plugin(Observer(), "current-observer")
    try:
        ids = [await queue.enqueue(async_task) for _ in range(4)]
        worker = Worker(queue.backend, max_concurrency=2)
        await worker.start()
        try:
            await results(queue, ids)
        finally:
            await worker.stop()
    finally:
        get_plugin_manager().unregister_plugin("current-observer")
    assert sorted(seen) == sorted((task_id, task_id) for task_id in ids)
