"""CancelContract: cancel queued/running/final/unknown tasks, and requeue (one task or many)."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from ...backend import Backend, Capability
from ...models import LeaseState, Outcome, OutcomeKind, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures, requires
from ._support import (
    LEASE,
    enqueue_and_reserve,
    finish_one,
    get,
    is_aware_utc,
    make_task,
    observers_hear,
    only_without,
    reserve_all,
    reserve_one,
)

C = "CancelContract"


class CancelContract(BackendFixtures):
    """Backend.cancel, Backend.requeue and Backend.requeue_many."""

    @pytest.mark.asyncio
    async def test_cancel_queued(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        assert await backend.cancel(task.id) is True, f"{C}: cancel of a queued task must return True"
        stored = await get(backend, task.id, C)
        assert stored.status == TaskStatus.CANCELLED, f"{C}: a cancelled queued task must be 'cancelled' at once"
        result = await backend.get_result(task.id)
        assert result is not None and result.status == "cancelled" and result.error == "cancelled", (
            f"{C}: cancel of a queued task must store a result (status 'cancelled', error 'cancelled'), got {result!r}"
        )
        assert await reserve_all(backend) == [], f"{C}: reserve handed out a cancelled task"

    @requires(Capability.CANCEL_RUNNING)
    @pytest.mark.asyncio
    async def test_cancel_running(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.cancel(lease.id) is True, f"{C}: cancel of a running task must return True"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.RUNNING, f"{C}: a cancelled running task stays 'running' until it reports"
        assert stored.cancel_requested is True, f"{C}: cancel of a running task must set cancel_requested"
        assert await backend.get_result(lease.id) is None, f"{C}: a running task has no result until it reports"
        ok = await finish_one(backend, Outcome(lease.id, lease.lease_token, "cancelled", error="cancelled"), C)
        assert ok and (await get(backend, lease.id, C)).status == TaskStatus.CANCELLED, (
            f"{C}: the worker's 'cancelled' outcome must make the task final"
        )

    @requires(Capability.CANCEL_RUNNING)
    @pytest.mark.asyncio
    @pytest.mark.parametrize("kind", ["retry", "release"])
    async def test_a_task_cancelled_while_it_ran_is_not_queued_again(
        self, backend: Backend, clock: FakeClock, kind: str
    ) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.cancel(lease.id) is True, (
            f"{C}: cancel of a running task must return True when the backend declares Capability.CANCEL_RUNNING"
        )
        outcome = (
            Outcome(lease.id, lease.lease_token, "retry", error="boom", retry_at=clock.now())
            if kind == "retry"
            else Outcome(lease.id, lease.lease_token, "release")
        )
        ok = await finish_one(backend, outcome, C)
        stored = await get(backend, lease.id, C)
        assert ok and stored.status == TaskStatus.CANCELLED, (
            f"{C}: a '{kind}' outcome for a task whose cancel was requested must end it 'cancelled' (and yield "
            f"True), not queue it again; got {ok}, status {stored.status.value!r}"
        )
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "cancelled" and result.error == "cancelled", (
            f"{C}: such a task must get a result (status 'cancelled', error 'cancelled'), got {result!r}"
        )
        assert await reserve_all(backend) == [], f"{C}: reserve handed out a task whose cancel was requested"

    @pytest.mark.asyncio
    async def test_a_queued_task_whose_cancel_was_requested_is_never_handed_out(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # Older sitq queued a retry of a task cancelled while it ran with the request still set (an old worker
        # may still do so during a rolling deploy); a task moved from such a store brings it along.
        task = make_task(clock, cancel_requested=True)
        await backend.enqueue(task)
        with observers_hear() as heard:
            got = await reserve_all(backend)
        assert got == [], (
            f"{C}: reserve handed out a queued task whose cancel_requested is set: its cancel was accepted, so it "
            "must end 'cancelled' instead of running"
        )
        stored = await get(backend, task.id, C)
        assert (stored.status, stored.attempts, stored.error) == (TaskStatus.CANCELLED, 0, "cancelled"), (
            f"{C}: a queued task whose cancel was requested must end 'cancelled' (error 'cancelled') at the reserve "
            f"that finds it due, its attempts unchanged (it did not run); got {stored!r}"
        )
        result = await backend.get_result(task.id)
        assert result is not None and (result.status, result.error) == ("cancelled", "cancelled"), (
            f"{C}: it must get a result as a cancel of a queued task does (status 'cancelled', error "
            f"'cancelled'), got {result!r}"
        )
        assert heard == [("cancelled", task.id)], (
            f"{C}: a task that reserve ends 'cancelled' must reach the lifecycle observers once, as "
            f"sitq_task_cancelled (sitq_core.store_endings.report); they heard {heard}"
        )

    @pytest.mark.asyncio
    async def test_without_cancel_running_a_running_task_is_not_cancelled(
        self, backend: Backend, clock: FakeClock, backend_capabilities: frozenset[Capability]
    ) -> None:
        covered_by = "test_cancel_running covers cancelling running tasks"
        only_without(Capability.CANCEL_RUNNING, backend, backend_capabilities, covered_by)
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.cancel(lease.id) is False, (
            f"{C}: without Capability.CANCEL_RUNNING, cancel of a running task must return False (its worker "
            "could never learn of it), or declare the capability and report it through heartbeat"
        )
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.RUNNING and not stored.cancel_requested, (
            f"{C}: a cancel that returned False must change nothing"
        )

    @requires(Capability.CANCEL_RUNNING)
    @pytest.mark.asyncio
    async def test_a_cancelled_task_whose_worker_is_gone_ends_cancelled(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.cancel(lease.id) is True, (
            f"{C}: cancel of a running task must return True when the backend declares Capability.CANCEL_RUNNING"
        )
        clock.advance(LEASE)  # its worker died: nobody reports the cancel
        got = await reserve_all(backend)
        assert got == [], f"{C}: reserve handed out a task whose cancel was requested (it must end 'cancelled')"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.CANCELLED, (
            f"{C}: a running task cancelled while its worker was gone must end 'cancelled' when its lease "
            f"expires, got {stored.status!r}"
        )
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "cancelled", f"{C}: it must have a cancelled result"

    @requires(Capability.CANCEL_RUNNING)
    @pytest.mark.asyncio
    async def test_a_cancel_ended_in_reserve_is_reported_to_observers(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.cancel(lease.id) is True, (
            f"{C}: cancel of a running task must return True when the backend declares Capability.CANCEL_RUNNING"
        )
        clock.advance(LEASE)  # its worker died: nobody else reports the cancel
        with observers_hear() as heard:
            got = await reserve_all(backend)
        assert got == [], f"{C}: reserve handed out a task whose cancel was requested (it must end 'cancelled')"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.CANCELLED, (
            f"{C}: a running task cancelled while its worker was gone must end 'cancelled' at the first reserve "
            f"after its lease expires, got {stored.status!r} (so there was no ending to report to observers)"
        )
        assert heard == [("cancelled", lease.id)], (
            f"{C}: a task that reserve ends 'cancelled' (its worker gone) must reach the lifecycle observers once, "
            "as sitq_task_cancelled: call sitq_core.store_endings.report(ended_tasks) after storing the change; "
            f"they heard {heard}"
        )

    @requires(Capability.CANCEL_RUNNING)
    @pytest.mark.asyncio
    async def test_heartbeat_reports_cancel(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.cancel(lease.id)
        clock.advance(LEASE - 1)
        early = await reserve_all(backend)
        stored = await get(backend, lease.id, C)
        assert early == [] and stored.status == TaskStatus.RUNNING, (
            f"{C}: reserve took a task whose lease had 1 s left (before any heartbeat; it handed out "
            f"{len(early)} tasks and left it {stored.status!r}): a lease holds until lease_expires_at"
        )
        states = await backend.heartbeat([(lease.id, lease.lease_token)], LEASE)
        assert states == {lease.id: LeaseState.CANCEL_REQUESTED}, (
            f"{C}: heartbeat after cancel of a running task must return CANCEL_REQUESTED, got {states}"
        )
        clock.advance(LEASE - 1)
        assert await reserve_all(backend) == [], f"{C}: a CANCEL_REQUESTED heartbeat must still extend the lease"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.RUNNING, (
            f"{C}: a CANCEL_REQUESTED heartbeat must still extend the lease: the task ended {stored.status!r} "
            "at its first lease's expiry while its worker was still stopping it"
        )
        ok = await finish_one(backend, Outcome(lease.id, lease.lease_token, "cancelled", error="cancelled"), C)
        assert ok, f"{C}: a CANCEL_REQUESTED heartbeat must still extend the lease: the worker's outcome was fenced"

    @pytest.mark.asyncio
    async def test_cancel_final_or_unknown(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(lease, b"v")
        assert await backend.cancel(lease.id) is False, f"{C}: cancel of a finished task must return False"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.SUCCESS and not stored.cancel_requested, (
            f"{C}: cancel of a finished task changed it"
        )
        result = await backend.get_result(lease.id)
        assert result is not None and result.ok, f"{C}: cancel of a finished task changed its result"
        assert await backend.cancel("unknown") is False, f"{C}: cancel of an unknown task must return False"

    @pytest.mark.asyncio
    async def test_requeue_failed(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.fail(lease, "boom")
        eta = clock.now() + timedelta(seconds=10)
        assert await backend.requeue(lease.id, eta=eta) is True, f"{C}: requeue of a failed task must return True"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.QUEUED, f"{C}: requeue must make the task 'queued'"
        assert (stored.attempts, stored.lease_expiries, stored.error, stored.cancel_requested) == (0, 0, None, False), (
            f"{C}: requeue must reset attempts, lease_expiries, error and cancel_requested; got {stored!r}"
        )
        assert stored.eta == eta, f"{C}: requeue(eta=...) must set the eta"
        assert await backend.get_result(lease.id) is None, f"{C}: requeue must delete the old result"
        assert await reserve_all(backend) == [], f"{C}: a requeued task was handed out before its eta"
        clock.advance(10)
        again = await reserve_one(backend, C)
        assert again.task.attempts == 1, f"{C}: a requeued task starts again at attempt 1"

    @pytest.mark.parametrize("ending", ["failed", "cancelled"])
    @pytest.mark.asyncio
    async def test_requeue_forgets_the_last_run(self, backend: Backend, clock: FakeClock, ending: str) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        clock.advance(5)
        kind: OutcomeKind = "failed" if ending == "failed" else "cancelled"
        ok = await finish_one(backend, Outcome(lease.id, lease.lease_token, kind, error="boom"), C)
        assert ok, f"{C}: the '{kind}' outcome of the current lease must be accepted"
        ended = await get(backend, lease.id, C)
        assert ended.finished_at is not None, f"{C}: a {ending} task must carry finished_at"
        assert await backend.requeue(lease.id) is True, f"{C}: requeue of a {ending} task must return True"
        stored = await get(backend, lease.id, C)
        run = (stored.started_at, stored.finished_at, stored.worker_id)
        assert run == (None, None, None), (
            f"{C}: requeue must clear started_at, finished_at and worker_id (the task has not run since; a queued "
            f"task showing the finished_at of its last run misleads sitq stats and purge), got {run}"
        )

    @pytest.mark.asyncio
    async def test_requeue_gives_a_poison_pill_its_lease_expiries_back(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        task = make_task(clock, max_lease_expiries=2)
        await backend.enqueue(task)
        for _ in range(2):
            await reserve_one(backend, C)
            clock.advance(LEASE)
        assert await reserve_all(backend) == [], f"{C}: setup: the task should have ended as a poison pill"
        assert await backend.requeue(task.id) is True, f"{C}: requeue of a poison pill (failed) must return True"
        stored = await get(backend, task.id, C)
        assert stored.lease_expiries == 0, f"{C}: requeue must reset lease_expiries, got {stored.lease_expiries}"
        await reserve_one(backend, C)
        clock.advance(LEASE)
        again = await reserve_all(backend)
        assert [r.id for r in again] == [task.id], (
            f"{C}: after requeue, one expired lease must not end the task again (lease_expiries was not reset)"
        )

    @pytest.mark.asyncio
    async def test_requeue_cancelled_due_now(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.cancel(lease.id)
        await backend.finish_many([Outcome(lease.id, lease.lease_token, "cancelled", error="cancelled")])
        clock.advance(50)
        waiting = make_task(clock)  # due before the requeue: it must stay ahead of the requeued task
        await backend.enqueue(waiting)
        clock.advance(50)
        assert await backend.requeue(lease.id) is True, f"{C}: requeue of a cancelled task must return True"
        stored = await get(backend, lease.id, C)
        assert not stored.cancel_requested, f"{C}: requeue must reset cancel_requested"
        assert stored.eta == clock.now(), (
            f"{C}: requeue without eta must make the task due now ({clock.now()}), got eta={stored.eta}"
        )
        assert [r.id for r in await reserve_all(backend)] == [waiting.id, lease.id], (
            f"{C}: requeue without eta must make the task due now: a task due earlier must come first"
        )

    @pytest.mark.asyncio
    async def test_requeue_eta_in_another_zone_comes_back_as_utc(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.fail(lease, "boom", "Traceback: boom")
        eta = (clock.now() + timedelta(seconds=10)).astimezone(timezone(timedelta(hours=-3)))
        assert await backend.requeue(lease.id, eta=eta) is True, f"{C}: requeue of a failed task must return True"
        stored = await get(backend, lease.id, C)
        assert is_aware_utc(stored.eta) and stored.eta == eta, (
            f"{C}: requeue(eta=) in another zone must come back as the same instant in aware UTC, got {stored.eta!r}"
        )

    @pytest.mark.asyncio
    async def test_requeue_refuses_other_states(self, backend: Backend, clock: FakeClock) -> None:
        queued = make_task(clock, priority=-1)
        await backend.enqueue(queued)
        running = await enqueue_and_reserve(backend, clock, C)
        done = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(done, b"v")
        for task_id, state in ((queued.id, "queued"), (running.id, "running"), (done.id, "success")):
            before = await get(backend, task_id, C)
            assert await backend.requeue(task_id) is False, f"{C}: requeue of a {state} task must return False"
            assert await get(backend, task_id, C) == before, f"{C}: requeue of a {state} task changed it"
        assert await backend.requeue("unknown") is False, f"{C}: requeue of an unknown task must return False"

    @pytest.mark.asyncio
    async def test_requeue_many_answers_each_id_as_requeue_would(self, backend: Backend, clock: FakeClock) -> None:
        failed = await enqueue_and_reserve(backend, clock, C)
        await backend.fail(failed, "boom", "Traceback: boom")
        running = await enqueue_and_reserve(backend, clock, C)
        done = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(done, b"v")
        cancelled, queued = make_task(clock), make_task(clock)
        await backend.enqueue_many([cancelled, queued])
        await backend.cancel(cancelled.id)
        untouched = {task_id: await get(backend, task_id, C) for task_id in (queued.id, running.id, done.id)}
        eta = clock.now() + timedelta(seconds=10)
        ids = [failed.id, queued.id, cancelled.id, running.id, done.id, "unknown", failed.id]
        got = await backend.requeue_many(ids, eta=eta)
        wanted = [True, False, True, False, False, False, False]
        assert got == wanted, (
            f"{C}: requeue_many([failed, queued, cancelled, running, success, unknown, failed again]) must return "
            f"{wanted} (one bool per id, True only where requeue would requeue; an id given twice at most once), "
            f"got {got}"
        )
        for task_id, ending in ((failed.id, "failed"), (cancelled.id, "cancelled")):
            stored = await get(backend, task_id, C)
            state = (stored.status, stored.attempts, stored.lease_expiries, stored.error, stored.cancel_requested)
            assert state == (TaskStatus.QUEUED, 0, 0, None, False), (
                f"{C}: requeue_many must make a {ending} task 'queued' with attempts, lease_expiries, error and "
                f"cancel_requested reset, as requeue does; got {stored!r}"
            )
            run = (stored.started_at, stored.finished_at, stored.worker_id)
            assert run == (None, None, None), (
                f"{C}: requeue_many must clear started_at, finished_at and worker_id of a {ending} task, got {run}"
            )
            assert stored.eta == eta and is_aware_utc(stored.eta), (
                f"{C}: requeue_many(eta=...) must set that eta (aware UTC) on each requeued task, got {stored.eta!r}"
            )
            assert await backend.get_result(task_id) is None, f"{C}: requeue_many must delete a requeued task's result"
        for task_id, before in untouched.items():
            assert await get(backend, task_id, C) == before, (
                f"{C}: requeue_many changed a {before.status} task it must refuse"
            )
        assert [r.id for r in await reserve_all(backend)] == [queued.id], (
            f"{C}: a task requeue_many requeued was handed out before its eta"
        )
        clock.advance(10)
        again = await reserve_all(backend)
        assert sorted(r.id for r in again) == sorted([failed.id, cancelled.id]), (
            f"{C}: the tasks requeue_many requeued must be handed out at their eta, got {[r.id for r in again]}"
        )
        assert all(r.task.attempts == 1 for r in again), f"{C}: a requeued task starts again at attempt 1"

    @pytest.mark.asyncio
    async def test_requeue_many_without_eta_is_due_now(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.fail(lease, "boom")
        clock.advance(50)
        assert await backend.requeue_many([lease.id]) == [True], (
            f"{C}: requeue_many([a failed task]) must return [True]"
        )
        stored = await get(backend, lease.id, C)
        assert stored.eta == clock.now(), (
            f"{C}: requeue_many without eta must make the tasks due now ({clock.now()}), got eta={stored.eta}"
        )
        assert await backend.requeue_many([]) == [], f"{C}: requeue_many([]) must return []"
