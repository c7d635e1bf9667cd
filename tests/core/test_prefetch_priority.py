"""Which task a worker starts next, among the tasks it holds: the store's order, on SQLite and PostgreSQL.

Tasks reserved ahead (prefetch) waited in first-in first-out order: a
high-priority task reserved later started only after every lower one the
worker held already, ran last of 30 with two workers. The worker now starts
what it holds by priority (higher first), then due time, then arrival, as
``Backend.reserve`` hands tasks out; with sync tasks that includes the ones
batched on a thread and not started yet.
"""

from __future__ import annotations

import asyncio
import decimal
import fractions
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

import sitq
from sitq import TaskQueue, ValidationError, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


async def async_record(path: str, n: int) -> int:
    """Append 'start n' to a file (an async task: it runs on the loop, never in a thread batch)."""
    await asyncio.to_thread(tasks._append, path, f"start {n}\n")
    return n


HOLDS = {0: threading.Event(), 9: threading.Event()}  # opened by the test: async_hold(.., n) returns
BATCH_HEAD = threading.Event()  # opened by the test: sync_hold returns


async def async_hold(path: str, n: int) -> int:
    """Append 'start n', then hold a slot until ``HOLDS[n]`` opens (an async task: never batched)."""
    await asyncio.to_thread(tasks._append, path, f"start {n}\n")
    await asyncio.to_thread(HOLDS[n].wait, 30)
    return n


def sync_hold(path: str, n: int) -> int:
    """Append 'start n', then block its thread (and the batch behind it) until ``BATCH_HEAD`` opens."""
    tasks._append(path, f"start {n}\n")
    BATCH_HEAD.wait(30)
    return n


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real store: a SQLite file, or a throw-away schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'order.db'}"
        return
    require_postgres()
    schema = f"prefetch_order_{uuid.uuid4().hex[:8]}"
    yield f"{DSN}?schema={schema}"
    drop_schema(schema)


def started(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("start")]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.asyncio
async def test_a_higher_priority_task_reserved_later_starts_before_the_prefetched_lower_ones(
    store_url: str, tmp_path: Path, gate: None, kind: str
) -> None:
    log = tmp_path / "ran.log"
    low_task = tasks.record if kind == "sync" else async_record
    async with TaskQueue(store_url) as queue:
        blocker = await queue.enqueue(tasks.record_then_wait_for_gate, str(log), 0)  # holds the only slot
        lows = [await queue.enqueue(low_task, str(log), n) for n in range(1, 6)]
        worker = Worker(queue.backend, max_concurrency=1, prefetch=50)
        await worker.start()
        try:

            async def reserved(task_id: str) -> bool:
                task = await queue.get_task(task_id)
                return task is not None and task.status == TaskStatus.RUNNING

            async def low_ones_prefetched() -> bool:
                return started(log) == [0] if log.exists() else False

            await wait_until(low_ones_prefetched)
            for task_id in lows:
                await wait_until(lambda task_id=task_id: reserved(task_id))  # held by the worker, not started
            high = await queue.with_options(priority=100).enqueue(low_task, str(log), 100)

            async def high_one_waits_here() -> bool:  # reserved, and taken in (in line for the slot)
                return any(running.id == high for running in worker._waiting)

            await wait_until(high_one_waits_here)
            tasks.GATE.set()
            results = [await queue.get_result(task_id, timeout=20) for task_id in [blocker, *lows, high]]
        finally:
            await worker.stop()
    assert all(r is not None and r.status == "success" for r in results), results
    assert started(log) == [0, 100, 1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_a_free_slot_starts_the_batched_higher_tasks_before_a_lower_waiting_one(
    store_url: str, tmp_path: Path
) -> None:
    """Sync tasks batched behind a blocked one come out of their batch when another slot frees for a lower task.

    Seen in a soak (-c 8, --prefetch 20, mixed priorities): a task handed to
    a thread started up to 16 s after lower ones reserved later, which other
    slots started meanwhile.
    """
    log = tmp_path / "ran.log"
    for event in [*HOLDS.values(), BATCH_HEAD]:
        event.clear()
    try:
        async with TaskQueue(store_url) as queue:
            holders = [await queue.with_options(priority=10).enqueue(async_hold, str(log), n) for n in (0, 9)]
            head = await queue.with_options(priority=5).enqueue(sync_hold, str(log), 1)  # blocks its batch
            batched = [await queue.with_options(priority=5).enqueue(tasks.record, str(log), n) for n in (2, 3, 4)]
            worker = Worker(queue.backend, max_concurrency=2, prefetch=50)
            await worker.start()
            try:
                ids = {head, *batched}

                async def held(task_ids: set[str]) -> bool:
                    return task_ids <= {running.id for running in worker._waiting}

                await wait_until(lambda: held(ids))
                HOLDS[9].set()  # slot 2 frees: the four priority-5 tasks go to one thread batch

                async def batched_behind_head() -> bool:
                    return sorted(started(log)) == [0, 1, 9] and any(
                        {member.id for member in members} == ids for members in worker._batches.values()
                    )

                await wait_until(batched_behind_head)
                low = await queue.enqueue(tasks.record, str(log), 100)  # priority 0, reserved later
                await wait_until(lambda: held({low}))
                HOLDS[0].set()  # slot 1 frees: the batched priority-5 tasks not started go first

                async def three_more_started() -> bool:
                    return len(started(log)) >= 6

                await wait_until(three_more_started)
                BATCH_HEAD.set()
                results = [await queue.get_result(task_id, timeout=20) for task_id in [*holders, head, *batched, low]]
            finally:
                await worker.stop()
    finally:
        for event in [*HOLDS.values(), BATCH_HEAD]:
            event.set()
    assert all(r is not None and r.status == "success" for r in results), results
    assert started(log)[2:] == [1, 2, 3, 4, 100]


@pytest.mark.asyncio
async def test_equal_priorities_keep_arrival_order_across_reserves(store_url: str, tmp_path: Path, gate: None) -> None:
    """Tasks of one priority reserved in two batches start in arrival order: the later batch goes behind."""
    log = tmp_path / "ran.log"
    async with TaskQueue(store_url) as queue:
        blocker = await queue.enqueue(tasks.record_then_wait_for_gate, str(log), 0)
        first = [await queue.enqueue(async_record, str(log), n) for n in range(1, 4)]
        worker = Worker(queue.backend, max_concurrency=1, prefetch=50)
        await worker.start()
        try:

            async def held(task_ids: list[str]) -> bool:
                waiting = {running.id for running in worker._waiting}
                return all(task_id in waiting for task_id in task_ids)

            await wait_until(lambda: held(first))
            later = [await queue.enqueue(async_record, str(log), n) for n in range(4, 7)]
            await wait_until(lambda: held(later))
            tasks.GATE.set()
            results = [await queue.get_result(task_id, timeout=20) for task_id in [blocker, *first, *later]]
        finally:
            await worker.stop()
    assert all(r is not None and r.status == "success" for r in results), results
    assert started(log) == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]], ids=["a-first", "b-first"])
@pytest.mark.asyncio
async def test_the_order_of_a_workers_queues_list_does_not_matter(
    store_url: str, tmp_path: Path, order: list[str]
) -> None:
    """``Worker(queues=[...])`` merges its queues into one order (priority, due time, arrival): no round-robin."""
    log = tmp_path / "ran.log"
    async with TaskQueue(store_url) as queue:
        ids = [await queue.with_options(queue_name="a").enqueue(tasks.record, str(log), n) for n in (1, 2)]
        ids += [await queue.with_options(queue_name="b").enqueue(tasks.record, str(log), n) for n in (3, 4)]
        ids += [await queue.with_options(queue_name="a").enqueue(tasks.record, str(log), 5)]
        ids += [await queue.with_options(queue_name="b", priority=1).enqueue(tasks.record, str(log), 6)]
        worker = Worker(queue.backend, max_concurrency=1, prefetch=0, queues=order)
        await worker.start()
        try:
            results = [await queue.get_result(task_id, timeout=20) for task_id in ids]
        finally:
            await worker.stop()
    assert all(r is not None and r.status == "success" for r in results), results
    assert started(log) == [6, 1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_priority_takes_any_64_bit_int_and_refuses_other_types(store_url: str) -> None:
    """What api.md's limits list says: an int from -2**63 to 2**63-1; None leaves the default 0."""
    async with TaskQueue(store_url) as queue:
        for priority in (-(2**63), 2**63 - 1, None):
            task_id = await queue.with_options(priority=priority).enqueue(tasks.add, 1)
            task = await queue.get_task(task_id)
            assert task is not None and task.priority == (0 if priority is None else priority)
        for bad in (True, 1.0, decimal.Decimal(1), fractions.Fraction(1), "1", 2**63, -(2**63) - 1):
            with pytest.raises(ValidationError) as info:
                queue.with_options(priority=bad)  # type: ignore[arg-type]
            assert info.value.parameter == "priority"
            with pytest.raises(ValidationError):
                sitq.task(priority=bad)  # type: ignore[arg-type]
        assert (await queue.counts())["queued"] == 3  # nothing refused was stored
