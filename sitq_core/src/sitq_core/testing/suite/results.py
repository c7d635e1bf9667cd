"""ResultContract: complete/fail store a Result; get_result and wait_for_result read it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ...backend import Backend
from ...models import Outcome, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures, OpenBackend
from ._support import close_to, enqueue_and_reserve, finish_one, get, is_aware_utc, make_task, result_latency, within

C = "ResultContract"
EARLY_RETURN_PROBE = 0.05  # seconds a waiter is watched for answering before any result exists


class ResultContract(BackendFixtures):
    """Final outcomes, Backend.get_result and Backend.wait_for_result."""

    @pytest.mark.asyncio
    async def test_complete_stores_result(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C, serializer="msgpack")
        started = clock.now()
        clock.advance(2)
        assert await backend.complete(lease, b"\x00value\xff"), f"{C}: complete with the current lease must be True"
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.SUCCESS, f"{C}: complete must make the task 'success'"
        assert close_to(stored.finished_at, clock.now()), f"{C}: complete must set finished_at = now"
        result = await backend.get_result(lease.id)
        assert result is not None, f"{C}: complete must store a result"
        assert result.task_id == lease.id and result.status == "success", f"{C}: wrong result {result!r}"
        assert result.ok, f"{C}: Result.status must be the plain string 'success'"
        assert result.value is not None, f"{C}: complete(lease, value) stored no value: Result.value is None"
        assert type(result.value) is bytes, (
            f"{C}: Result.value must be bytes, got {type(result.value).__name__} "
            "(convert memoryview/bytearray from the driver: serializers expect bytes)"
        )
        assert result.value == b"\x00value\xff", f"{C}: the result value did not round trip: {result.value!r}"
        assert result.attempts == 1, f"{C}: the result must carry attempts, got {result.attempts}"
        assert result.serializer == "msgpack", f"{C}: the result must carry the task's serializer name"
        for name in ("enqueued_at", "started_at", "finished_at"):
            assert is_aware_utc(getattr(result, name)), (
                f"{C}: Result.{name} must be aware UTC, got {getattr(result, name)!r}"
            )
        assert close_to(result.enqueued_at, lease.task.enqueued_at), f"{C}: Result.enqueued_at is wrong"
        assert close_to(result.started_at, started), f"{C}: Result.started_at must be the attempt's start"
        assert close_to(result.finished_at, clock.now()), f"{C}: Result.finished_at must be now"

    @pytest.mark.asyncio
    async def test_the_result_keeps_the_times_the_worker_reports(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        began = clock.now() + timedelta(seconds=2)  # a prefetched task: it started after its reservation
        ended = began + timedelta(seconds=3)
        clock.advance(10)  # reported a little later
        ok = await finish_one(
            backend, Outcome(lease.id, lease.lease_token, "success", value=b"v", started_at=began, finished_at=ended), C
        )
        assert ok, f"{C}: finish_many must accept a current lease's outcome"
        result = await backend.get_result(lease.id)
        assert result is not None and (result.started_at, result.finished_at) == (began, ended), (
            f"{C}: a Result's started_at/finished_at must be the outcome's own when it gives them "
            f"({began}, {ended}), got {result and (result.started_at, result.finished_at)}"
        )

    @pytest.mark.asyncio
    async def test_complete_with_none(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.complete(lease, None)
        result = await backend.get_result(lease.id)
        assert result is not None and result.ok and result.value is None, (
            f"{C}: complete(lease, None) must store a success result with value None, got {result!r}"
        )

    @pytest.mark.asyncio
    async def test_an_empty_value_reads_back_empty(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.complete(lease, b""), f"{C}: complete with the current lease must be True"
        result = await backend.get_result(lease.id)
        assert result is not None and result.ok, f"{C}: complete(lease, b'') must store a success result"
        assert result.value == b"" and type(result.value) is bytes, (
            f"{C}: an empty result value b'' must read back as b'' (not None: None means 'no value'), "
            f"got {result.value!r}"
        )

    @pytest.mark.asyncio
    async def test_fail_stores_error(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        assert await backend.fail(lease, "ValueError: bad", "Traceback (most recent call last): ...")
        assert (await get(backend, lease.id, C)).status == TaskStatus.FAILED, f"{C}: fail must make it 'failed'"
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "failed", f"{C}: fail must store a failed result"
        assert result.error == "ValueError: bad", f"{C}: the result must keep the error, got {result.error!r}"
        assert result.traceback == "Traceback (most recent call last): ...", f"{C}: the result must keep the traceback"

    @pytest.mark.asyncio
    async def test_cancelled_outcome(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        ok = await finish_one(backend, Outcome(lease.id, lease.lease_token, "cancelled", error="cancelled"), C)
        assert ok, f"{C}: a 'cancelled' outcome with the current lease must be accepted"
        assert (await get(backend, lease.id, C)).status == TaskStatus.CANCELLED
        result = await backend.get_result(lease.id)
        assert result is not None and result.status == "cancelled", f"{C}: a cancelled outcome must store a result"

    @pytest.mark.asyncio
    async def test_no_result_until_final(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        assert await backend.get_result(task.id) is None, f"{C}: a queued task must have no result"
        await enqueue_and_reserve(backend, clock, C)
        assert await backend.get_result(task.id) is None, f"{C}: a running task must have no result"
        assert await backend.get_result("unknown") is None, f"{C}: get_result of an unknown id must be None"

    @pytest.mark.asyncio
    async def test_wait_returns_existing_result(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        await backend.complete(lease, b"v")
        for timeout in (0, 1.0, None):
            result = await within(
                backend.wait_for_result(lease.id, timeout),
                C,
                f"wait_for_result(timeout={timeout}) must return an existing result at once",
            )
            assert result is not None, f"{C}: wait_for_result(timeout={timeout}) must return an existing result"
            assert result.value == b"v", (
                f"{C}: wait_for_result(timeout={timeout}) returned the result without its value: {result.value!r}"
            )

    @pytest.mark.asyncio
    async def test_wait_times_out_with_none(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        once = await within(
            backend.wait_for_result(lease.id, 0), C, "wait_for_result(timeout=0) must check once, not wait"
        )
        assert once is None, f"{C}: wait_for_result(timeout=0) must check once and return None"
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await within(
            backend.wait_for_result(lease.id, 0.05), C, "wait_for_result(timeout=0.05) must return by its timeout"
        )
        assert result is None, f"{C}: wait_for_result must return None when the timeout passes first"
        assert loop.time() - start >= 0.04, f"{C}: wait_for_result returned None before its timeout"

    @pytest.mark.asyncio
    async def test_wait_wakes_when_written(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        waiter = asyncio.create_task(backend.wait_for_result(lease.id, 10))
        await asyncio.sleep(0)  # let the waiter start waiting
        assert not waiter.done(), f"{C}: wait_for_result returned before the result was written: {waiter!r}"
        await backend.complete(lease, b"late")
        backend.notify_results([lease.id])
        result = await within(
            waiter, C, "wait_for_result must wake when the result is written and notified", result_latency()
        )
        assert result is not None and result.value == b"late", (
            f"{C}: wait_for_result did not return a result written while it waited"
        )

    @pytest.mark.asyncio
    async def test_wait_without_timeout_waits_until_written(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        waiter = asyncio.create_task(backend.wait_for_result(lease.id, None))
        # a probe, not a synchronisation: a correct waiter is still waiting however long this takes,
        # and one that answers at once has answered by now
        done, _ = await asyncio.wait({waiter}, timeout=EARLY_RETURN_PROBE)
        if done:
            pytest.fail(
                f"{C}: wait_for_result(timeout=None) returned {waiter.result()!r} before the result was "
                "written; timeout=None must wait until the result exists"
            )
        await backend.complete(lease, b"written later")
        backend.notify_results([lease.id])
        result = await within(
            waiter, C, "wait_for_result(timeout=None) must return a result written while it waited", result_latency()
        )
        assert result is not None and result.value == b"written later", (
            f"{C}: wait_for_result(timeout=None) must return the result written while it waited, got {result!r}"
        )

    @pytest.mark.asyncio
    async def test_wait_sees_other_instance(
        self, backend: Backend, open_backend: OpenBackend, clock: FakeClock
    ) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        other = await open_backend()
        waiter = asyncio.create_task(other.wait_for_result(lease.id, 10))
        await asyncio.sleep(0)
        await backend.complete(lease, b"from elsewhere")  # no notify_results: another process would not call it
        result = await within(
            waiter, C, "wait_for_result must see a result written by another instance promptly", result_latency()
        )
        assert result is not None and result.value == b"from elsewhere", (
            f"{C}: wait_for_result must see a result written by another backend instance without notification"
        )
