"""ExchangeContract: finish_and_reserve behaves exactly like finish_many followed by reserve."""

from __future__ import annotations

import pytest

from ...backend import Backend
from ...models import Outcome, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import count_problem, exchange, get, make_task, reserve_one

C = "ExchangeContract"
LEASE = 30.0


class ExchangeContract(BackendFixtures):
    """Backend.finish_and_reserve: the worker's one-call cycle (an override must keep these semantics)."""

    @pytest.mark.asyncio
    async def test_finishes_then_reserves(self, backend: Backend, clock: FakeClock) -> None:
        first, second, third = (make_task(clock, priority=p) for p in (3, 2, 1))
        await backend.enqueue_many([first, second, third])
        lease = await reserve_one(backend, C, worker_id="w")
        assert lease.id == first.id, f"{C}: reserve must take the highest priority first"
        accepted, reserved = await exchange(
            backend,
            [Outcome(lease.id, lease.lease_token, "success", value=b"v")],
            C,
            worker_id="w",
            limit=5,
            lease_seconds=LEASE,
        )
        assert accepted == [True], f"{C}: the outcome of a current lease must be accepted, got {accepted}"
        if len(reserved) != 2:
            pytest.fail(f"{C}: {await count_problem(backend, 'finish_and_reserve', reserved, [second, third])}")
        assert [r.id for r in reserved] == [second.id, third.id], (
            f"{C}: finish_and_reserve must reserve the due tasks in order, got {[r.id for r in reserved]}"
        )
        assert (await get(backend, first.id, C)).status == TaskStatus.SUCCESS, f"{C}: the finish was not applied"
        result = await backend.get_result(first.id)
        assert result is not None and result.value == b"v", f"{C}: the finished task must have its result"
        for item in reserved:
            assert (await get(backend, item.id, C)).status == TaskStatus.RUNNING, f"{C}: reserved tasks must run"

    @pytest.mark.asyncio
    async def test_stale_outcome_is_fenced_and_reserve_still_happens(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        old = await reserve_one(backend, C, worker_id="w1", lease_seconds=1)
        clock.advance(5)  # the first lease expires; another worker takes the task
        new = await reserve_one(backend, C + " (a task whose lease expired is due again)", worker_id="w2")
        assert new.id == task.id, f"{C}: an expired lease must make its task due again"
        other = make_task(clock)
        await backend.enqueue(other)
        accepted, reserved = await exchange(
            backend,
            [Outcome(old.id, old.lease_token, "success", value=b"stale")],
            C,
            worker_id="w1",
            limit=1,
            lease_seconds=LEASE,
        )
        assert accepted == [False], f"{C}: a stale lease token must be fenced off in finish_and_reserve"
        got = [r.id for r in reserved]
        assert got, (
            f"{C}: the reserve part must still run after a fenced outcome: it reserved nothing, though "
            f"{other.id} was due"
        )
        assert task.id not in got, (
            f"{C}: the reserve part of finish_and_reserve handed out a task that is still leased ({task.id}, "
            f"leased to w2 until {new.lease_expires_at}) instead of the due task {other.id}"
        )
        assert got == [other.id], f"{C}: the reserve part must hand out the one due task {other.id}, got {got}"
        assert await backend.get_result(task.id) is None, f"{C}: a stale outcome must not store a result"

    @pytest.mark.asyncio
    async def test_retry_outcome_is_not_reserved_before_its_eta(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        lease = await reserve_one(backend, C, worker_id="w")
        retry_at = clock.now().replace(year=clock.now().year + 1)
        accepted, reserved = await exchange(
            backend,
            [Outcome(lease.id, lease.lease_token, "retry", error="later", retry_at=retry_at)],
            C,
            worker_id="w",
            limit=5,
            lease_seconds=LEASE,
        )
        assert accepted == [True] and reserved == [], (
            f"{C}: a task retried for later must not be reserved in the same call, got {[r.id for r in reserved]}"
        )

    @pytest.mark.asyncio
    async def test_a_released_task_comes_back_in_the_same_call(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        lease = await reserve_one(backend, C, worker_id="w")
        accepted, reserved = await exchange(
            backend, [Outcome(lease.id, lease.lease_token, "release")], C, worker_id="w", limit=5, lease_seconds=LEASE
        )
        assert accepted == [True], f"{C}: the release of a current lease must be accepted, got {accepted}"
        assert [r.id for r in reserved] == [task.id], (
            f"{C}: finish_and_reserve must finish first, then reserve: a task released by the call is due now "
            f"and must come back in the same call's reservation, got {[r.id for r in reserved]}"
        )
        assert reserved[0].lease_token != lease.lease_token, f"{C}: the task released and reserved needs a new token"
        assert reserved[0].task.attempts == 1, (
            f"{C}: a released attempt is not counted: reserved again it is attempt 1, got {reserved[0].task.attempts}"
        )

    @pytest.mark.asyncio
    async def test_an_expired_lease_is_judged_before_the_reserve(self, backend: Backend, clock: FakeClock) -> None:
        # the worker finished just after its lease expired and nobody took the task: its outcome counts,
        # and the reserve part of the same call must not hand the task out again first
        task = make_task(clock)
        await backend.enqueue(task)
        lease = await reserve_one(backend, C, worker_id="w", lease_seconds=1)
        clock.advance(5)
        accepted, reserved = await exchange(
            backend,
            [Outcome(lease.id, lease.lease_token, "success", value=b"late")],
            C,
            worker_id="w",
            limit=5,
            lease_seconds=LEASE,
        )
        assert accepted == [True] and reserved == [], (
            f"{C}: finish_and_reserve must finish first, then reserve: the outcome of an expired lease nobody "
            f"took must be accepted before the reserve could re-lease the task; got accepted={accepted}, "
            f"reserved={[r.id for r in reserved]}"
        )
        result = await backend.get_result(task.id)
        assert result is not None and result.value == b"late", f"{C}: the accepted outcome must store its result"
