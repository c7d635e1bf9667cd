"""StatsContract: counts, list_tasks and purge."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ...backend import Backend
from ...models import Task, TaskStatus, new_id
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import enqueue_and_reserve, get, make_task, rejected

C = "StatsContract"
STATUSES = [s.value for s in TaskStatus]
PAGED = 100


async def one_of_each(backend: Backend, clock: FakeClock, queue: str = "default") -> dict[str, str]:
    """One task in every status; returns status -> task id."""
    ids: dict[str, str] = {}
    for status in ("success", "failed", "cancelled", "running"):
        clock.advance(0.001)
        lease = await enqueue_and_reserve(backend, clock, C, queue=queue)
        ids[status] = lease.id
        if status == "success":
            await backend.complete(lease, b"v")
        elif status == "failed":
            await backend.fail(lease, "boom")
        elif status == "cancelled":
            await backend.release(lease)
            await backend.cancel(lease.id)
    clock.advance(0.001)
    queued = make_task(clock, queue=queue)
    await backend.enqueue(queued)
    ids["queued"] = queued.id
    return ids


class StatsContract(BackendFixtures):
    """Backend.counts, Backend.list_tasks and Backend.purge."""

    @pytest.mark.asyncio
    async def test_counts_empty(self, backend: Backend) -> None:
        counts = await backend.counts()
        for status in STATUSES:
            assert counts.get(status) == 0, f"{C}: counts() must have every status as a key (0 when none): {counts}"

    @pytest.mark.asyncio
    async def test_counts_per_status_and_queue(self, backend: Backend, clock: FakeClock) -> None:
        await one_of_each(backend, clock, queue="a")
        await backend.enqueue(make_task(clock, queue="b"))
        counts = await backend.counts()
        expected = {s: 1 for s in STATUSES} | {"queued": 2}
        assert {s: counts.get(s) for s in STATUSES} == expected, f"{C}: counts() is wrong: {counts}"
        counts_a = await backend.counts(queue="a")
        assert {s: counts_a.get(s) for s in STATUSES} == {s: 1 for s in STATUSES}, (
            f"{C}: counts(queue='a') must count only queue 'a': {counts_a}"
        )
        counts_z = await backend.counts(queue="zzz")
        assert {s: counts_z.get(s) for s in STATUSES} == {s: 0 for s in STATUSES}, (
            f"{C}: counts(queue=...) of an empty queue must have every status as 0: {counts_z}"
        )

    @pytest.mark.asyncio
    async def test_list_tasks_filters(self, backend: Backend, clock: FakeClock) -> None:
        ids = await one_of_each(backend, clock, queue="a")
        other = make_task(clock, queue="b")
        await backend.enqueue(other)
        for status in STATUSES:
            listed = await backend.list_tasks(status=status)
            expected = [ids[status]] + ([other.id] if status == "queued" else [])
            # equal enqueued_at here: the order of ties is the backend's choice (order is tested below)
            assert sorted(t.id for t in listed) == sorted(expected), (
                f"{C}: list_tasks(status={status!r}) returned the wrong tasks"
            )
            assert all(isinstance(t, Task) for t in listed), f"{C}: list_tasks must return Task objects"
        assert [t.id for t in await backend.list_tasks(queue="b")] == [other.id], (
            f"{C}: list_tasks(queue='b') must filter by queue"
        )
        both = await backend.list_tasks(status="queued", queue="a")
        assert [t.id for t in both] == [ids["queued"]], f"{C}: list_tasks(status=, queue=) must apply both filters"

    @pytest.mark.asyncio
    async def test_list_tasks_order_and_paging(self, backend: Backend, clock: FakeClock) -> None:
        tasks = []
        for i in range(7):
            clock.advance(0.001)
            tasks.append(make_task(clock, priority=i % 3))
        await backend.enqueue_many(list(reversed(tasks[4:])))  # enqueued_at decides, not insertion order
        await backend.enqueue_many(tasks[:4])
        listed = [t.id for t in await backend.list_tasks()]
        assert listed == [t.id for t in tasks], f"{C}: list_tasks must list the oldest enqueued first"
        page = [t.id for t in await backend.list_tasks(limit=3, offset=2)]
        assert page == [t.id for t in tasks[2:5]], f"{C}: list_tasks(limit=3, offset=2) paged wrongly"
        assert await backend.list_tasks(limit=0) == [], f"{C}: list_tasks(limit=0) must return []"
        assert await backend.list_tasks(offset=7) == [], f"{C}: list_tasks past the end must return []"

    @pytest.mark.asyncio
    async def test_list_tasks_pages_ties_in_arrival_order(self, backend: Backend, clock: FakeClock) -> None:
        # TaskQueue.enqueue_many gives a whole batch one enqueued_at: paging must neither repeat nor skip
        # tasks sharing it (ids sort opposite to arrival, so a tie broken by id is caught too)
        ids = sorted((new_id() for _ in range(PAGED)), reverse=True)
        tasks = [make_task(clock, id=task_id) for task_id in ids]
        await backend.enqueue_many(tasks)
        paged: list[str] = []
        for offset in range(0, PAGED, 10):
            paged += [t.id for t in await backend.list_tasks(limit=10, offset=offset)]
        assert len(set(paged)) == PAGED, (
            f"{C}: paging list_tasks 10 at a time through {PAGED} tasks sharing one enqueued_at gave "
            f"{len(set(paged))} distinct tasks: ties need a stable order (arrival order)"
        )
        assert paged == ids, (
            f"{C}: list_tasks must list tasks sharing one enqueued_at in arrival order (an enqueue_many batch in "
            "list order)"
        )

    @pytest.mark.asyncio
    async def test_list_tasks_bad_arguments(self, backend: Backend, clock: FakeClock) -> None:
        await backend.enqueue(make_task(clock))
        for kwargs, parameter in (
            ({"status": "bogus"}, "status"),
            ({"limit": -1}, "limit"),
            ({"offset": -1}, "offset"),
        ):
            call = "list_tasks(" + ", ".join(f"{name}={value!r}" for name, value in kwargs.items()) + ")"
            await rejected(backend.list_tasks(**kwargs), C, call, parameter)

    @pytest.mark.asyncio
    async def test_purge_final_only(self, backend: Backend, clock: FakeClock) -> None:
        ids = await one_of_each(backend, clock)
        deleted = await backend.purge()
        assert deleted == 3, f"{C}: purge() must delete the 3 final tasks and return 3, returned {deleted}"
        for status in ("success", "failed", "cancelled"):
            assert await backend.get_task(ids[status]) is None, f"{C}: purge() kept a {status} task"
            assert await backend.get_result(ids[status]) is None, f"{C}: purge() kept a {status} task's result"
        for status in ("queued", "running"):
            assert (await get(backend, ids[status], C)).status == status, (
                f"{C}: purge() must never delete {status} tasks"
            )
        assert await backend.purge() == 0, f"{C}: a second purge() must delete nothing"

    @pytest.mark.asyncio
    async def test_purge_older_than(self, backend: Backend, clock: FakeClock) -> None:
        old = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(old, b"old")
        clock.advance(3600)
        cutoff = clock.now()
        clock.advance(1)
        new = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(new, b"new")
        assert await backend.purge(older_than=cutoff) == 1, f"{C}: purge(older_than=) must delete only older ones"
        assert await backend.get_task(old.id) is None, f"{C}: purge(older_than=) kept a task finished before it"
        assert await backend.get_task(new.id) is not None, f"{C}: purge(older_than=) deleted a newer task"
        later = await backend.purge(older_than=clock.now() + timedelta(seconds=1))
        assert later == 1, f"{C}: purge(older_than=future) must delete the remaining final task"

    @pytest.mark.asyncio
    async def test_purge_judges_finished_at_not_enqueued_at(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        clock.advance(3600)  # it waited an hour in the queue, then ran
        [lease] = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert await backend.complete(lease, b"v"), f"{C}: complete with the current lease must be True"
        cutoff = task.enqueued_at + timedelta(minutes=30)  # after it was enqueued, before it finished
        deleted = await backend.purge(older_than=cutoff)
        assert deleted == 0 and await backend.get_task(task.id) is not None, (
            f"{C}: purge(older_than=t) deletes tasks *finished* before t; it deleted a task enqueued before t "
            f"but finished after it (it judged enqueued_at, not finished_at)"
        )
        assert await backend.purge(older_than=clock.now() + timedelta(seconds=1)) == 1, (
            f"{C}: purge(older_than=) must delete a task finished before it"
        )

    @pytest.mark.asyncio
    async def test_purge_keeps_a_task_finished_exactly_at_the_cutoff(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(lease, b"v")
        finished = (await get(backend, lease.id, C)).finished_at
        assert finished is not None, (
            f"{C}: a finished task must carry finished_at (purge(older_than=) judges it); get_task returned "
            "finished_at=None after complete"
        )
        assert await backend.purge(older_than=finished) == 0, (
            f"{C}: purge(older_than=t) deletes tasks finished *before* t; it deleted one finished exactly at t"
        )
        assert await backend.get_task(lease.id) is not None, f"{C}: purge(older_than=t) deleted a task finished at t"

    @pytest.mark.asyncio
    async def test_purge_naive_datetime(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(lease, b"v")
        await rejected(
            backend.purge(older_than=datetime(2100, 1, 1)), C, "purge(older_than=<a naive datetime>)", "older_than"
        )
        assert await backend.get_task(lease.id) is not None, f"{C}: a rejected purge deleted a task"
