"""Sync tasks share one pool thread in batches; a batch must still behave as separate tasks.

A task waiting in a batch has not started: stopping the worker gives it
back (it never runs here), and a cancel request keeps it from starting.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

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
    tasks.GATE_REACHED.clear()
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


async def batch_worker(queue: TaskQueue, ids: list[str], **options: Any) -> Worker:
    """A one-slot worker that reserves all of ``ids`` at once (so one thread batch holds them), started."""
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10, **options)
    await worker.start()
    await wait_until(lambda: _all_status(queue, ids, TaskStatus.RUNNING))
    return worker


async def gate_reached() -> bool:
    return tasks.GATE_REACHED.is_set()


async def statuses(queue: TaskQueue, ids: list[str]) -> list[TaskStatus]:
    found = [await queue.get_task(task_id) for task_id in ids]
    return [task.status for task in found if task is not None]


def pool_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("sitq-task")}


def pool_threads_ended(before: set[threading.Thread]) -> Callable[[], Awaitable[bool]]:
    """A predicate: every task thread started since ``before`` was taken has ended.

    Threads an earlier test left running (a hung call it timed out, still in
    its sleep on a loaded machine) are not this test's worker's: waiting for
    every task thread of the process made a test wait, and fail, for them.
    """

    async def ended() -> bool:
        return not pool_threads() - before

    return ended


@pytest.mark.asyncio
async def test_stop_gives_back_tasks_waiting_in_a_batch(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)
    worker = await batch_worker(queue, [gate_id, *record_ids])
    # the batch started, not only claimed in the store: a stop before the claim's answer reached the
    # worker gives back every task of it, the gate's too
    await wait_until(lambda: asyncio.to_thread(tasks.GATE_REACHED.is_set))
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
    before = pool_threads()
    worker = await batch_worker(queue, [gate_id, *record_ids])
    # the gate runs in the batch's thread (not only claimed): the stop's timeout abandons that thread mid-batch
    await wait_until(gate_reached)
    await worker.stop(timeout=0.2)
    assert await statuses(queue, [gate_id, *record_ids]) == [TaskStatus.QUEUED] * (RECORDS + 1)
    tasks.GATE.set()  # the abandoned thread finishes its call ...
    await wait_until(pool_threads_ended(before))  # ... and its batch (this worker's threads, not an earlier test's)
    assert not log.exists(), "tasks given back at shutdown ran in the abandoned thread"  # ... and starts no other


@pytest.mark.asyncio
async def test_cancel_keeps_a_task_waiting_in_a_batch_from_running(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)
    worker = await batch_worker(queue, [gate_id, *record_ids], lease_timeout=0.3)  # heartbeats every 0.1 s
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


@pytest.mark.asyncio
async def test_members_that_returned_are_reported_not_given_back_at_the_stop_timeout(
    queue: TaskQueue, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    ids = await queue.enqueue_many(
        [(tasks.record, (str(log), 0), {}), (tasks.record, (str(log), 1), {}), (tasks.wait_for_gate, (30.0,), {})]
    )
    before = pool_threads()
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)
    await worker.start()

    async def two_ran() -> bool:
        return log.exists() and log.read_text().count("end") == 2

    await wait_until(two_ran)
    await worker.stop(timeout=0.3)
    assert await statuses(queue, ids) == [TaskStatus.SUCCESS, TaskStatus.SUCCESS, TaskStatus.QUEUED]
    tasks.GATE.set()
    await wait_until(pool_threads_ended(before))
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 2, "a task that had returned must not be released to run again"


@pytest.mark.asyncio
async def test_members_that_returned_are_reported_while_a_later_member_still_runs(
    queue: TaskQueue, tmp_path: Path
) -> None:
    """A finished task's result is not held back until a slow (or hung) task later in its batch returns."""
    log = tmp_path / "ran.log"
    ids = await queue.enqueue_many(
        [(tasks.record, (str(log), n), {}) for n in range(RECORDS)] + [(tasks.wait_for_gate, (30.0,), {})]
    )
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)  # one reserve, one thread batch, gate last
    await worker.start()
    try:
        for task_id in ids[:-1]:
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None and result.status == "success", "held back behind the blocked member"
        assert tasks.GATE_REACHED.is_set() and not tasks.GATE.is_set()
        assert await statuses(queue, ids[-1:]) == [TaskStatus.RUNNING]
    finally:
        tasks.GATE.set()
        await worker.stop()
    gate = await queue.get_result(ids[-1], timeout=10)
    assert gate is not None and queue.deserialize_result(gate) == "through"


def count_heartbeats(queue: TaskQueue) -> list[int]:
    """Count the backend's heartbeat calls (they carry cancel requests); the count is the list's one item."""
    beats = [0]
    original = queue.backend.heartbeat

    async def counted(*args: Any, **kwargs: Any) -> Any:
        beats[0] += 1
        return await original(*args, **kwargs)

    queue.backend.heartbeat = counted  # type: ignore[method-assign]
    return beats


@pytest.mark.asyncio
async def test_a_cancel_arriving_after_a_member_returned_keeps_its_real_outcome(
    queue: TaskQueue, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    first, _gate = await queue.enqueue_many([(tasks.record, (str(log), 0), {}), (tasks.wait_for_gate, (30.0,), {})])
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10, lease_timeout=0.3)  # heartbeats every 0.1 s
    beats = count_heartbeats(queue)
    await worker.start()

    async def first_ran() -> bool:
        return log.exists() and "end 0" in log.read_text()

    await wait_until(first_ran)
    # its outcome may not be in the store yet (reported within ms of its return, while the batch runs on):
    # a request that still finds it 'running' must not turn the outcome it had into 'cancelled'
    await queue.cancel(first)
    seen = beats[0]

    async def heartbeats_carried_the_request() -> bool:
        return beats[0] >= seen + 2

    await wait_until(heartbeats_carried_the_request)
    tasks.GATE.set()
    result = await queue.get_result(first, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "success", "the task had finished before the cancel"


@pytest.mark.asyncio
@pytest.mark.parametrize("odd", [tasks.returns_failing_awaitable, tasks.returns_cancelling_awaitable])
async def test_a_failing_awaitable_in_a_batch_fails_only_its_task(queue: TaskQueue, odd: Any) -> None:
    ids = await queue.enqueue_many([(odd, (), {}), (tasks.add, (1, 2), {}), (tasks.add, (3, 4), {})])
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    await asyncio.wait_for(worker.stop(timeout=5), 10)
    assert [r.status if r else None for r in results] == ["failed", "success", "success"]
    assert results[0] is not None and results[0].error
    assert (await queue.counts())["running"] == 0


@pytest.mark.asyncio
async def test_coroutines_sync_wrappers_returned_in_a_batch_are_cancelled_as_async_tasks(queue: TaskQueue) -> None:
    """A batch awaits on the loop, one after another, the coroutines its members' sync calls returned: a cancel
    of the one awaited, or of one still to come, ended neither (they had returned, so kept their outcome)."""
    ids = await queue.enqueue_many(
        [(tasks.naive_sleepy, (4,), {}), (tasks.naive_sleepy, (4,), {}), (tasks.add, (1, 2), {})]
    )
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10, lease_timeout=0.3)  # heartbeats every 0.1 s
    await worker.start()
    try:
        added = await queue.get_result(ids[2], timeout=10)  # the batch's thread is done: the coroutines remain
        assert added is not None and added.status == "success"
        asked = time.monotonic()
        assert await queue.cancel(ids[1]) is True  # still to be awaited
        assert await queue.cancel(ids[0]) is True  # awaited now
        results = [await queue.get_result(task_id, timeout=10) for task_id in ids[:2]]
        took = time.monotonic() - asked
    finally:
        await asyncio.wait_for(worker.stop(timeout=5), 10)
    assert [r.status if r else None for r in results] == ["cancelled", "cancelled"]
    assert took < 3, f"cancelled only after {took:.2f} s: they ran to their end"
    assert (await queue.counts())["running"] == 0


@pytest.mark.asyncio
async def test_a_batch_goes_on_after_a_cancelled_coroutine(queue: TaskQueue) -> None:
    """The cancel of one member's coroutine must not reach the next one's await (the batch task is uncancelled)."""
    ids = await queue.enqueue_many([(tasks.naive_sleepy, (4,), {}), (tasks.naive_sleepy, (0.3,), {})])
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10, lease_timeout=0.3)
    await worker.start()
    try:
        await wait_until(lambda: _all_status(queue, ids, TaskStatus.RUNNING))
        await asyncio.sleep(0.1)
        assert await queue.cancel(ids[0]) is True
        results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    finally:
        await asyncio.wait_for(worker.stop(timeout=5), 10)
    assert [r.status if r else None for r in results] == ["cancelled", "success"]


@pytest.mark.asyncio
@pytest.mark.parametrize("batched", [True, False])
async def test_a_task_calling_sys_exit_fails_and_the_worker_goes_on(queue: TaskQueue, batched: bool) -> None:
    calls = [(tasks.exits, (3,), {}), (tasks.async_exits, (4,), {}), (tasks.add, (1, 2), {})]
    if batched:
        ids = await queue.enqueue_many(calls)
    else:
        ids = [await queue.enqueue_call(func, args) for func, args, _kwargs in calls]
    worker = Worker(queue.backend, max_concurrency=1, prefetch=10 if batched else 0)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    await worker.stop()
    assert [r.status if r else None for r in results] == ["failed", "failed", "success"]
    assert "sys.exit(3)" in (results[0].error or "") and "sys.exit(4)" in (results[1].error or "")  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_prefetched_tasks_go_back_to_an_idle_worker_when_a_slow_one_holds_the_slot(
    queue: TaskQueue, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    hoarder = Worker(queue.backend, max_concurrency=1)  # adaptive prefetch
    await hoarder.start()
    warm = await queue.enqueue_many([(tasks.add, (n,), {}) for n in range(30)])  # teaches it: tasks are fast
    for task_id in warm:
        await queue.get_result(task_id, timeout=10)
    ids = await queue.enqueue_many(
        [(tasks.wait_for_gate, (30.0,), {})] + [(tasks.record, (str(log), n), {}) for n in range(20)]
    )
    await wait_until(lambda: _all_status(queue, ids, TaskStatus.RUNNING))  # all reserved by the hoarder
    helper = Worker(queue.backend, max_concurrency=1)
    await helper.start()
    try:
        for task_id in ids[1:]:  # they finish while the first task still holds the hoarder's only slot
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None and result.status == "success"
        assert not tasks.GATE.is_set()
    finally:
        tasks.GATE.set()
        await helper.stop()
        await hoarder.stop()
    assert sorted(int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("start")) == list(
        range(20)
    )


@pytest.mark.asyncio
async def test_a_cancelled_sync_task_alone_reports_when_its_thread_returns(queue: TaskQueue) -> None:
    task_id = await queue.enqueue(tasks.wait_for_gate, 30.0)
    worker = Worker(queue.backend, max_concurrency=1, lease_timeout=0.3)  # heartbeats every 0.1 s
    beats = count_heartbeats(queue)
    await worker.start()
    await wait_until(lambda: _all_status(queue, [task_id], TaskStatus.RUNNING))
    assert await queue.cancel(task_id)
    seen = beats[0]

    async def heartbeats_carried_the_request() -> bool:
        return beats[0] >= seen + 2

    await wait_until(heartbeats_carried_the_request)
    # the thread cannot be interrupted: nothing is reported, and the slot stays taken, until it returns
    assert await queue.get_result(task_id, timeout=0) is None
    next_id = await queue.enqueue(tasks.add, 1)
    assert await queue.get_result(next_id, timeout=0.3) is None
    tasks.GATE.set()
    result = await queue.get_result(task_id, timeout=10)
    assert result is not None and result.status == "cancelled"
    done = await queue.get_result(next_id, timeout=10)
    assert done is not None and done.status == "success"
    await worker.stop()


@pytest.mark.asyncio
async def test_tasks_behind_a_slow_one_in_its_batch_start_in_free_slots(queue: TaskQueue, tmp_path: Path) -> None:
    """Prefetched sync tasks batched behind a slow one move to slots that free up, not wait for it."""
    log = tmp_path / "ran.log"
    gate_id, record_ids = await gate_then_records(queue, log)  # 6 tasks: 3 slots share them two by two
    worker = Worker(queue.backend, max_concurrency=3, prefetch=6)
    await worker.start()
    try:
        for task_id in record_ids:  # the first one shares the gate's batch; all end while the gate is shut
            result = await queue.get_result(task_id, timeout=5)
            assert result is not None and result.status == "success", "waited behind the slow task"
        assert tasks.GATE_REACHED.is_set() and not tasks.GATE.is_set()
        assert await statuses(queue, [gate_id]) == [TaskStatus.RUNNING]
    finally:
        tasks.GATE.set()
        await worker.stop()
    gate = await queue.get_result(gate_id, timeout=10)
    assert gate is not None and gate.status == "success"
    assert sorted(int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("start")) == list(
        range(RECORDS)
    )
