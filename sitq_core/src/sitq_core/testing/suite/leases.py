"""LeaseContract: heartbeat, lease expiry, poison pills and fencing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from ...backend import Backend
from ...models import LEASE_EXPIRED_ERROR, LeaseState, Outcome, ReservedTask, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import (
    LEASE,
    WORKER,
    close_to,
    enqueue_and_reserve,
    exchange,
    finish_one,
    get,
    make_task,
    observers_hear,
    reserve_all,
    reserve_exactly,
    reserve_one,
)

C = "LeaseContract"

FenceCall = Callable[[Backend, ReservedTask, FakeClock], Awaitable[bool]]


async def _complete(b: Backend, lease: ReservedTask, clock: FakeClock) -> bool:
    return await b.complete(lease, b"stale")


async def _fail(b: Backend, lease: ReservedTask, clock: FakeClock) -> bool:
    return await b.fail(lease, "stale", "traceback")


async def _retry(b: Backend, lease: ReservedTask, clock: FakeClock) -> bool:
    return await b.retry(lease, clock.now(), "stale")


async def _release(b: Backend, lease: ReservedTask, clock: FakeClock) -> bool:
    return await b.release(lease)


FENCED: dict[str, FenceCall] = {"complete": _complete, "fail": _fail, "retry": _retry, "release": _release}


class LeaseContract(BackendFixtures):
    """Backend.heartbeat, lease expiry in reserve, and fenced finish_many."""

    @pytest.mark.asyncio
    async def test_heartbeat_extends(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        clock.advance(LEASE - 1)
        await _held_to_its_last_second(backend, "before any heartbeat")
        states = await backend.heartbeat([(lease.id, lease.lease_token)], LEASE)
        assert states == {lease.id: LeaseState.HELD}, f"{C}: heartbeat of a valid lease must return HELD, got {states}"
        clock.advance(LEASE - 1)  # past the original expiry, within the extended one
        assert await reserve_all(backend, worker_id="thief") == [], (
            f"{C}: heartbeat did not extend the lease: reserve handed out the task again"
        )
        assert await backend.complete(lease, b"ok"), f"{C}: complete after a heartbeat must be accepted"

    @pytest.mark.asyncio
    async def test_heartbeat_honours_its_lease_seconds(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)  # reserved for LEASE (30 s)
        clock.advance(LEASE - 1)
        await _held_to_its_last_second(backend, "before any heartbeat")
        states = await backend.heartbeat([(lease.id, lease.lease_token)], 100)
        assert states == {lease.id: LeaseState.HELD}, f"{C}: heartbeat of a valid lease must return HELD, got {states}"
        clock.advance(99)  # well past the reserve's 30 s, within the heartbeat's 100 s
        assert await reserve_all(backend, worker_id="thief") == [], (
            f"{C}: heartbeat(leases, lease_seconds=100) must extend the lease to now + 100 s, not by the "
            "reserve's lease_seconds: reserve handed the task out again"
        )
        clock.advance(1)  # now + 100 s: expired
        again = await reserve_all(backend, worker_id="thief")
        assert [r.id for r in again] == [lease.id], (
            f"{C}: heartbeat(leases, lease_seconds=100) must extend the lease to exactly now + 100 s; "
            "the task was not due again at that time"
        )

    @pytest.mark.asyncio
    async def test_heartbeat_lost(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        done = await enqueue_and_reserve(backend, clock, C)
        assert await backend.complete(done, None)
        states = await backend.heartbeat(
            [(lease.id, "not-the-token"), ("unknown-task", "x"), (done.id, done.lease_token)], LEASE
        )
        assert states.get(lease.id) == LeaseState.LOST, f"{C}: heartbeat with a stale token must return LOST"
        assert states.get("unknown-task") == LeaseState.LOST, f"{C}: heartbeat of an unknown task must return LOST"
        assert states.get(done.id) == LeaseState.LOST, f"{C}: heartbeat of a finished task must return LOST"
        control = await enqueue_and_reserve(backend, clock, C)  # expires with lease, no heartbeat at all
        clock.advance(LEASE)
        again = [r.id for r in await reserve_all(backend)]
        assert control.id in again, (
            f"{C}: a task whose lease expired (lease_expires_at <= now) must be handed out again (one that had no "
            "heartbeat at all was not)"
        )
        assert sorted(again) == sorted([lease.id, control.id]), (
            f"{C}: heartbeat with a stale token must not extend the lease"
        )

    @pytest.mark.asyncio
    async def test_heartbeat_many(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(3)]
        await backend.enqueue_many(tasks)
        leases = await reserve_exactly(backend, C, tasks)
        states = await backend.heartbeat([(r.id, r.lease_token) for r in leases], LEASE)
        assert states == {r.id: LeaseState.HELD for r in leases}, (
            f"{C}: heartbeat must return one state per task id, got {states}"
        )

    @pytest.mark.asyncio
    async def test_expired_lease_redelivered(self, backend: Backend, clock: FakeClock) -> None:
        first = await enqueue_and_reserve(backend, clock, C)
        clock.advance(LEASE)  # lease_expires_at <= now: expired
        now = clock.now()
        again = await reserve_all(backend, worker_id="w-2")
        assert [r.id for r in again] == [first.id], (
            f"{C}: a task whose lease expired (lease_expires_at <= now) must be handed out again"
        )
        second = again[0]
        assert second.lease_token != first.lease_token, f"{C}: a redelivered task needs a new lease_token"
        assert second.task.attempts == 2, f"{C}: redelivery must count attempt 2, got {second.task.attempts}"
        assert second.task.lease_expiries == 1, (
            f"{C}: redelivery after an expired lease must set lease_expiries + 1, got {second.task.lease_expiries}"
        )
        assert second.task.worker_id == "w-2", f"{C}: redelivery must record the new worker_id"
        assert close_to(second.task.started_at, now), f"{C}: redelivery must set started_at = now"

    @pytest.mark.asyncio
    async def test_expired_lease_marks_the_error_until_an_attempt_ends_otherwise(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # the worker runs a task whose last counted attempt lost its lease alone (it may kill workers):
        # the mark survives a release (not an attempt) and a retry's error replaces it
        first = await enqueue_and_reserve(backend, clock, C, max_lease_expiries=5)
        clock.advance(LEASE)
        second = await reserve_one(backend, C, worker_id="w-2")
        assert second.task.error == LEASE_EXPIRED_ERROR, (
            f"{C}: a task reserved from an expired lease must have error = LEASE_EXPIRED_ERROR "
            f"({LEASE_EXPIRED_ERROR!r}), got {second.task.error!r}"
        )
        assert second.task.lease_expiries == 1, (
            f"{C}: reserving a task whose lease expired must count the expiry: lease_expiries 1, "
            f"got {second.task.lease_expiries}"
        )
        assert await backend.release(second), f"{C}: release of a current lease must be accepted"
        third = await reserve_one(backend, C, worker_id="w-3")
        assert third.task.error == LEASE_EXPIRED_ERROR, (
            f"{C}: a release must keep the task's error (LEASE_EXPIRED_ERROR), got {third.task.error!r}"
        )
        assert await backend.retry(third, clock.now(), "it raised"), f"{C}: retry of a current lease must be accepted"
        fourth = await reserve_one(backend, C, worker_id="w-4")
        assert fourth.task.error == "it raised", (
            f"{C}: a task queued by a retry and reserved again keeps the retry's error (not an expired lease), "
            f"got error {fourth.task.error!r}"
        )
        assert fourth.task.lease_expiries == 1, (
            f"{C}: a release and a retry must keep lease_expiries (1, from the expired lease), "
            f"got {fourth.task.lease_expiries}"
        )
        assert first.id == fourth.id

    @pytest.mark.asyncio
    async def test_an_expired_lease_nobody_took_is_still_current(self, backend: Backend, clock: FakeClock) -> None:
        # a worker paused past its lease (a GC pause, a slow disk) keeps the task while no other reserve took it
        lease = await enqueue_and_reserve(backend, clock, C)
        clock.advance(LEASE + 5)
        states = await backend.heartbeat([(lease.id, lease.lease_token)], LEASE)
        assert states.get(lease.id) == LeaseState.HELD, (
            f"{C}: a lease past its expiry that no other reserve has taken is still current: heartbeat must "
            f"extend it (HELD), got {states.get(lease.id)!r}"
        )
        clock.advance(LEASE + 5)
        accepted = await finish_one(backend, Outcome(lease.id, lease.lease_token, "success", value=b"v"), C)
        assert accepted, f"{C}: finish_many must accept the outcome of an expired lease that no other reserve took"

    @pytest.mark.asyncio
    async def test_poison_pill_ends_failed(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock, max_lease_expiries=2)
        await backend.enqueue(task)
        await reserve_one(backend, C)
        clock.advance(LEASE)
        second = await reserve_one(backend, C)
        assert second.task.lease_expiries == 1, (
            f"{C}: an expired lease counts as an attempt: redelivery must set lease_expiries = 1, "
            f"got {second.task.lease_expiries}"
        )
        clock.advance(LEASE)
        got = await reserve_all(backend)
        assert got == [], f"{C}: a task reaching max_lease_expiries must not be handed out again (poison pill)"
        stored = await get(backend, task.id, C)
        assert stored.status == TaskStatus.FAILED, (
            f"{C}: a task reaching max_lease_expiries must end 'failed', got {stored.status!r}"
        )
        assert stored.error == "lease expired after 2 attempts", (
            f"{C}: poison pill error must be 'lease expired after N attempts' (N = attempts), got {stored.error!r}"
        )
        assert stored.finished_at is not None, f"{C}: a poison pill must get finished_at"
        result = await backend.get_result(task.id)
        assert result is not None, f"{C}: a poison pill must have a stored result"
        assert result.status == "failed" and result.error == "lease expired after 2 attempts", (
            f"{C}: a poison pill's result must be failed with the lease error, got {result!r}"
        )
        assert result.attempts == 2, (
            f"{C}: a poison pill's result must count its attempts (2 reservations), got attempts={result.attempts}"
        )

    @pytest.mark.parametrize("call", ["reserve", "finish_and_reserve"])
    @pytest.mark.asyncio
    async def test_a_poison_pill_is_reported_to_observers(self, backend: Backend, clock: FakeClock, call: str) -> None:
        # no worker reports a task the store ends itself: metrics plugins hear of it through store_endings.report
        task = make_task(clock, max_lease_expiries=1)
        await backend.enqueue(task)
        await reserve_one(backend, C)
        clock.advance(LEASE)  # its worker died
        with observers_hear() as heard:
            if call == "reserve":
                got = await reserve_all(backend)
            else:
                _, got = await exchange(backend, [], C, worker_id=WORKER, limit=100, lease_seconds=LEASE)
        assert got == [], f"{C}: a task reaching max_lease_expiries must not be handed out again (poison pill)"
        stored = await get(backend, task.id, C)
        assert stored.status == TaskStatus.FAILED, (
            f"{C}: a task reaching max_lease_expiries must end 'failed' at the first {call} after its lease "
            f"expires, got {stored.status!r} (so there was no ending to report to observers)"
        )
        assert heard == [("failed", task.id, "lease expired after 1 attempts", False)], (
            f"{C}: a poison pill that {call} ends must reach the lifecycle observers once, as "
            "sitq_task_failed(error='lease expired after 1 attempts', will_retry=False): call "
            f"sitq_core.store_endings.report(ended_tasks) after storing the change; they heard {heard}"
        )

    @pytest.mark.asyncio
    async def test_poison_pill_counts_attempts_not_expiries(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock, max_lease_expiries=1)
        await backend.enqueue(task)
        first = await reserve_one(backend, C)
        assert await backend.retry(first, clock.now(), "boom"), f"{C}: retry with the current lease must be True"
        await reserve_one(backend, C)  # attempt 2; its worker dies
        clock.advance(LEASE)
        assert await reserve_all(backend) == [], f"{C}: a task reaching max_lease_expiries must not be handed out"
        stored = await get(backend, task.id, C)
        assert (stored.status, stored.lease_expiries) == (TaskStatus.FAILED, 1), (
            f"{C}: a task reaching max_lease_expiries must end 'failed' with lease_expiries=1, got "
            f"{stored.status!r}/{stored.lease_expiries}"
        )
        assert stored.error == "lease expired after 2 attempts", (
            f"{C}: poison pill error must be 'lease expired after N attempts' with N = attempts (2: one retried, "
            f"one whose lease expired), not lease_expiries (1); got {stored.error!r}"
        )

    @pytest.mark.parametrize("call", sorted(FENCED))
    @pytest.mark.asyncio
    async def test_stale_token_changes_nothing(self, backend: Backend, clock: FakeClock, call: str) -> None:
        old = await enqueue_and_reserve(backend, clock, C)
        clock.advance(LEASE)
        new = await reserve_one(backend, C, worker_id="w-new")
        before = await get(backend, old.id, C)
        accepted = await FENCED[call](backend, old, clock)
        assert accepted is False, f"{C}: {call} with a stale lease token must return False (fencing)"
        after = await get(backend, old.id, C)
        assert after == before, f"{C}: {call} with a stale lease token changed the task:\n  {before}\n  {after}"
        assert await backend.get_result(old.id) is None, f"{C}: {call} with a stale lease token stored a result"
        assert await backend.complete(new, b"new"), f"{C}: the current lease must still complete after a fenced call"

    @pytest.mark.asyncio
    async def test_late_worker_cannot_overwrite_result(self, backend: Backend, clock: FakeClock) -> None:
        old = await enqueue_and_reserve(backend, clock, C)
        clock.advance(LEASE)
        new = await reserve_one(backend, C)
        assert await backend.complete(new, b"newer attempt")
        assert await backend.complete(old, b"stale attempt") is False, (
            f"{C}: a stale worker's late complete must return False"
        )
        assert await backend.fail(old, "stale") is False, f"{C}: a stale worker's late fail must return False"
        result = await backend.get_result(old.id)
        assert result is not None and result.value == b"newer attempt", (
            f"{C}: a stale worker's late complete overwrote the newer attempt's result: {result!r}"
        )

    @pytest.mark.asyncio
    async def test_wrong_token_rejected(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        forged = ReservedTask(lease.task, "forged-token", lease.lease_expires_at)
        assert await backend.complete(forged, b"x") is False, f"{C}: complete with a wrong token must return False"
        assert (await get(backend, lease.id, C)).status == TaskStatus.RUNNING

    @pytest.mark.asyncio
    async def test_lease_ends_when_finished(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.complete(lease, b"v")
        assert await backend.complete(lease, b"again") is False, (
            f"{C}: a second outcome for the same lease must return False (the task is no longer running)"
        )
        states = await backend.heartbeat([(lease.id, lease.lease_token)], LEASE)
        assert states.get(lease.id) == LeaseState.LOST, f"{C}: the lease must end when the task finishes"
        result = await backend.get_result(lease.id)
        assert result is not None and result.value == b"v", f"{C}: a second complete changed the result"

    @pytest.mark.parametrize("call", ["retry", "release"])
    @pytest.mark.asyncio
    async def test_lease_ends_when_requeued(self, backend: Backend, clock: FakeClock, call: str) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await FENCED[call](backend, lease, clock), f"{C}: {call} with the current lease must return True"
        before = await get(backend, lease.id, C)
        assert before.status == TaskStatus.QUEUED, f"{C}: {call} must put the task back to 'queued'"
        assert await backend.complete(lease, b"late") is False, (
            f"{C}: complete with a lease that ended in {call} must return False (the task is queued, not running)"
        )
        states = await backend.heartbeat([(lease.id, lease.lease_token)], LEASE)
        assert states.get(lease.id) == LeaseState.LOST, f"{C}: the lease must end when the task is {call}d"
        after = await get(backend, lease.id, C)
        assert after == before, f"{C}: a call with a lease that ended in {call} changed the task"
        assert await backend.get_result(lease.id) is None, f"{C}: a lease that ended in {call} stored a result"

    @pytest.mark.asyncio
    async def test_expired_leases_respect_the_queues_filter(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C, queue="reports")
        clock.advance(LEASE)
        assert await reserve_all(backend, queues=["emails"]) == [], (
            f"{C}: reserve(queues=['emails']) handed out a task of queue 'reports' whose lease expired "
            "(the queues filter applies to expired leases too)"
        )
        again = await reserve_all(backend, queues=["reports"])
        assert [r.id for r in again] == [lease.id], f"{C}: the expired task must be handed out to its own queue"

    @pytest.mark.asyncio
    async def test_expired_leases_wait_behind_higher_priorities(self, backend: Backend, clock: FakeClock) -> None:
        low = await enqueue_and_reserve(backend, clock, C, priority=0)
        clock.advance(LEASE)
        high = make_task(clock, priority=5)
        await backend.enqueue(high)
        got = await reserve_all(backend, limit=1)
        assert [r.id for r in got] == [high.id], (
            f"{C}: a queued task of priority 5 must be handed out before an expired lease of priority 0 "
            f"(order: priority first), got {[r.id for r in got]} (expired: {low.id})"
        )


async def _held_to_its_last_second(backend: Backend, when: str) -> None:
    """A reserve 1 s before the lease expires hands out nothing (checked before what the test is about)."""
    taken = await reserve_all(backend, worker_id="thief")
    assert taken == [], (
        f"{C}: reserve handed out a task whose lease had 1 s left ({when}): a lease holds until "
        "lease_expires_at (it has expired once lease_expires_at <= now, not earlier)"
    )
