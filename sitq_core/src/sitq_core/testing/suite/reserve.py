"""ReserveContract: what reserve hands out, in which order, and what it records."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ...backend import Backend
from ...models import TaskStatus, new_id
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import (
    LEASE,
    WORKER,
    close_to,
    get,
    is_aware_utc,
    make_task,
    rejected,
    reserve_all,
    reserve_exactly,
    reserve_one,
    stored_hint,
    unstored,
)

C = "ReserveContract"


class ReserveContract(BackendFixtures):
    """Backend.reserve."""

    @pytest.mark.asyncio
    async def test_reserve_nothing_due(self, backend: Backend) -> None:
        assert await reserve_all(backend) == [], f"{C}: reserve on an empty store must return []"

    @pytest.mark.asyncio
    async def test_reserve_records_the_lease(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        clock.advance(5)
        now = clock.now()
        got = await reserve_all(backend, worker_id="w-42", lease_seconds=12.5)
        assert [r.id for r in got] == [task.id], f"{C}: reserve did not hand out the one due task"
        lease = got[0]
        assert isinstance(lease.lease_token, str) and lease.lease_token, f"{C}: lease_token must be a non-empty str"
        assert is_aware_utc(lease.lease_expires_at), f"{C}: lease_expires_at must be aware UTC"
        assert close_to(lease.lease_expires_at, now + timedelta(seconds=12.5)), (
            f"{C}: lease_expires_at must be now + lease_seconds ({now + timedelta(seconds=12.5)}), "
            f"got {lease.lease_expires_at}"
        )
        for view, where in ((lease.task, "ReservedTask.task"), (await get(backend, task.id, C), "get_task")):
            assert view.status == TaskStatus.RUNNING, f"{C}: a reserved task must be 'running' ({where})"
            assert view.worker_id == "w-42", f"{C}: reserve must record worker_id ({where}), got {view.worker_id!r}"
            assert view.attempts == 1, f"{C}: reserve must count the attempt ({where}): attempts={view.attempts}"
            assert is_aware_utc(view.started_at) and close_to(view.started_at, now), (
                f"{C}: reserve must set started_at = now as aware UTC ({where}), got {view.started_at!r}"
            )
            assert view.payload == task.payload and view.eta == task.eta, (
                f"{C}: reserve must not change the stored task's payload or eta ({where})"
            )

    @pytest.mark.asyncio
    async def test_reserve_respects_limit(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(5)]
        await backend.enqueue_many(tasks)
        sizes = [len(await reserve_all(backend, limit=2)) for _ in range(4)]
        if sizes != [2, 2, 1, 0]:
            hint = await stored_hint(backend, tasks)
            pytest.fail(f"{C}: reserve(limit=2) over 5 due tasks must give 2, 2, 1, 0; got {sizes}{hint}")

    @pytest.mark.asyncio
    async def test_no_double_delivery_while_leased(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(3)]
        await backend.enqueue_many(tasks)
        await reserve_exactly(backend, C, tasks)
        clock.advance(LEASE - 1)
        again = await reserve_all(backend, worker_id="other")
        assert again == [], f"{C}: reserve handed out a task that is still leased: {[r.id for r in again]}"

    @pytest.mark.asyncio
    async def test_lease_tokens_are_unique(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(10)]
        await backend.enqueue_many(tasks)
        got = await reserve_exactly(backend, C, tasks)
        tokens = [r.lease_token for r in got]
        shared = sorted({token for token in tokens if tokens.count(token) > 1})
        assert not shared, f"{C}: every reservation needs its own lease_token; shared by several: {shared}"

    @pytest.mark.asyncio
    async def test_eta_honoured(self, backend: Backend, clock: FakeClock) -> None:
        later = make_task(clock, eta=clock.now() + timedelta(seconds=60))
        await backend.enqueue(later)
        assert await reserve_all(backend) == [], f"{C}: reserve handed out a task before its eta"
        clock.advance(59.999)
        assert await reserve_all(backend) == [], f"{C}: reserve handed out a task before its eta"
        clock.advance(0.001)
        got = await reserve_all(backend)
        assert [r.id for r in got] == [later.id], (
            f"{C}: a task is due when eta <= now; reserve did not hand it out at its eta "
            "(does the backend read time from self.now()?)"
        )

    @pytest.mark.asyncio
    async def test_priority_first(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock, priority=p) for p in (0, 5, -1, 10, 5)]
        await backend.enqueue_many(tasks)
        order = [(await reserve_one(backend, C, among=tasks)).task.priority for _ in tasks]
        assert order == [10, 5, 5, 0, -1], f"{C}: reserve must take the highest priority first; got {order}"

    @pytest.mark.asyncio
    async def test_batch_takes_highest_priority(self, backend: Backend, clock: FakeClock) -> None:
        low = [make_task(clock, priority=0) for _ in range(3)]
        high = [make_task(clock, priority=3) for _ in range(2)]
        await backend.enqueue_many([*low, *high])
        got = {r.id for r in await reserve_all(backend, limit=2)}
        if got != {t.id for t in high}:
            hint = await stored_hint(backend, [*low, *high])
            pytest.fail(f"{C}: reserve(limit=2) must pick the highest priority tasks{hint}")

    @pytest.mark.asyncio
    async def test_then_earliest_eta(self, backend: Backend, clock: FakeClock) -> None:
        now = clock.now()
        tasks = [make_task(clock, eta=now - timedelta(seconds=s)) for s in (1, 3, 2)]
        await backend.enqueue_many(tasks)
        order = [(await reserve_one(backend, C, among=tasks)).id for _ in tasks]
        assert order == [tasks[1].id, tasks[2].id, tasks[0].id], (
            f"{C}: among equal priorities reserve must take the earliest eta first"
        )

    @pytest.mark.asyncio
    async def test_then_enqueue_order(self, backend: Backend, clock: FakeClock) -> None:
        eta = clock.now()
        tasks = []
        for _ in range(4):
            clock.advance(0.001)
            task = make_task(clock, eta=eta)
            tasks.append(task)
            await backend.enqueue(task)
        order = [(await reserve_one(backend, C)).id for _ in tasks]
        assert order == [t.id for t in tasks], f"{C}: among equal priority and eta reserve must follow enqueue order"

    @pytest.mark.asyncio
    async def test_batch_order_with_equal_times(self, backend: Backend, clock: FakeClock) -> None:
        # same priority, eta and enqueued_at; ids that sort opposite to the enqueue order, so that a
        # backend breaking ties by id (instead of by arrival) is caught
        ids = sorted((new_id() for _ in range(6)), reverse=True)
        tasks = [make_task(clock, id=task_id) for task_id in ids]
        await backend.enqueue_many(tasks)
        order = [(await reserve_one(backend, C, among=tasks)).id for _ in tasks]
        assert order == [t.id for t in tasks], (
            f"{C}: tasks with equal priority, eta and enqueued_at must come out in enqueue order "
            "(the order of enqueue_many), not by id"
        )

    @pytest.mark.asyncio
    async def test_ties_follow_arrival_not_enqueued_at(self, backend: Backend, clock: FakeClock) -> None:
        # a task moved from another store brings an older enqueued_at; arrival in *this* store decides
        first = make_task(clock)
        moved = make_task(clock, enqueued_at=clock.now() - timedelta(hours=1))
        await backend.enqueue(first)
        await backend.enqueue(moved)
        order = [(await reserve_one(backend, C)).id for _ in range(2)]
        assert order == [first.id, moved.id], (
            f"{C}: among equal priority and eta reserve must follow arrival order (the order this store "
            "received the tasks), not enqueued_at: a task enqueued later with an older enqueued_at came first"
        )

    @pytest.mark.asyncio
    async def test_named_queues(self, backend: Backend, clock: FakeClock) -> None:
        a = [make_task(clock, queue="a") for _ in range(2)]
        b = [make_task(clock, queue="b")]
        d = [make_task(clock)]
        await backend.enqueue_many([*a, *b, *d])
        why = await unstored(backend, [*a, *b, *d])
        assert not why, f"{C}: reserve(queues=[...]) cannot be checked: {why}"
        got_a = {r.id for r in await reserve_all(backend, queues=["a"])}
        assert got_a == {t.id for t in a}, f"{C}: reserve(queues=['a']) must return only (and all) queue 'a' tasks"
        got_rest = {r.id for r in await reserve_all(backend, queues=["b", "default"])}
        assert got_rest == {b[0].id, d[0].id}, f"{C}: reserve(queues=[...]) must search every named queue"

    @pytest.mark.asyncio
    async def test_all_queues_when_none(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock, queue=q) for q in ("x", "y", "default")]
        await backend.enqueue_many(tasks)
        got = {r.id for r in await reserve_exactly(backend, C, tasks, queues=None)}
        assert got == {t.id for t in tasks}, f"{C}: reserve(queues=None) must search every queue"

    @pytest.mark.asyncio
    async def test_final_tasks_never_reserved(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        lease = await reserve_one(backend, C)
        assert await backend.complete(lease, b"done"), f"{C}: complete with the current lease must return True"
        clock.advance(LEASE * 10)
        assert await reserve_all(backend) == [], f"{C}: reserve handed out a finished task"

    @pytest.mark.asyncio
    async def test_bad_limit_and_lease(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        for kwargs, parameter in (
            ({"limit": 0, "lease_seconds": LEASE}, "limit"),
            ({"limit": -1, "lease_seconds": LEASE}, "limit"),
            ({"limit": 1, "lease_seconds": 0}, "lease_seconds"),
            ({"limit": 1, "lease_seconds": -5}, "lease_seconds"),
        ):
            call = "reserve(" + ", ".join(f"{name}={value!r}" for name, value in kwargs.items()) + ")"
            await rejected(backend.reserve(worker_id=WORKER, **kwargs), C, call, parameter)
        stored = await get(backend, task.id, C)
        assert stored.status == TaskStatus.QUEUED and stored.attempts == 0, (
            f"{C}: a rejected reserve call changed a task"
        )
