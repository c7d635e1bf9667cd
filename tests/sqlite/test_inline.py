"""The inline fast path: when it runs on the caller's thread and when it steps aside."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq_sqlite.inline import Fallback, InlinePath


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "inline.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.close()
    return path


@pytest.fixture
def inline(db_path: Path) -> Iterator[InlinePath]:
    def opener() -> sqlite3.Connection:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")
        return conn

    path = InlinePath(opener, budget=0.002, cooldown=60.0)
    yield path
    path.close_all()


class Clock:
    """Stands in for the disk's speed: each call 'takes' the duration set here."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.step = 0.0
        monkeypatch.setattr("sitq_sqlite.inline.time.perf_counter", self.perf_counter)

    def perf_counter(self) -> float:
        self.now += self.step / 2  # read twice per call: before and after
        return self.now


def insert(conn: sqlite3.Connection) -> int:
    return conn.execute("INSERT INTO t (v) VALUES (1)").rowcount


def test_one_slow_call_does_not_switch_inline_off(inline: InlinePath, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    clock.step = 0.0002
    for _ in range(20):
        inline.run(insert, write=True)
    clock.step = 0.010  # a checkpoint: one 10 ms outlier
    inline.run(insert, write=True)
    clock.step = 0.0002
    assert inline.run(insert, write=True) == 1  # still inline, no Fallback


def test_steadily_slow_calls_switch_inline_off(inline: InlinePath, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    clock.step = 0.005  # a slow disk: every call takes 5 ms
    with pytest.raises(Fallback):
        for _ in range(50):
            inline.run(insert, write=True)


def test_busy_database_falls_back_and_keeps_nothing(inline: InlinePath, db_path: Path) -> None:
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Fallback):
            inline.run(insert, write=True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert inline.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0], write=False) == 0


def test_execute_commits_one_statement_and_steps_aside_when_busy(inline: InlinePath, db_path: Path) -> None:
    inline.execute("INSERT INTO t (v) VALUES (?)", (7,))
    reader = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert reader.execute("SELECT v FROM t").fetchall() == [(7,)]  # committed: visible elsewhere
        reader.execute("BEGIN IMMEDIATE")
        with pytest.raises(Fallback):
            inline.execute("INSERT INTO t (v) VALUES (?)", (8,))
        reader.execute("ROLLBACK")
        assert reader.execute("SELECT v FROM t").fetchall() == [(7,)]
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_a_loop_of_inline_enqueues_lets_other_coroutines_run(tmp_path: Path) -> None:
    """Inline calls never suspend; a long loop of them must still yield to the event loop now and then."""
    import asyncio
    import time

    from sitq import SQLiteBackend, TaskQueue

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with TaskQueue(SQLiteBackend(tmp_path / "fair.db")) as queue:
        await queue.enqueue(print)  # connected, inline path warm
        background = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        ticks = 0
        began = time.monotonic()
        count = 0
        while time.monotonic() - began < 0.05 and count < 20_000:  # 50 ms of back-to-back enqueues
            await queue.enqueue(print)
            count += 1
        seen = ticks
        background.cancel()
    assert seen >= 2, f"the event loop ran other coroutines {seen} times during 50 ms of {count} enqueues"
