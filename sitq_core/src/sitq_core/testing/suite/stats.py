"""StatsContract: counts, list_tasks and purge."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ...backend import Backend
from ...models import Task, TaskStatus, new_id
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import (
    enqueue_and_reserve,
    get,
    is_aware_utc,
    make_task,
    rejected,
    reserve_exactly,
    reserve_one,
    stored_hint,
    unstored,
)

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


async def pages_through(backend: Backend, expected: Sequence[str], limit: int, **filters: Any) -> None:
    """``list_tasks(**filters)`` paged ``limit`` at a time gives ``expected`` (oldest first), no repeats or skips.

    limit/offset apply to the filtered tasks: a backend that pages first and filters after returns short or
    empty pages as soon as the first tasks of the store do not match.
    """
    call = ", ".join(f"{name}={value!r}" for name, value in filters.items())
    everything = [t.id for t in await backend.list_tasks(**filters)]
    if everything != list(expected):
        pytest.fail(
            f"{C}: list_tasks({call}) must list the matching tasks oldest enqueued first (ties in arrival order): "
            f"expected {list(expected)}, got {everything}{await stored_hint(backend, expected)}"
        )
    paged: list[str] = []
    for offset in range(0, len(expected) + limit, limit):
        page = [t.id for t in await backend.list_tasks(**filters, limit=limit, offset=offset)]
        assert page == list(expected[offset : offset + limit]), (
            f"{C}: list_tasks({call}, limit={limit}, offset={offset}) must apply limit/offset to the tasks that "
            f"match the filter (filter first, then page): expected {list(expected[offset : offset + limit])}, "
            f"got {page}"
        )
        paged += page
    assert paged == list(expected), (
        f"{C}: paging list_tasks({call}) {limit} at a time must give every matching task once: "
        f"expected {list(expected)}, got {paged}"
    )


def naive_or_other_zone(task: Task) -> dict[str, object]:
    """The datetime fields of ``task`` that are not aware UTC (None, a time not yet set, is fine)."""
    return {
        f.name: value
        for f in dataclasses.fields(task)
        if isinstance(value := getattr(task, f.name), datetime) and not is_aware_utc(value)
    }


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
        if listed != [t.id for t in tasks]:
            pytest.fail(f"{C}: list_tasks must list the oldest enqueued first{await stored_hint(backend, tasks)}")
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
        if len(set(paged)) != PAGED:
            why = await unstored(backend, tasks)
            pytest.fail(
                f"{C}: paging list_tasks 10 at a time through {PAGED} tasks sharing one enqueued_at gave "
                f"{len(set(paged))} distinct tasks: " + (why or "ties need a stable order (arrival order)")
            )
        assert paged == ids, (
            f"{C}: list_tasks must list tasks sharing one enqueued_at in arrival order (an enqueue_many batch in "
            "list order)"
        )

    @pytest.mark.asyncio
    async def test_list_tasks_pages_a_queue_filter(self, backend: Backend, clock: FakeClock) -> None:
        # queue 'b' only starts after four tasks of queue 'a'; the last eight tasks are one batch sharing one
        # enqueued_at (ids sorting opposite to arrival), so ties inside a filtered page are checked too
        spread = []
        for queue in "aaaababb":
            clock.advance(0.001)
            spread.append(make_task(clock, queue=queue))
        clock.advance(0.001)
        batch_ids = sorted((new_id() for _ in range(8)), reverse=True)
        batch = [make_task(clock, id=task_id, queue=q) for task_id, q in zip(batch_ids, "abbababa", strict=True)]
        await backend.enqueue_many(list(reversed(spread)))  # enqueued_at decides, not insertion order
        await backend.enqueue_many(batch)
        tasks = spread + batch
        for queue in ("b", "a"):
            await pages_through(backend, [t.id for t in tasks if t.queue == queue], 3, queue=queue)
        assert await backend.list_tasks(queue="zzz", limit=3) == [], f"{C}: list_tasks of an empty queue must be []"

    @pytest.mark.asyncio
    async def test_list_tasks_pages_a_status_filter(self, backend: Backend, clock: FakeClock) -> None:
        # the four oldest tasks succeed: the queued ones only start after them
        tasks = []
        for queue in "abababababab":
            clock.advance(0.001)
            tasks.append(make_task(clock, queue=queue))
        await backend.enqueue_many(tasks)
        clock.advance(0.001)
        leases = {lease.id: lease for lease in await reserve_exactly(backend, C, tasks)}
        assert sorted(leases) == sorted(t.id for t in tasks), f"{C}: reserve must hand out all 12 due tasks"
        status: dict[str, str] = {}
        for i, task in enumerate(tasks):
            if i in (0, 1, 2, 3, 6, 9):
                assert await backend.complete(leases[task.id], b"v"), f"{C}: complete with the lease must be True"
                status[task.id] = "success"
            elif i == 7:
                assert await backend.fail(leases[task.id], "boom"), f"{C}: fail with the lease must be True"
                status[task.id] = "failed"
            else:
                assert await backend.release(leases[task.id]), f"{C}: release with the lease must be True"
                status[task.id] = "queued"
        for wanted in ("queued", "success"):
            matching = [t.id for t in tasks if status[t.id] == wanted]
            await pages_through(backend, matching, 2, status=wanted)
            for queue in ("a", "b"):
                both = [t.id for t in tasks if status[t.id] == wanted and t.queue == queue]
                await pages_through(backend, both, 2, status=wanted, queue=queue)
        assert await backend.list_tasks(status="running", limit=2) == [], (
            f"{C}: list_tasks(status='running') must be [] when no task runs"
        )

    @pytest.mark.asyncio
    async def test_list_tasks_and_get_task_times_are_aware_utc(self, backend: Backend, clock: FakeClock) -> None:
        ids = await one_of_each(backend, clock)
        east = timezone(timedelta(hours=5, minutes=30))
        clock.advance(0.001)
        eastern = make_task(clock, eta=(clock.now() + timedelta(hours=1)).astimezone(east))
        await backend.enqueue(eastern.with_changes(enqueued_at=clock.now().astimezone(east)))
        ids["queued in +05:30"] = eastern.id
        where = {task_id: status for status, task_id in ids.items()}
        views: list[tuple[str, Task]] = [("list_tasks()", t) for t in await backend.list_tasks()]
        for status in STATUSES:
            views += [(f"list_tasks(status={status!r})", t) for t in await backend.list_tasks(status=status)]
        views += [("get_task", await get(backend, task_id, C)) for task_id in ids.values()]
        listed = {task.id for call, task in views if call == "list_tasks()"}
        assert listed == set(ids.values()), f"{C}: list_tasks() must list all {len(ids)} tasks, got {len(listed)}"
        for call, task in views:
            wrong = naive_or_other_zone(task)
            assert not wrong, (
                f"{C}: every datetime on a Task must be timezone-aware UTC; {call} returned the "
                f"{where.get(task.id, repr(task.id))} task with {', '.join(f'{n}={v!r}' for n, v in wrong.items())}"
            )
        finished = await get(backend, ids["success"], C)
        assert finished.started_at is not None and finished.finished_at is not None, (
            f"{C}: a finished task must carry started_at and finished_at, got {finished.started_at!r}, "
            f"{finished.finished_at!r}"
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
        lease = await reserve_one(backend, C, worker_id="w", lease_seconds=30)
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
