"""PostgresBackend.purge locks its rows in id order, as requeue_many does, in chunks; a deadlock victim runs again.

A purge that deleted every final task in one plain DELETE locked rows in the
order it found them (physical order), while requeue_many locks them in id
order: the two could each hold a row the other waited for, and the server
aborted one of them as a deadlock (``sitq purge`` exit code 2).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import sitq_postgres.backend as pg_backend

from sitq_core.models import Task, new_id
from sitq_postgres import PostgresBackend

from sitq_test_helpers import count_calls

_WAIT = 30.0  # seconds any one wait below may take at most


async def final_tasks(backend: PostgresBackend, ids: list[str]) -> None:
    """Tasks ``ids`` enqueued and cancelled in that order (so stored in that order, whatever their id order)."""
    await backend.enqueue_many([Task(id=task_id, payload=b"p") for task_id in ids])
    for task_id in ids:
        assert await backend.cancel(task_id)


async def blocked_by(watcher: asyncpg.Connection, pid: int) -> None:
    """Until some other session waits for a lock that session ``pid`` holds (bounded)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
    deadline = time.monotonic() + _WAIT
    while not await watcher.fetchval(query, pid):
        assert time.monotonic() < deadline, "nobody came to wait for the held row"
        await asyncio.sleep(0.01)


def lock_row(schema: str, nowait: bool = False) -> str:
    return f'SELECT 1 FROM "{schema}".tasks WHERE id = $1 FOR UPDATE{" NOWAIT" if nowait else ""}'


@pytest.mark.asyncio
async def test_purge_waits_for_the_lowest_id_holding_no_higher_one(pg_dsn: str, pg_schema: str) -> None:
    # "task-b" is stored (and finished) before "task-a": in physical order a plain DELETE locked it first
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await final_tasks(backend, ["task-b", "task-a"])
        holder = await asyncpg.connect(pg_dsn)
        purge: asyncio.Task[int] | None = None
        try:
            async with holder.transaction():
                await holder.execute(lock_row(pg_schema), "task-a")  # as requeue_many starts: the lowest id
                purge = asyncio.create_task(backend.purge())
                await blocked_by(holder, holder.get_server_pid())
                # the purge waits for "task-a" without holding "task-b", so requeue_many's next row is free
                await holder.execute(lock_row(pg_schema, nowait=True), "task-b")
            assert await asyncio.wait_for(purge, _WAIT) == 2
        finally:
            await holder.close()
            if purge is not None:
                await asyncio.wait_for(asyncio.gather(purge, return_exceptions=True), _WAIT)
        assert await backend.get_task("task-a") is None and await backend.get_task("task-b") is None


@pytest.mark.asyncio
async def test_purge_goes_in_chunks_and_counts_exactly(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_PURGE_CHUNK_ROWS", 5)
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        ids = [f"t{index:02d}" for index in range(30)]
        random.Random(7).shuffle(ids)
        final = ids[:23]
        await final_tasks(backend, final)
        await backend.enqueue_many([Task(id=task_id, payload=b"p") for task_id in ids[23:]])  # queued: kept
        calls = count_calls(backend)
        assert await backend.purge() == 23
        assert calls == ["purge"] * 5  # 5 + 5 + 5 + 5 + 3: a short chunk ends it
        assert (await backend.counts())["queued"] == 7
        assert all([await backend.get_result(task_id) is None for task_id in final])
        calls.clear()
        assert await backend.purge() == 0
        assert calls == ["purge"]


@pytest.mark.asyncio
async def test_requeue_many_and_purge_side_by_side_never_deadlock(pg_dsn: str, pg_schema: str) -> None:
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as one,
        PostgresBackend(pg_dsn, schema=pg_schema) as other,
    ):
        for _round in range(4):
            ids = [new_id() for _ in range(800)]
            await one.enqueue_many([Task(id=task_id, payload=b"p") for task_id in ids])
            shuffled = random.sample(ids, len(ids))  # finished (so stored again) in an order unlike the ids'
            for start in range(0, len(shuffled), 50):
                await asyncio.gather(*[one.cancel(task_id) for task_id in shuffled[start : start + 50]])
            answers, purged = await asyncio.gather(one.requeue_many(ids), other.purge())
            assert sum(answers) + purged == len(ids)  # each task requeued or purged, and counted once
            for task_id in ids:
                await one.cancel(task_id)
            await one.purge()


@pytest.mark.asyncio
@pytest.mark.parametrize("operation", ["purge", "requeue_many"])
async def test_a_deadlock_victim_runs_again(
    pg_dsn: str, pg_schema: str, operation: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await final_tasks(backend, ["task-a", "task-b"])
        holder = await asyncpg.connect(pg_dsn)
        call: asyncio.Task[Any] | None = None
        try:
            # the holder checks for deadlocks last, so sitq's session (deadlock_timeout 1 s) is the victim
            await holder.execute("SET deadlock_timeout = '60s'")
            with caplog.at_level(logging.INFO, logger="sitq.postgres"):
                async with holder.transaction():
                    await holder.execute(lock_row(pg_schema), "task-b")
                    if operation == "purge":
                        call = asyncio.create_task(backend.purge())
                    else:
                        call = asyncio.create_task(backend.requeue_many(["task-b", "task-a"]))
                    await blocked_by(holder, holder.get_server_pid())  # sitq's call holds task-a, waits for task-b
                    # closes the circle; returns once the server aborted sitq's transaction as the victim
                    await asyncio.wait_for(holder.execute(lock_row(pg_schema), "task-a"), _WAIT)
                answer = await asyncio.wait_for(call, _WAIT)
        finally:
            await holder.close()
            if call is not None:
                await asyncio.wait_for(asyncio.gather(call, return_exceptions=True), _WAIT)
        assert answer == (2 if operation == "purge" else [True, True])
        warnings = [r for r in caplog.records if r.name == "sitq.postgres" and r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "deadlock" in warnings[0].getMessage()
