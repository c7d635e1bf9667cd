"""Sync tasks share one pool thread in batches; a batch must still behave as separate tasks.

A task waiting in a batch has not started: stopping the worker gives it
back (it never runs here), and a cancel request keeps it from starting.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

RECORDS = 5


@pytest.fixture(autouse=True)
def closed_gate() -> Iterator[None]:
    tasks.GATE.clear()
    yield
    tasks.GATE.set()  # never leave a pool thread blocked


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "batches.db")) as q:
        yield q


async def gate_then_records(queue: TaskQueue, log: Path) -> tuple[str, list[str]]:
    """A blocking task followed by quick ones, reserved together so one thread batch holds them all."""
    ids = await queue.enqueue_many(
        [(tasks.wait_for_gate, (30.0,), {})] + [(tasks.record, (str(log), n), {}) for n in range(RECORDS)]
    )
    return ids[0], ids[1:]


async def statuses(queue: TaskQueue, ids: list[str]) -> list[TaskStatus]:
    found = [await queue.get_task(task_id) for task_id in ids]
    return [task.status for task in found if task is not None]


def pool_threads_alive() -> bool:
    return any(thread.name.startswith("sitq-task") for thread in threading.enumerate())


async def no_pool_threads() -> bool:
    return not pool_threads_alive()


@pytest.mark.asyncio
async def test_stop_gives_back_tasks_waiting_in_a_batch(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)
    await worker.start()
    await wait_until(lambda: _all_status(queue, [gate_id, *record_ids], TaskStatus.RUNNING))
    stopping = asyncio.create_task(worker.stop())

    async def records_queued() -> bool:
        return await _all_status(queue, record_ids, TaskStatus.QUEUED)

    await wait_until(records_queued)  # given back while the first task still runs
    tasks.GATE.set()
    await asyncio.wait_for(stopping, timeout=15)
    gate = await queue.get_result(gate_id, timeout=5)
    assert gate is not None and queue.deserialize_result(gate) == "through"
    assert not log.exists(), "a task given back at stop() ran anyway"
    for task_id in record_ids:
        task = await queue.get_task(task_id)
        assert task is not None and task.status == TaskStatus.QUEUED and task.attempts == 0


@pytest.mark.asyncio
async def test_stop_timeout_does_not_run_given_back_tasks_later(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)
    await worker.start()
    await wait_until(lambda: _all_status(queue, [gate_id, *record_ids], TaskStatus.RUNNING))
    await worker.stop(timeout=0.2)
    assert await statuses(queue, [gate_id, *record_ids]) == [TaskStatus.QUEUED] * (RECORDS + 1)
    tasks.GATE.set()  # the abandoned thread finishes its call ...
    await wait_until(no_pool_threads)
    assert not log.exists(), "tasks given back at shutdown ran in the abandoned thread"  # ... and starts no other


@pytest.mark.asyncio
async def test_cancel_keeps_a_task_waiting_in_a_batch_from_running(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10, lease_timeout=0.3)  # heartbeats every 0.1 s
    await worker.start()
    await wait_until(lambda: _all_status(queue, [gate_id, *record_ids], TaskStatus.RUNNING))
    victim = record_ids[2]
    assert await queue.cancel(victim)
    result = await queue.get_result(victim, timeout=10)  # reported while the batch is still blocked
    assert result is not None and result.status == "cancelled"
    assert not log.exists()
    tasks.GATE.set()
    for task_id in record_ids:
        if task_id != victim:
            done = await queue.get_result(task_id, timeout=10)
            assert done is not None and done.status == "success"
    await worker.stop()
    ran = sorted(int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("start"))
    assert ran == [0, 1, 3, 4]


@pytest.mark.asyncio
async def test_batched_tasks_get_their_own_start_times(queue: TaskQueue) -> None:
    ids = await queue.enqueue_many([(tasks.sync_sleepy, (0.05,), {}) for _ in range(4)])
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    await worker.stop()
    starts = [r.started_at for r in results if r is not None and r.started_at is not None]
    assert len(starts) == 4
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= 0.04 for gap in gaps), gaps


async def _all_status(queue: TaskQueue, ids: list[str], status: TaskStatus) -> bool:
    return await statuses(queue, ids) == [status] * len(ids)
