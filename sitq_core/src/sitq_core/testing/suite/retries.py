"""RetryContract: retry keeps attempts and waits for retry_at; release does not count."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from ...backend import Backend
from ...models import Outcome, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import (
    enqueue_and_reserve,
    finish_one,
    get,
    is_aware_utc,
    make_task,
    one_per_outcome,
    reserve_all,
    reserve_exactly,
    reserve_one,
)

C = "RetryContract"


class RetryContract(BackendFixtures):
    """The ``retry`` and ``release`` outcomes of Backend.finish_many."""

    @pytest.mark.asyncio
    async def test_retry_requeues_at_retry_at(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        retry_at = clock.now() + timedelta(seconds=30)
        assert await backend.retry(lease, retry_at, "boom", "Traceback: boom"), (
            f"{C}: retry with the current lease must return True"
        )
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.QUEUED, f"{C}: retry must put the task back to 'queued'"
        assert stored.eta == retry_at, f"{C}: retry must set eta = retry_at ({retry_at}), got {stored.eta}"
        assert stored.attempts == 1, f"{C}: retry must keep attempts (not reset them), got {stored.attempts}"
        assert stored.error == "boom", f"{C}: retry must keep the error on the task, got {stored.error!r}"
        assert await backend.get_result(lease.id) is None, f"{C}: a retried task is not final: no result"
        clock.advance(29)
        assert await reserve_all(backend) == [], f"{C}: a retried task was handed out before retry_at"
        clock.advance(1)
        again = await reserve_one(backend, C)
        assert again.task.attempts == 2, f"{C}: the attempt after a retry must be attempt 2, got {again.task.attempts}"

    @pytest.mark.asyncio
    async def test_release_does_not_count(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.release(lease), f"{C}: release with the current lease must return True"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.QUEUED, f"{C}: release must put the task back to 'queued'"
        assert stored.attempts == 0, f"{C}: release must not count the attempt (attempts - 1), got {stored.attempts}"
        again = await reserve_one(backend, C)  # due now
        assert again.task.attempts == 1, f"{C}: after a release the next attempt is attempt 1"
        assert again.lease_token != lease.lease_token, f"{C}: a released task needs a new lease token"

    @pytest.mark.asyncio
    async def test_release_keeps_the_eta(self, backend: Backend, clock: FakeClock) -> None:
        # the worker tells a redelivery from a requeue by the eta, which only a retry or a requeue sets
        released = make_task(clock)
        await backend.enqueue(released)
        lease = await reserve_one(backend, C)
        clock.advance(5)
        later = make_task(clock)  # due after the released task's eta, before the release
        await backend.enqueue(later)
        clock.advance(5)
        assert await backend.release(lease), f"{C}: release with the current lease must return True"
        stored = await get(backend, lease.id, C)
        assert stored.eta == released.eta, (
            f"{C}: release must leave the task's eta as it was ({released.eta}; it is due already), got "
            f"{stored.eta}: the task keeps its place, and the worker relies on an unchanged eta to tell that "
            "nothing requeued it since"
        )
        got = await reserve_all(backend, limit=1)
        assert [r.id for r in got] == [released.id], (
            f"{C}: a released task keeps its place: it must come before a task due after its eta, "
            f"got {[r.id for r in got]} (released: {released.id})"
        )

    @pytest.mark.asyncio
    async def test_retry_then_fail(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C, max_retries=1)
        assert await backend.retry(lease, clock.now(), "first")
        second = await reserve_one(backend, C)
        assert await backend.fail(second, "second", "Traceback: second")
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.FAILED and stored.attempts == 2, (
            f"{C}: a failed retry must end 'failed' with attempts=2, got {stored.status!r}/{stored.attempts}"
        )
        result = await backend.get_result(lease.id)
        assert result is not None and result.attempts == 2 and result.error == "second", (
            f"{C}: the final result must carry the last error and the attempt count, got {result!r}"
        )

    @pytest.mark.asyncio
    async def test_a_success_after_a_retry_clears_the_error(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.retry(lease, clock.now(), "boom", "Traceback: boom"), (
            f"{C}: retry with the current lease must return True"
        )
        again = await reserve_one(backend, C)
        assert await backend.complete(again, b"v"), f"{C}: complete with the current lease must return True"
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "success", f"{C}: the second attempt succeeded, got {result!r}"
        assert (result.error, result.traceback) == (None, None), (
            f"{C}: a success after a retry must not carry the earlier attempt's error, got "
            f"error={result.error!r}, traceback={result.traceback!r}"
        )
        stored = await get(backend, lease.id, C)
        assert stored.error is None, f"{C}: a task that succeeded must not keep an earlier error, got {stored.error!r}"

    @pytest.mark.asyncio
    async def test_outcome_times_in_another_zone_come_back_as_utc(self, backend: Backend, clock: FakeClock) -> None:
        east = timezone(timedelta(hours=5, minutes=30))
        lease = await enqueue_and_reserve(backend, clock, C)
        retry_at = (clock.now() + timedelta(seconds=5)).astimezone(east)
        assert await backend.retry(lease, retry_at, "boom"), f"{C}: retry with the current lease must return True"
        stored = await get(backend, lease.id, C)
        assert is_aware_utc(stored.eta) and stored.eta == retry_at, (
            f"{C}: a retry_at in another zone must come back as the same instant in aware UTC, got {stored.eta!r}"
        )
        found = await backend.next_eta()
        assert found is None or is_aware_utc(found), f"{C}: next_eta must be aware UTC, got {found!r}"
        clock.advance(5)
        again = await reserve_one(backend, C)
        began, ended = clock.now().astimezone(east), (clock.now() + timedelta(seconds=1)).astimezone(east)
        ok = await finish_one(
            backend, Outcome(again.id, again.lease_token, "success", value=b"v", started_at=began, finished_at=ended), C
        )
        assert ok, f"{C}: the outcome of the current lease must be accepted"
        result = await backend.get_result(lease.id)
        assert result is not None, f"{C}: a finished task must have a result"
        for name, sent in (("started_at", began), ("finished_at", ended)):
            value = getattr(result, name)
            assert is_aware_utc(value) and value == sent, (
                f"{C}: Result.{name} reported in another zone must come back as the same instant in aware UTC, "
                f"got {value!r}"
            )

    @pytest.mark.asyncio
    async def test_finish_many_in_order(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(3)]
        await backend.enqueue_many(tasks)
        a, b, c = await reserve_exactly(backend, C, tasks)
        outcomes = [
            Outcome(a.id, a.lease_token, "success", value=b"a"),
            Outcome(b.id, "stale-token", "failed", error="x"),
            Outcome(c.id, c.lease_token, "retry", error="later", retry_at=clock.now() + timedelta(seconds=5)),
            Outcome(a.id, a.lease_token, "failed", error="too late"),
        ]
        accepted = one_per_outcome(await backend.finish_many(outcomes), outcomes, C)
        assert accepted == [True, False, True, False], (
            f"{C}: finish_many must return one bool per outcome, applied in order; got {accepted}"
        )
        assert (await get(backend, b.id, C)).status == TaskStatus.RUNNING
        assert (await get(backend, c.id, C)).status == TaskStatus.QUEUED
        result = await backend.get_result(a.id)
        assert result is not None and result.status == "success", f"{C}: a later outcome overrode an accepted one"
