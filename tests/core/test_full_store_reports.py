"""Reports a full store refuses (``StoreFullError``): a large result is replaced by the task failing, saying why.

The real thing (a tmpfs filled up) is tests/sqlite/test_full_disk_results.py;
here a real SQLite store refuses the reports that carry more than ``room``
bytes, as a full disk does, to reach the paths a real disk makes hard to time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.errors import StoreFullError
from sitq_core.models import Outcome, Task, new_id
from sitq_core.worker import _Running

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


class NoRoom(SQLiteBackend):
    """A real SQLite store whose disk has ``room`` bytes left for the values of one report (None: room enough)."""

    room: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[list[Outcome]] = []  # every report, refused or not

    def _fits(self, outcomes: Any) -> None:
        self.sent.append(list(outcomes))
        if self.room is not None and sum(len(o.value or b"") for o in outcomes) > self.room:
            raise StoreFullError(
                "SQLite finish failed: database or disk is full (simulated)",
                operation="finish",
                backend_type="sqlite",
                cause=OSError("database or disk is full"),
            )

    async def finish_many(self, outcomes: Any) -> Any:
        self._fits(outcomes)
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self._fits(outcomes)
        return await super().finish_and_reserve(outcomes, **kwargs)


_NO_ROOM = (
    "the task's result of {:,} bytes could not be stored: the disk holding the store is full (database or disk is full)"
)


@pytest.mark.asyncio
async def test_only_the_large_result_is_replaced_and_the_others_in_its_report_are_stored(tmp_path: Path) -> None:
    store = NoRoom(tmp_path / "room.db")
    store.room = 50_000
    async with TaskQueue(store) as queue:
        big = await queue.enqueue(tasks.echo, b"x" * 100_000)
        small = [await queue.enqueue(tasks.echo, b"y" * 1000) for _ in range(20)]
        worker = Worker(store, max_concurrency=8)
        await worker.start()
        try:
            result = await queue.get_result(big, timeout=20)
            others = [await queue.get_result(task_id, timeout=20) for task_id in small]
        finally:
            await worker.stop()
    size = len(queue.serializer.dumps(b"x" * 100_000))
    assert result is not None and result.status == "failed" and result.attempts == 1, result
    assert result.error == _NO_ROOM.format(size) and result.traceback is None, result
    assert [r.status if r else None for r in others] == ["success"] * 20
    assert [r.value for r in others if r] == [queue.serializer.dumps(b"y" * 1000)] * 20


@pytest.mark.asyncio
async def test_a_small_result_on_a_full_store_is_reported_again_not_replaced(tmp_path: Path) -> None:
    """Its failure would take as much room as it does: it waits for room, as any report the store fails."""
    store = NoRoom(tmp_path / "small.db")
    store.room = -1  # nothing fits, not even an empty report
    async with TaskQueue(store) as queue:
        task_id = await queue.enqueue(tasks.echo, b"z" * 1000)
        worker = Worker(store, poll_interval=0.05)
        await worker.start()
        try:

            async def refused_twice() -> bool:
                return sum(1 for sent in store.sent if any(o.task_id == task_id for o in sent)) >= 2

            await wait_until(refused_twice)
            store.room = None  # room again
            result = await queue.get_result(task_id, timeout=20)
        finally:
            await worker.stop()
    assert result is not None and result.status == "success" and result.attempts == 1, result
    reports = [o for sent in store.sent for o in sent if o.task_id == task_id]
    assert {o.kind for o in reports} == {"success"}, reports


@pytest.mark.asyncio
async def test_when_even_the_failure_finds_no_room_the_result_itself_is_reported_again_and_stored(
    tmp_path: Path,
) -> None:
    """A failure refused for want of room says the disk is full for every write, not too full for this result:
    the result is reported again (as any report the store fails) and stored once there is room, not the failure.
    """
    store = NoRoom(tmp_path / "none.db")
    store.room = -1
    async with TaskQueue(store) as queue:
        task_id = await queue.enqueue(tasks.echo, b"x" * 100_000)
        worker = Worker(store, poll_interval=0.05)
        await worker.start()
        try:

            async def reported_four_times() -> bool:
                return sum(1 for sent in store.sent if any(o.task_id == task_id for o in sent)) >= 4

            await wait_until(reported_four_times)
            store.room = None
            result = await queue.get_result(task_id, timeout=20)
        finally:
            await worker.stop()
    reports = [o for sent in store.sent for o in sent if o.task_id == task_id]
    assert [o.kind for o in reports[:4]] == ["success", "failed", "success", "success"], reports
    assert all(o.kind == "success" for o in reports[2:]), "the failure is tried once, then the result again"
    assert result is not None and result.status == "success" and result.attempts == 1, result
    assert result.value == queue.serializer.dumps(b"x" * 100_000)


@pytest.mark.asyncio
async def test_the_last_report_as_the_loop_ends_replaces_a_result_a_full_store_has_no_room_for(
    tmp_path: Path,
) -> None:
    store = NoRoom(tmp_path / "last.db")
    async with store:
        await store.enqueue_many([Task(id=new_id(), payload=b"x", max_retries=1) for _ in range(2)])
        big, small = await store.reserve(worker_id="w", limit=2, lease_seconds=30)
        store.room = 50_000
        live = [
            (_Running(big), Outcome(big.id, big.lease_token, "success", value=b"v" * 100_000), {}),
            (_Running(small), Outcome(small.id, small.lease_token, "success", value=b"ok"), {}),
        ]
        reported, accepted = await Worker(store)._final_finish(live)
        assert accepted == [True, True] and [item[1].kind for item in reported] == ["retry", "success"]
        again = await store.get_task(big.id)
        assert again is not None and again.status.value == "queued", "a retry is left: it runs again"
        assert again.error == _NO_ROOM.format(100_000) and again.lease_expiries == 0, again
        small_result = await store.get_result(small.id)
        assert small_result is not None and small_result.value == b"ok"
