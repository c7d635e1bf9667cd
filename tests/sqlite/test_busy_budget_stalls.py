"""busy_timeout counts time spent waiting for the lock, not time the process was stopped (SIGSTOP, a paused VM).

Before, a worker frozen for 6 s in the middle of a call failed the first
ordinary busy after it resumed at once ("stayed locked for more than
busy_timeout=5.0s ... another connection holds the write lock"): the deadline
had been set before the freeze. A controllable clock stands in for the freeze.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import sitq_sqlite.connections as connections
from sitq_sqlite import SQLiteBackend
from sitq_sqlite.backend import _BusyBudget


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_long_stall_counts_as_at_most_one_step() -> None:
    clock = Clock()
    budget = _BusyBudget(5.0, None, clock)
    clock.now += 6.0  # frozen (SIGSTOP) between the call's start and its first busy
    assert not budget.used_up(), "a stall is not time spent waiting for the lock"
    for _ in range(3):  # ordinary waits: 3 s of them still fit
        clock.now += 1.0
        assert not budget.used_up()
    clock.now += 0.9
    assert not budget.used_up()
    clock.now += 0.2
    assert budget.used_up()


def test_ordinary_waits_use_the_budget_up_as_before() -> None:
    clock = Clock()
    budget = _BusyBudget(0.5, None, clock)
    for _ in range(49):
        clock.now += 0.01
        assert not budget.used_up()
    clock.now += 0.011
    assert budget.used_up()
    assert _BusyBudget(0.0, None, clock).used_up(), "busy_timeout=0: the first busy fails"


def test_time_queued_behind_other_jobs_counts_from_the_call() -> None:
    clock = Clock()
    since = clock.now
    clock.now += 4.9  # waited in the thread's queue behind another job
    budget = _BusyBudget(5.0, since, clock)
    clock.now += 0.2
    assert not budget.used_up(), "each job still gets a short wait of its own"
    clock.now += 0.1
    assert budget.used_up()


@pytest.mark.asyncio
async def test_a_call_frozen_mid_way_waits_out_an_ordinary_busy_after_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real lock held elsewhere for a few attempts after the 'freeze': the call waits for it and succeeds."""
    clock = Clock()
    monkeypatch.setattr(connections, "_busy_clock", clock)
    path = tmp_path / "frozen.db"
    backend = SQLiteBackend(path, busy_timeout=5)
    async with backend:
        await backend.counts()
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # used on the thread's job
        attempts = 0

        def body(conn: sqlite3.Connection) -> int:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                clock.now += 6.0  # the process was stopped for 6 s in the middle of the call
                blocker.execute("BEGIN IMMEDIATE")  # and meanwhile another connection took the lock, briefly
            elif attempts == 4:
                blocker.execute("COMMIT")
            else:
                clock.now += 0.01
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO probe VALUES (1)")
            conn.execute("COMMIT")
            return attempts

        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE probe (x)")
        try:
            assert await backend._run("enqueue", body) == 4
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
