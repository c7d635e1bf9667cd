"""Outcome hooks get the task as the outcome leaves it, not the snapshot taken when it was reserved.

The snapshot said ``running`` with no ``finished_at`` and no error, while a
task the store ended for too many lease expiries came with its stored final
state. Every outcome hook now gets the task as the store has it once the
outcome is taken: status, ``finished_at``, error and attempts; a retry's
``queued`` with its ``eta`` at the retry time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq import TaskQueue, Worker, hookimpl
from sitq_core.models import Task, TaskStatus
from sitq_core.plugins import get_plugin_manager

import sitq_test_tasks as tasks
from sitq_test_helpers import store_of_kind, wait_until


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Task, dict[str, Any]]] = []

    @hookimpl
    def sitq_task_succeeded(self, task: Task, result: Any, duration: float) -> None:
        self.seen.append(("succeeded", task, {"result": result}))

    @hookimpl
    def sitq_task_failed(self, task: Task, error: Any, will_retry: bool) -> None:
        self.seen.append(("failed", task, {"will_retry": will_retry}))

    @hookimpl
    def sitq_task_retried(self, task: Task, attempt: int, eta: Any) -> None:
        self.seen.append(("retried", task, {"attempt": attempt, "eta": eta}))

    @hookimpl
    def sitq_task_cancelled(self, task: Task, duration: float) -> None:
        self.seen.append(("cancelled", task, {}))

    def of(self, hook: str, task_id: str) -> list[tuple[Task, dict[str, Any]]]:
        return [(task, extra) for name, task, extra in self.seen if name == hook and task.id == task_id]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    plugin = Recorder()
    manager = get_plugin_manager()
    manager.register_plugin(plugin, "outcome-recorder")
    yield plugin
    manager.unregister_plugin("outcome-recorder")


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with store_of_kind(request.param, tmp_path) as backend, TaskQueue(backend) as q:
        yield q


async def _worked(queue: TaskQueue, task_id: str) -> Task:
    """Run a worker until ``task_id`` is final; the task as stored then."""
    worker = Worker(queue.backend, max_concurrency=1, poll_interval=0.05)
    await worker.start()
    try:
        assert await queue.get_result(task_id, timeout=20) is not None
    finally:
        await worker.stop()
    stored = await queue.get_task(task_id)
    assert stored is not None
    return stored


def _as_stored(hooked: Task, stored: Task) -> None:
    """What the hook got says what the store says about the task's end."""
    got = (hooked.status, hooked.finished_at, hooked.error, hooked.attempts)
    assert got == (stored.status, stored.finished_at, stored.error, stored.attempts)


@pytest.mark.asyncio
async def test_succeeded_gets_the_task_as_it_ended(queue: TaskQueue, recorder: Recorder) -> None:
    task_id = await queue.enqueue(tasks.add, 2, 3)
    stored = await _worked(queue, task_id)
    ((hooked, extra),) = recorder.of("succeeded", task_id)
    assert hooked.status == TaskStatus.SUCCESS and hooked.finished_at is not None and hooked.error is None
    assert hooked.finished_at == extra["result"].finished_at and hooked.attempts == 1
    _as_stored(hooked, stored)


@pytest.mark.asyncio
async def test_failed_gets_the_task_as_it_ended(queue: TaskQueue, recorder: Recorder) -> None:
    task_id = await queue.enqueue(tasks.boom, "kaput")
    stored = await _worked(queue, task_id)
    ((hooked, extra),) = recorder.of("failed", task_id)
    assert extra["will_retry"] is False
    assert hooked.status == TaskStatus.FAILED and hooked.finished_at is not None and hooked.error == stored.error
    _as_stored(hooked, stored)


@pytest.mark.asyncio
async def test_a_retry_gets_the_task_queued_again_for_its_retry_time(queue: TaskQueue, recorder: Recorder) -> None:
    task_id = await queue.with_options(max_retries=1, retry_backoff=0.01).enqueue(tasks.boom, "again")
    stored = await _worked(queue, task_id)
    ((retried, extra),) = recorder.of("retried", task_id)
    assert retried.status == TaskStatus.QUEUED and retried.eta == extra["eta"] == stored.eta and extra["attempt"] == 1
    assert retried.attempts == 1 and retried.error == stored.error and retried.finished_at is None
    (first, last) = recorder.of("failed", task_id)
    assert first[1]["will_retry"] is True and first[0] == retried  # one and the same picture of the task
    assert last[1]["will_retry"] is False and last[0].attempts == 2
    _as_stored(last[0], stored)


@pytest.mark.asyncio
async def test_cancelled_gets_the_task_as_it_ended(queue: TaskQueue, recorder: Recorder) -> None:
    task_id = await queue.enqueue(tasks.sleepy, 30.0)  # async: the cancel request interrupts it
    worker = Worker(queue.backend, max_concurrency=1, poll_interval=0.05, lease_timeout=0.6)
    await worker.start()
    try:

        async def running() -> bool:
            task = await queue.get_task(task_id)
            return task is not None and task.status == TaskStatus.RUNNING

        await wait_until(running)
        assert await queue.cancel(task_id)
        assert await queue.get_result(task_id, timeout=20) is not None
    finally:
        await worker.stop()
    stored = await queue.get_task(task_id)
    assert stored is not None
    ((hooked, _extra),) = recorder.of("cancelled", task_id)
    assert hooked.status == TaskStatus.CANCELLED and hooked.finished_at is not None and hooked.error == "cancelled"
    _as_stored(hooked, stored)
