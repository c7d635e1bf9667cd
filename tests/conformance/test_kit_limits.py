"""The kit's short per-call limits grow with SITQ_KIT_TIMEOUT, the documented knob for a slow CI machine."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sitq_core.backend import Backend
from sitq_core.models import ReservedTask, Task
from sitq_core.testing import ConcurrencyContract, FakeClock
from sitq_core.testing.suite import _support
from sitq_dictstore import DictStoreBackend
from sitq_sqlite import SQLiteBackend


@pytest.mark.parametrize(
    ("setting", "guard", "latency"),
    [(None, 5.0, 1.0), ("120", 5.0, 1.0), ("600", 25.0, 5.0), ("1", 5.0, 1.0)],
)
def test_per_call_limits_follow_the_kit_timeout(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, guard: float, latency: float
) -> None:
    """Raised above its default (120 s) it stretches them in proportion; lowered, they keep their defaults."""
    if setting is None:
        monkeypatch.delenv("SITQ_KIT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("SITQ_KIT_TIMEOUT", setting)
    assert (_support.guard(), _support.result_latency()) == (guard, latency)


class _SlowReserve(DictStoreBackend):
    """Takes 50 ms per reserve: slower than the tiny SITQ_KIT_TIMEOUT the tests below set."""

    async def reserve(self, **kwargs: Any) -> list[ReservedTask]:
        await asyncio.sleep(0.05)
        return await super().reserve(**kwargs)


@pytest.mark.asyncio
async def test_the_threads_drain_limit_says_it_is_half_the_kit_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread contract stops its threads at half of SITQ_KIT_TIMEOUT; its failure says so, not a bare 0.1 s."""
    monkeypatch.setenv("SITQ_KIT_TIMEOUT", "0.2")
    clock, store = FakeClock(), uuid.uuid4().hex

    def factory() -> Backend:
        instance = _SlowReserve(store=store)
        instance.clock = clock
        return instance

    backend = factory()
    await backend.connect()
    try:
        with pytest.raises(pytest.fail.Exception) as info:
            await ConcurrencyContract().test_reservers_on_other_threads_and_loops(backend, factory, clock)
    finally:
        await backend.close()
    assert "within 0.1 s (half of SITQ_KIT_TIMEOUT=0.2" in str(info.value), str(info.value)


class _LockedAfterEnqueue(SQLiteBackend):
    """Takes the file's write lock (a plain ``sqlite3`` connection's ``BEGIN IMMEDIATE``) once the tasks are in.

    The reserver processes then connect (that needs no write lock) but wait at
    their first reserve for as long as the test holds it: they cannot finish,
    however fast the machine, so the drain limit is what ends them.
    """

    holder: sqlite3.Connection | None = None

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        ids = await super().enqueue_many(tasks)
        self.holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.holder.execute("BEGIN IMMEDIATE")
        return ids

    def release(self) -> None:
        if self.holder is not None:
            self.holder.rollback()
            self.holder.close()
            self.holder = None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_process_drain_limit_says_it_is_half_the_kit_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The multi-process contract gives its processes half of SITQ_KIT_TIMEOUT; its failure says so.

    With SITQ_KIT_TIMEOUT=0.2 the whole test's own limit (0.2 s from its start, the enqueue and the
    process starts included) fired first on a loaded machine. Here the processes cannot finish (the
    write lock is held) and the drain limit (5 s, counted once the processes are started) comes 5 s
    before the whole test's (10 s), so the drain limit is the one that fires.
    """
    monkeypatch.setenv("SITQ_KIT_TIMEOUT", "10")
    clock = FakeClock()
    backend = _LockedAfterEnqueue(tmp_path / "tasks.db")
    backend.clock = clock
    await backend.connect()
    try:
        with pytest.raises(pytest.fail.Exception) as info:
            await ConcurrencyContract().test_reservers_in_separate_processes(
                # busy_timeout: the processes wait for the lock until the kit kills them, instead of failing
                backend,
                f"sqlite:///{tmp_path / 'tasks.db'}?busy_timeout=600",
                clock,
            )
    finally:
        backend.release()
        await backend.close()
    assert backend.holder is None
    assert "did not start and drain 300 tasks within 5 s (half of SITQ_KIT_TIMEOUT=10" in str(info.value), str(
        info.value
    )


@pytest.mark.asyncio
async def test_processes_that_reach_another_store_are_told_backend_url_must_reach_this_one() -> None:
    """An in-memory store is one per process: reserver processes opening ``backend_url`` find none of the tasks."""
    clock, store = FakeClock(), uuid.uuid4().hex
    backend = DictStoreBackend(store=store)  # the children's dictstore://?store=... is a fresh, empty dict
    backend.clock = clock
    await backend.connect()
    try:
        with pytest.raises(pytest.fail.Exception) as info:
            await ConcurrencyContract().test_reservers_in_separate_processes(
                backend, f"dictstore://?store={store}", clock
            )
    finally:
        await backend.close()
    message = str(info.value)
    assert "reserver processes missed 300 due tasks" in message, message
    assert "backend_url must reach the same store" in message and "MULTI_PROCESS" in message, message
