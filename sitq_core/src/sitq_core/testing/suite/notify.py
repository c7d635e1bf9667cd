"""NotifyContract: waiters wake on notifications instead of sleeping out their timeout."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ...backend import Backend, Capability
from ..clock import FakeClock
from ..fixtures import BackendFixtures, OpenBackend, requires
from ._support import enqueue_and_reserve, guard, is_aware_utc, make_task, result_latency, within

C = "NotifyContract"
LONG = 30.0  # a waiter that sleeps this long would hit the guard below


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
            pytest.fail(f"{C}: CROSS_PROCESS_NOTIFY backend's wait_for_work missed another instance's enqueue")

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
