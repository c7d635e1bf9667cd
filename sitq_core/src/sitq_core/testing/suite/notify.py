"""NotifyContract: waiters wake on notifications instead of sleeping out their timeout."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ...backend import Backend, Capability
from ..clock import FakeClock
from ..fixtures import BackendFixtures, OpenBackend, requires
from ._support import enqueue_and_reserve, guard, is_aware_utc, make_task, result_latency, scaled, within

C = "NotifyContract"
LONG = 30.0  # a waiter that sleeps this long would hit the guard below
PROMPT = 0.1  # seconds a notified waiter may take in its fastest try (at the default SITQ_KIT_TIMEOUT)
PROMPT_TRIES = 5
PROMPT_HEAD_START = 0.02  # seconds the waiter runs before the result is written


class NotifyContract(BackendFixtures):
    """Backend.wait_for_work, notify_work/notify_results and next_eta."""

    @pytest.mark.asyncio
    async def test_wait_for_work_wakes_on_enqueue_notice(self, backend: Backend, clock: FakeClock) -> None:
        waiter = asyncio.create_task(backend.wait_for_work(LONG))
        await asyncio.sleep(0)
        await backend.enqueue(make_task(clock))
        backend.notify_work()
        try:
            await asyncio.wait_for(waiter, guard())
        except TimeoutError:
            pytest.fail(f"{C}: wait_for_work did not wake on notify_work()")

    @pytest.mark.asyncio
    async def test_wait_for_work_times_out(self, backend: Backend) -> None:
        await within(backend.wait_for_work(0.01), C, "wait_for_work(0.01) must return once its timeout passes")

    @pytest.mark.asyncio
    async def test_wait_for_result_wakes_on_notice(self, backend: Backend, clock: FakeClock) -> None:
        lease = await enqueue_and_reserve(backend, clock, C)
        waiter = asyncio.create_task(backend.wait_for_result(lease.id, LONG))
        await asyncio.sleep(0)
        await backend.complete(lease, b"v")
        backend.notify_results([lease.id])
        latency = result_latency()
        try:
            result = await asyncio.wait_for(waiter, latency)
        except TimeoutError:
            pytest.fail(f"{C}: wait_for_result did not wake on notify_results() within {latency:g} s")
        assert result is not None, f"{C}: wait_for_result woke but returned None"

    @pytest.mark.asyncio
    async def test_wait_for_result_wakes_on_notice_without_polling(self, backend: Backend, clock: FakeClock) -> None:
        # A waiter that ignores notify_results() and re-reads every few hundred ms still sees the
        # result within result_latency() above. Here the result is written a little after the waiter
        # started, so such a poller answers only at its next read; a waiter that wakes on the notice
        # answers within milliseconds. One fast try of a few proves the wake-up (a slow machine may
        # stall any one try), so this stays reliable on a busy CI.
        limit = scaled(PROMPT)
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        for _ in range(PROMPT_TRIES):
            lease = await enqueue_and_reserve(backend, clock, C)
            waiter = asyncio.create_task(backend.wait_for_result(lease.id, LONG))
            await asyncio.wait({waiter}, timeout=PROMPT_HEAD_START)  # let a poller make its first read
            if waiter.done():
                pytest.fail(f"{C}: wait_for_result returned {waiter.result()!r} before the result was written")
            await backend.complete(lease, b"v")
            backend.notify_results([lease.id])
            written = loop.time()
            result = await within(waiter, C, "wait_for_result must wake on notify_results()", result_latency())
            latencies.append(loop.time() - written)
            assert result is not None, f"{C}: wait_for_result woke but returned None"
            if latencies[-1] <= limit:
                return
        pytest.fail(
            f"{C}: wait_for_result must return as soon as notify_results() announces the result; it took "
            f"{', '.join(f'{seconds:.3f}' for seconds in latencies)} s in {PROMPT_TRIES} tries (none within "
            f"{limit:g} s): it seems to re-read on a timer instead of waking on the notice"
        )

    @requires(Capability.CROSS_PROCESS_NOTIFY)
    @pytest.mark.asyncio
    async def test_wait_for_work_sees_other_instance(
        self, backend: Backend, open_backend: OpenBackend, clock: FakeClock
    ) -> None:
        other = await open_backend()
        waiter = asyncio.create_task(other.wait_for_work(LONG))
        await asyncio.sleep(0)
        await backend.enqueue(make_task(clock))  # no notify_work: another process would not call it
        try:
            await asyncio.wait_for(waiter, guard())
        except TimeoutError:
            pytest.fail(
                f"{C}: CROSS_PROCESS_NOTIFY backend's wait_for_work missed another instance's enqueue (the "
                "default wait_for_work wakes only on this process's notify_work(): override it to watch the "
                "store, or do not declare CROSS_PROCESS_NOTIFY)"
            )

    @pytest.mark.asyncio
    async def test_next_eta(self, backend: Backend, clock: FakeClock) -> None:
        eta = clock.now() + timedelta(seconds=42)
        await backend.enqueue(make_task(clock, eta=eta))
        await backend.enqueue(make_task(clock, eta=eta + timedelta(seconds=5)))
        found = await backend.next_eta()
        if found is None:
            return  # "unknown" is allowed
        assert is_aware_utc(found), f"{C}: next_eta must be aware UTC, got {found!r}"
        assert found == eta, f"{C}: next_eta must be the earliest eta of a queued task ({eta}), got {found}"
        assert await backend.next_eta(queues=["nothing-here"]) is None, (
            f"{C}: next_eta(queues=[...]) of an empty queue must be None"
        )

    @pytest.mark.asyncio
    async def test_next_eta_counts_a_running_tasks_lease_expiry(self, backend: Backend, clock: FakeClock) -> None:
        await backend.enqueue(make_task(clock, eta=clock.now() + timedelta(hours=1)))
        lease = await enqueue_and_reserve(backend, clock, C)
        found = await backend.next_eta()
        if found is None:
            return  # "unknown" is allowed
        assert found == lease.lease_expires_at, (
            f"{C}: next_eta must be the earliest eta of a queued task or lease expiry of a running one "
            f"({lease.lease_expires_at}), got {found}"
        )
