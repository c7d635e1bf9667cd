"""A worker that gives prefetched tasks back while it runs retries when the store is locked for a while.

Before, a give-back that failed (a lock held past ``busy_timeout``) was logged and dropped: the tasks
showed ``running`` while nobody ran them, until their leases expired, and then counted a lease
expiry (an attempt) they never used. Only a stop may leave a failed give-back to lease expiry.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import SQLiteWriteLock, wait_until


@pytest.mark.asyncio
async def test_a_give_back_that_meets_a_long_lock_is_retried_not_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sitq.worker")
    path = tmp_path / "give-back.db"
    marks = tmp_path / "marks.txt"
    gate = "give-back-first"
    tasks.LOOP_GATES[gate] = asyncio.Event()
    tasks.LOOP_GATES[gate + "/late"] = asyncio.Event()
    backend = SQLiteBackend(path, busy_timeout=0.2)  # the lock below outlasts it
    try:
        async with TaskQueue(backend) as queue:
            first = await queue.enqueue(tasks.ends_at_gate, str(marks), gate)
            others = await queue.enqueue_many([(tasks.add, (n, 1)) for n in range(3)])
            worker = Worker(backend, max_concurrency=1, prefetch=3, shutdown_timeout=5)
            await worker.start()
            try:
                await wait_until(lambda: asyncio.sleep(0, len(worker._waiting) == 3))
                lock = SQLiteWriteLock(path)
                try:
                    giving = asyncio.create_task(worker._give_back(3))
                    await wait_until(
                        lambda: asyncio.sleep(0, any("retrying" in r.getMessage() for r in caplog.records))
                    )
                finally:
                    lock.release()
                await asyncio.wait_for(giving, 30)
                stored = [await queue.get_task(task_id) for task_id in others]
                assert [(t.status, t.attempts, t.lease_expiries) for t in stored if t is not None] == [
                    (TaskStatus.QUEUED, 0, 0)
                ] * 3
                tasks.LOOP_GATES[gate].set()
                for task_id in [first, *others]:
                    result = await queue.get_result(task_id, timeout=30)
                    assert result is not None and result.status == "success"
            finally:
                tasks.LOOP_GATES[gate].set()
                await worker.stop()
    finally:
        tasks.LOOP_GATES.pop(gate).set()
        tasks.LOOP_GATES.pop(gate + "/late").set()
    assert not [r for r in caplog.records if "their leases expire" in r.getMessage()]
