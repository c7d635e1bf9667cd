"""LifecycleContract: connect/close, async context manager, reuse after close."""

from __future__ import annotations

import asyncio

import pytest

from ...backend import Backend, Capability
from ..clock import FakeClock
from ..fixtures import BackendFactory, BackendFixtures, OpenBackend, requires
from ._support import exists_of, guard, make_task, within

C = "LifecycleContract"


class LifecycleContract(BackendFixtures):
    """Backend.connect / close / ``async with``."""

    @pytest.mark.asyncio
    async def test_async_context_manager(self, backend: Backend, open_backend: OpenBackend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        other = await open_backend()
        async with other as entered:
            assert entered is other, f"{C}: 'async with backend as b' must bind the backend itself"
            assert await entered.get_task(task.id) is not None, (
                f"{C}: a backend used as 'async with' cannot read a stored task"
            )

    @pytest.mark.asyncio
    async def test_connect_is_idempotent(self, backend: Backend, clock: FakeClock) -> None:
        await backend.connect()
        await backend.connect()
        task = make_task(clock)
        await backend.enqueue(task)
        assert await backend.get_task(task.id) is not None, f"{C}: connect() twice broke the backend"

    @pytest.mark.asyncio
    async def test_close_is_idempotent(self, backend_factory: BackendFactory, clock: FakeClock) -> None:
        fresh = backend_factory()
        fresh.clock = clock
        await fresh.close()  # never connected
        await fresh.connect()
        await fresh.close()
        await fresh.close()

    @pytest.mark.asyncio
    async def test_reconnect_after_close(self, backend: Backend, clock: FakeClock) -> None:
        await backend.close()
        await backend.connect()
        task = make_task(clock)
        await backend.enqueue(task)
        assert await backend.get_task(task.id) is not None, (
            f"{C}: a backend connected again after close() cannot store or read tasks"
        )

    @pytest.mark.asyncio
    async def test_a_cancelled_connect_leaves_the_backend_able_to_connect(
        self, backend_factory: BackendFactory, clock: FakeClock
    ) -> None:
        # a worker stopped while its store was out of reach cancels connect() wherever it waits
        fresh = backend_factory()  # the test's fresh store, connected by nobody yet
        fresh.clock = clock
        try:
            connecting = asyncio.create_task(fresh.connect())
            await asyncio.sleep(0)  # it runs to its first await
            connecting.cancel()
            await asyncio.wait([connecting], timeout=guard())
            assert connecting.done(), f"{C}: a cancelled connect() did not end within {guard():g} s"
            again = asyncio.create_task(fresh.connect())
            await asyncio.wait([again], timeout=guard())
            assert again.done(), f"{C}: connect() after a cancelled connect() did not finish within {guard():g} s"
            assert not again.cancelled(), (
                f"{C}: connect() after a cancelled connect() must connect, but it raised CancelledError too "
                "(is every caller awaiting one shared connect, unshielded?)"
            )
            error = again.exception()
            assert error is None, f"{C}: connect() after a cancelled connect() failed: {error!r}"
            found = await exists_of(fresh, C)
            assert found is not False, (
                f"{C}: connect() after a cancelled connect() must connect as if that had not happened, but "
                "exists() then says the store does not exist (was the backend marked connected before its "
                "first await, or does connect() leave the store to be made at the first write?)"
            )
            task = make_task(clock)
            await fresh.enqueue(task)
            assert await fresh.get_task(task.id) is not None, (
                f"{C}: a backend connected after a cancelled connect() cannot store or read tasks"
            )
        finally:
            await fresh.close()

    @pytest.mark.asyncio
    async def test_cancelling_one_connect_spares_another_caller(
        self, backend_factory: BackendFactory, clock: FakeClock
    ) -> None:
        fresh = backend_factory()
        fresh.clock = clock
        try:
            first = asyncio.create_task(fresh.connect())
            await asyncio.sleep(0)  # the first caller is connecting
            second = asyncio.create_task(fresh.connect())
            await asyncio.sleep(0)  # the second waits for the same connect
            first.cancel()
            await asyncio.wait([first, second], timeout=guard())
            assert second.done(), f"{C}: connect() did not finish within {guard():g} s after another was cancelled"
            assert not second.cancelled(), (
                f"{C}: cancelling one caller's connect() must not cancel another caller waiting for the same "
                "connect (it received the cancellation)"
            )
            error = second.exception()
            assert error is None, f"{C}: connect() failed after another caller's was cancelled: {error!r}"
            task = make_task(clock)
            await fresh.enqueue(task)
            assert await fresh.get_task(task.id) is not None, (
                f"{C}: a backend connected while another caller's connect() was cancelled cannot store or read tasks"
            )
        finally:
            await fresh.close()

    @pytest.mark.asyncio
    async def test_first_call_connects(
        self, backend: Backend, backend_factory: BackendFactory, clock: FakeClock
    ) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        fresh = backend_factory()
        fresh.clock = clock
        try:
            found = await fresh.get_task(task.id)
            assert found is not None, f"{C}: a method called before connect() must connect first"
        finally:
            if fresh is not backend:
                await fresh.close()

    @pytest.mark.asyncio
    async def test_a_store_connect_made_exists_before_its_first_write(self, backend_factory: BackendFactory) -> None:
        fresh = backend_factory()  # the test's fresh store, connected by nobody yet
        try:
            await fresh.connect()
            found = await exists_of(fresh, C)
            assert found is not False, (
                f"{C}: exists() returned False right after connect() made the store (no task stored yet): "
                "connect() must make the store (a file, tables, keys) so that exists() answers True from then "
                "on, or exists() must answer None; a store made only at its first write looks missing to "
                "sitq stats until then"
            )
        finally:
            await fresh.close()

    @pytest.mark.asyncio
    async def test_a_store_holding_tasks_exists(self, backend: Backend, clock: FakeClock) -> None:
        await backend.enqueue(make_task(clock))
        found = await exists_of(backend, C)
        assert found is not False, (
            f"{C}: exists() returned False for a connected store that holds a task "
            "(return True, or None when the backend cannot tell; sitq stats refuses a store that does not exist)"
        )
        assert found is None or isinstance(found, bool), f"{C}: exists() must return True, False or None"

    @pytest.mark.asyncio
    async def test_exists_creates_nothing(self, backend_factory: BackendFactory, clock: FakeClock) -> None:
        fresh = backend_factory()  # the test's fresh store, not connected (``backend`` is not used here)
        fresh.clock = clock
        try:
            first = await within(exists_of(fresh, C), C, "exists() must answer without waiting")
            assert first is None or isinstance(first, bool), f"{C}: exists() must return True, False or None"
            assert first is not True, (
                f"{C}: exists() returned True for the test's fresh store, which nobody has connected to yet "
                "(answer False, or None when the backend cannot tell; sitq stats relies on it)"
            )
            second = await exists_of(fresh, C)
            assert not (first is False and second is not False), (
                f"{C}: exists() must create nothing: it answered False, then {second!r} "
                "(sitq stats asks it first, and a mistyped store must not be created)"
            )
        finally:
            await fresh.close()

    @pytest.mark.asyncio
    async def test_now_reads_the_clock(self, backend: Backend, clock: FakeClock) -> None:
        assert backend.now() == clock.now(), (
            f"{C}: backend.now() must return backend.clock() (do not override now() to read the wall clock)"
        )

    @requires(Capability.PERSISTENT)
    @pytest.mark.asyncio
    async def test_tasks_survive_reopen(
        self, backend: Backend, backend_factory: BackendFactory, clock: FakeClock
    ) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        await backend.close()
        reopened = backend_factory()
        reopened.clock = clock
        async with reopened:
            found = await reopened.get_task(task.id)
            assert found is not None, f"{C}: PERSISTENT backend lost a task after close() and reopen"
            assert found.payload == task.payload, f"{C}: PERSISTENT backend changed a payload across reopen"
