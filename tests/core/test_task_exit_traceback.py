"""A task calling ``sys.exit()`` fails; its stored traceback ends with the ``SystemExit`` it raised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, TaskQueue, Worker

import sitq_test_tasks as tasks


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "exit.db")) as q:
        yield q


@pytest.mark.asyncio
@pytest.mark.parametrize("batched", [True, False])
async def test_the_stored_traceback_ends_with_system_exit_not_a_private_class(queue: TaskQueue, batched: bool) -> None:
    """It ended ``sitq_core.thread_batch.TaskExit: the task called sys.exit(3)``: a class users cannot import."""
    calls = [(tasks.exits, (3,), {}), (tasks.async_exits, (4,), {})]
    if batched:
        ids = await queue.enqueue_many(calls)
    else:
        ids = [await queue.enqueue_call(func, args) for func, args, _kwargs in calls]
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10 if batched else 0)
    await worker.start()
    try:
        results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    finally:
        await worker.stop()
    for result, code in zip(results, (3, 4), strict=True):
        assert result is not None and result.status == "failed", result
        assert result.error == f"the task called sys.exit({code})"
        assert result.traceback is not None
        assert result.traceback.rstrip().splitlines()[-1] == f"SystemExit: {code}", result.traceback
        assert "TaskExit" not in result.traceback and "sitq_core" not in result.traceback.splitlines()[-1]
        assert "in exits" in result.traceback or "in async_exits" in result.traceback  # the task's own frame
