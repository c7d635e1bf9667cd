"""ConcurrencyContract: concurrent reservers never share a task while it is leased."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import pytest

from ...backend import Backend, Capability
from ...models import LeaseState, ReservedTask
from ..answers import WrongAnswer
from ..clock import FakeClock
from ..fixtures import (
    TIMEOUT_VARIABLE,
    BackendFactory,
    BackendFixtures,
    OpenBackend,
    kit_timeout,
    naive_time_failure,
    requires,
)
from ._support import LEASE, make_task, stored_hint

C = "ConcurrencyContract"
RESERVERS = 8
THREADS = 2
TASKS = 60
PROCESSES = 3
PROCESS_TASKS = 300


def drain_limit() -> float:
    """Seconds the thread and process contracts give their reservers: half of ``SITQ_KIT_TIMEOUT`` (60 s by default).

    Shorter than the whole test's limit on purpose: the kit stops the threads or kills the processes
    itself and says which part hung, instead of the test's own timeout firing with the reservers still
    running; the other half covers the enqueue before and the checks after.
    """
    return kit_timeout() / 2


def _share(limit: float, part: str) -> str:
    """``limit`` as a failure message gives it: where the number comes from, and the knob that raises it."""
    return f"{limit:g} s ({part} of {TIMEOUT_VARIABLE}={kit_timeout():g}; raise {TIMEOUT_VARIABLE} if merely slow)"


def _elsewhere(foreign: int) -> str:
    """The hint for reserver processes that completed none of the test's tasks: they reached another store."""
    saw = f"completed {foreign} task(s) this test never enqueued" if foreign else "found no task at all"
    return (
        f"; the processes {saw}, so the 'backend_url' fixture evidently opens another store "
        "than the test's backend: backend_url must reach the same store as the test's backend (an in-memory "
        "store is one per process and cannot pass: do not declare MULTI_PROCESS for it)"
    )


async def _check_shared_store(backend: Backend, others: list[Backend], clock: FakeClock) -> None:
    probe = make_task(clock, queue="sitq-probe")
    await backend.enqueue(probe)
    for other in others:
        if await other.get_task(probe.id) is None:
            pytest.fail(
                "backend_factory must return backends on one shared store (or the same instance); "
                "a task enqueued on one instance is invisible to another"
            )
    await backend.cancel(probe.id)


class ConcurrencyContract(BackendFixtures):
    """Many reservers (on separate instances when the factory makes them) racing for tasks."""

    @pytest.mark.asyncio
    async def test_concurrent_reservers_never_share(
        self, backend: Backend, open_backend: OpenBackend, clock: FakeClock
    ) -> None:
        reservers = [await open_backend() for _ in range(RESERVERS)]
        await _check_shared_store(backend, reservers, clock)
        tasks = [make_task(clock) for _ in range(TASKS)]
        await backend.enqueue_many(tasks)
        seen: dict[str, str] = {}
        duplicates: list[str] = []

        async def drain(instance: Backend, worker_id: str) -> None:
            while True:
                got: list[ReservedTask] = await instance.reserve(
                    worker_id=worker_id, limit=3, lease_seconds=LEASE, queues=["default"]
                )
                if not got:
                    return
                for lease in got:
                    if lease.id in seen:
                        duplicates.append(f"{lease.id} to {seen[lease.id]} and {worker_id}")
                    seen[lease.id] = worker_id
                await asyncio.sleep(0)

        await asyncio.gather(*(drain(b, f"w{i}") for i, b in enumerate(reservers)))
        assert not duplicates, f"{C}: reserve handed out a task that is still leased: {duplicates[:3]}"
        if set(seen) != {t.id for t in tasks}:
            missed = len({t.id for t in tasks} - set(seen))
            pytest.fail(f"{C}: concurrent reservers missed {missed} due tasks{await stored_hint(backend, tasks)}")

    @pytest.mark.asyncio
    async def test_concurrent_enqueue_and_finish(
        self, backend: Backend, open_backend: OpenBackend, clock: FakeClock
    ) -> None:
        instances = [await open_backend() for _ in range(4)]
        batches = [[make_task(clock) for _ in range(10)] for _ in instances]
        await asyncio.gather(*(b.enqueue_many(batch) for b, batch in zip(instances, batches, strict=True)))
        leases = await backend.reserve(worker_id="w", limit=100, lease_seconds=LEASE)
        assert len(leases) == 40, f"{C}: concurrent enqueue_many calls lost tasks: {len(leases)} of 40 due"
        results = await asyncio.gather(
            *(instances[i % 4].complete(lease, lease.id.encode()) for i, lease in enumerate(leases))
        )
        assert all(results), f"{C}: concurrent completes with current leases must all be accepted"
        for lease in leases:
            result = await backend.get_result(lease.id)
            assert result is not None and result.value == lease.id.encode(), (
                f"{C}: concurrent completes mixed up results"
            )

    @pytest.mark.asyncio
    async def test_reservers_on_other_threads_and_loops(
        self, backend: Backend, backend_factory: BackendFactory, clock: FakeClock
    ) -> None:
        """Instances on two threads, each with its own event loop, on one store: every backend, not only MULTI_PROCESS.

        A ``SyncTaskQueue`` runs its own loop in a thread beside a ``Worker``'s loop, so a lock, connection or pool
        bound to one event loop and shared through the store (a class attribute, a module global) breaks there:
        "... is bound to a different event loop", or a waiter that is never woken.
        """
        tasks = [make_task(clock) for _ in range(TASKS)]
        await backend.enqueue_many(tasks)
        loop = asyncio.get_running_loop()
        limit, outer = drain_limit(), kit_timeout() * 3 / 4  # a thread ends itself first, then the test fails
        slots: list[list[str]] = [[] for _ in range(THREADS)]
        errors: list[BaseException] = []
        finished = asyncio.Semaphore(0)

        async def drain(instance: Backend, slot: list[str], worker_id: str) -> None:
            while leases := await instance.reserve(worker_id=worker_id, limit=2, lease_seconds=LEASE):
                states = await instance.heartbeat([(lease.id, lease.lease_token) for lease in leases], LEASE)
                for lease in leases:
                    if states.get(lease.id) == LeaseState.HELD and await instance.complete(lease, lease.id.encode()):
                        slot.append(lease.id)
                await asyncio.sleep(0)  # let the other coroutines of this loop in: they contend for the store

        async def thread_main(slot: list[str], name: str) -> None:
            instance = backend_factory()  # the test's own instance when the store cannot be shared: used as is
            instance.clock = clock
            async with asyncio.timeout(limit):  # a loop waiting on a future nobody wakes ends here
                await instance.connect()
                try:
                    await asyncio.gather(*(drain(instance, slot, f"{name}-{n}") for n in range(3)))
                finally:
                    if instance is not backend:  # closing the shared one would end the other thread's work
                        await instance.close()

        def run(slot: list[str], name: str) -> None:
            try:
                asyncio.run(thread_main(slot, name))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)
            finally:
                loop.call_soon_threadsafe(finished.release)

        threads = [
            # daemon: a thread stuck for good (a lock nobody releases) must not keep pytest from exiting
            threading.Thread(target=run, args=(slot, f"thread-{n}"), name=f"sitq-kit-{n}", daemon=True)
            for n, slot in enumerate(slots)
        ]
        for thread in threads:
            thread.start()
        try:
            async with asyncio.timeout(outer):
                for _ in threads:
                    await finished.acquire()
        except TimeoutError:
            pytest.fail(
                f"{C}: backends used from {THREADS} threads, each with its own event loop, did not finish within "
                f"{_share(outer, 'three quarters')}: a call blocks its thread for good (a lock or connection "
                "shared across event loops?)"
            )
        if errors:
            error = errors[0]
            if isinstance(error, WrongAnswer):  # a method returned the wrong type: it says which, and it is no lock
                raise error
            naive = naive_time_failure(error)
            if naive is not None:  # not a lock bound to another loop: the advice below would mislead
                pytest.fail(f"{C}: {naive}")
            hint = (
                " (every instance must work on its own thread and event loop: keep asyncio locks, connections and "
                "pools per event loop, never in state shared by instances or threads)"
            )
            if isinstance(error, TimeoutError):
                pytest.fail(
                    f"{C}: a backend used from another thread with its own event loop did not finish within "
                    f"{_share(limit, 'half')}: a waiter was never woken{hint}"
                )
            pytest.fail(f"{C}: a backend used from another thread with its own event loop failed: {error!r}{hint}")
        flat = [task_id for slot in slots for task_id in slot]
        assert len(flat) == len(set(flat)), f"{C}: reserve handed out a task that is still leased (across threads)"
        if set(flat) != {t.id for t in tasks}:
            hint = await stored_hint(backend, tasks)
            pytest.fail(f"{C}: reservers on other threads and loops missed due tasks{hint}")
        for task in tasks[:: TASKS // 6]:
            result = await backend.get_result(task.id)
            assert result is not None and result.value == task.id.encode(), (
                f"{C}: a result written from another thread and event loop reads back wrong: {result!r}"
            )

    @requires(Capability.MULTI_PROCESS)
    @pytest.mark.asyncio
    async def test_reservers_in_separate_processes(
        self, backend: Backend, backend_url: str | dict[str, Any] | None, clock: FakeClock
    ) -> None:
        """Real processes racing for one store: each task is completed exactly once."""
        if backend_url is None:
            pytest.skip(
                "declares MULTI_PROCESS, but the 'backend_url' fixture is None: the cross-process contract did "
                "not run; override 'backend_url' (a URL or config that another process can open) to run it"
            )
        tasks = [make_task(clock) for _ in range(PROCESS_TASKS)]
        await backend.enqueue_many(tasks)
        spec = json.dumps(backend_url)
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sitq_core.testing.process_reserver",
                spec,
                clock.now().isoformat(),
                f"process-{n}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for n in range(PROCESSES)
        ]
        limit = drain_limit()  # the kit kills the processes and says so before the whole test's limit
        try:
            async with asyncio.timeout(limit) as scope:
                for child in children:  # all connected: let them race
                    assert child.stdout is not None
                    line = await child.stdout.readline()
                    if line.strip() != b"READY":
                        _out, err = await child.communicate()
                        pytest.fail(f"{C}: a reserver process did not start: {err.decode(errors='replace')[-2000:]}")
                outputs = await asyncio.gather(*(child.communicate(b"go\n") for child in children))
        except TimeoutError:
            if not scope.expired():
                raise
            pytest.fail(
                f"{C}: {PROCESSES} reserver processes did not start and drain {PROCESS_TASKS} tasks within "
                f"{_share(limit, 'half')}: reserve or finish hangs across processes"
            )
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        completed: list[str] = []
        for child, (out, err) in zip(children, outputs, strict=True):
            assert child.returncode == 0, f"{C}: a reserver process failed: {err.decode(errors='replace')[-2000:]}"
            completed += json.loads(out.decode().strip().splitlines()[-1])
        assert len(completed) == len(set(completed)), (
            f"{C}: one task was completed by two processes: reserve handed out a task that is still leased"
        )
        ids = {t.id for t in tasks}
        if set(completed) != ids:
            missed = len(ids - set(completed))
            hint = await stored_hint(backend, tasks)
            if not ids & set(completed):  # not one of them: the processes opened another store
                hint += _elsewhere(len(completed))
            pytest.fail(f"{C}: reserver processes missed {missed} due tasks{hint}")
        for task in tasks[:: max(1, PROCESS_TASKS // 10)]:
            result = await backend.get_result(task.id)
            assert result is not None and result.value == task.id.encode(), (
                f"{C}: a result written by another process reads back wrong"
            )
