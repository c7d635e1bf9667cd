"""Results waiting to be stored are bounded in bytes (``limits._MAX_PENDING_RESULT_BYTES``), not only in count.

A task's slot is freed as soon as it returns, before its result is stored.
When storing is slower than running (big results, a store held by a lock
elsewhere), results piled up in the worker with no byte limit: 200 results of
5 MB took a ``-c 8`` worker to 1.7 GB. Now the worker starts no task while the
results it holds exceed the budget, and one result larger than the budget
still goes through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core._worker import limits
from sitq_core.models import Outcome

from sitq_test_helpers import SQLiteWriteLock, wait_until

SIZE = 1 << 20
BUDGET = 4 << 20

# the tasks below run in this process and record here (they are shipped by reference to this module)
STARTS: list[int] = []
HOLD = threading.Event()


def held_big(size: int, key: int) -> bytes:
    """Starts, then waits for the test to open ``HOLD`` (bounded: a failing test must not hang)."""
    STARTS.append(key)
    HOLD.wait(30)
    return b"h" * size


def big(size: int, key: int) -> bytes:
    STARTS.append(key)
    return b"b" * size


async def abig(size: int, key: int) -> bytes:
    STARTS.append(key)
    return b"a" * size


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    STARTS.clear()
    HOLD.clear()
    yield
    HOLD.set()


def _record_reports(backend: SQLiteBackend) -> list[int]:
    """Wrap the backend's reporting calls; the list gets the value bytes each call carried."""
    sent: list[int] = []
    finish_many, finish_and_reserve = backend.finish_many, backend.finish_and_reserve

    def weigh(outcomes: list[Outcome]) -> None:
        sent.append(sum(len(o.value) for o in outcomes if o.value is not None))

    async def recorded_finish_many(outcomes: list[Outcome]) -> list[bool]:
        weigh(outcomes)
        return await finish_many(outcomes)

    async def recorded_finish_and_reserve(outcomes: list[Outcome], **kwargs: Any) -> Any:
        weigh(outcomes)
        return await finish_and_reserve(outcomes, **kwargs)

    backend.finish_many = recorded_finish_many  # type: ignore[method-assign]
    backend.finish_and_reserve = recorded_finish_and_reserve  # type: ignore[method-assign]
    return sent


@pytest.mark.asyncio
@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("func", [big, abig], ids=["sync", "async"])
async def test_a_store_slower_than_the_tasks_stops_new_starts_at_the_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, concurrency: int, func: Any
) -> None:
    monkeypatch.setattr(limits, "_MAX_PENDING_RESULT_BYTES", BUDGET, raising=False)
    path = tmp_path / "backlog.db"
    backend = SQLiteBackend(path, busy_timeout=60)  # the lock below never outlasts it
    count = 20
    async with TaskQueue(backend) as queue:
        sent = _record_reports(backend)
        worker = Worker(backend, max_concurrency=concurrency, prefetch=50)
        await worker.start()
        try:
            # both functions loaded (so they wait in line in order) and results of SIZE seen: sync batches are
            # sized by the results seen (a cold start is not)
            HOLD.set()
            for task_id in await queue.enqueue_many([(held_big, (SIZE, -3)), (func, (SIZE, -2))]):
                warm = await queue.get_result(task_id, timeout=30)
                assert warm is not None and warm.status == "success"
            HOLD.clear()
            calls = [(held_big, (SIZE, -1)), *[(func, (SIZE, key)) for key in range(count)]]
            ids = await queue.enqueue_many(calls)  # one transaction, reserved at once (prefetch): held here
            await wait_until(lambda: asyncio.sleep(0, -1 in STARTS and len(worker._held) == count + 1))
            lock = SQLiteWriteLock(path)
            try:
                before = len(STARTS)
                HOLD.set()
                # no task runs any more: the next start waits for results to be stored
                await wait_until(lambda: asyncio.sleep(0, worker._executing == 0))
                started = len(STARTS) - before
                assert started <= BUDGET // SIZE + concurrency
                assert worker._waiting  # held back, not lost
            finally:
                lock.release()
            results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
        finally:
            await worker.stop()
    assert [r.status if r is not None else None for r in results] == ["success"] * (count + 1)
    assert sorted(STARTS) == list(range(-3, count))  # each ran once
    # one transaction carries at most about the budget (it stops taking outcomes once it holds that much)
    assert max(sent) < BUDGET + 2 * SIZE
    assert worker._pending_bytes == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("func", [big, abig], ids=["sync", "async"])
async def test_results_larger_than_the_budget_still_go_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, func: Any
) -> None:
    monkeypatch.setattr(limits, "_MAX_PENDING_RESULT_BYTES", SIZE // 4, raising=False)
    backend = SQLiteBackend(tmp_path / "large.db")
    async with TaskQueue(backend) as queue:
        ids = await queue.enqueue_many([(func, (SIZE, key)) for key in range(6)])
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        try:
            results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
        finally:
            await worker.stop()
    assert [r.status if r is not None else None for r in results] == ["success"] * 6
    assert all(r is not None and r.value is not None and len(r.value) > SIZE for r in results)


@pytest.mark.asyncio
async def test_a_count_gone_wrong_cannot_stall_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count is recomputed from what is really waiting before it holds a task back."""
    monkeypatch.setattr(limits, "_MAX_PENDING_RESULT_BYTES", BUDGET, raising=False)
    backend = SQLiteBackend(tmp_path / "drift.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        try:
            worker._pending_bytes = 10 * BUDGET  # as if decrements had been missed
            ids = await queue.enqueue_many([(big, (SIZE, key)) for key in range(8)])
            results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
        finally:
            await worker.stop()
    assert [r.status if r is not None else None for r in results] == ["success"] * 8
    assert worker._pending_bytes == 0
