"""PostgresBackend.cancel decides on one view of the task, whatever a worker's finish commits meanwhile.

cancel ran two statements: "cancel if queued", then "request the cancel if
running". A worker's retry or give-back of the task committing between them
made the first see it running and the second see it queued: cancel returned
False, changed nothing, and the task ran again (the spec says False only for a
final or unknown task). Here the interleaving is forced: a second session holds
the row of another task of the same finish, so the finish has moved the task
(uncommitted) and waits; the cancel then waits on the task's row; the second
session lets go and both go on.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq_core.models import LeaseState, Outcome, OutcomeKind, ReservedTask, Task, TaskStatus
from sitq_postgres import PostgresBackend

_WAIT = 30.0  # seconds any one wait below may take at most


async def blocked_by(watcher: asyncpg.Connection, pid: int) -> int:
    """The pid of a session waiting for a lock that session ``pid`` holds, once there is one (bounded)."""
    query = "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1"
    deadline = time.monotonic() + _WAIT
    while (waiting := await watcher.fetchval(query, pid)) is None:
        assert time.monotonic() < deadline, f"no session came to wait for session {pid}"
        await asyncio.sleep(0.01)
    return int(waiting)


def outcome(kind: OutcomeKind, lease: ReservedTask) -> Outcome:
    if kind == "retry":
        return Outcome(lease.id, lease.lease_token, "retry", error="boom", retry_at=datetime.now(UTC))
    if kind == "success":
        return Outcome(lease.id, lease.lease_token, "success", value=b"v")
    return Outcome(lease.id, lease.lease_token, kind)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["retry", "release", "success"])
async def test_a_cancel_waiting_behind_a_finish_of_the_task_answers_on_what_it_committed(
    pg_dsn: str, pg_schema: str, kind: OutcomeKind
) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.enqueue_many([Task(id="a1", payload=b"p"), Task(id="b1", payload=b"p")])
        leases = {lease.id: lease for lease in await backend.reserve(worker_id="w", limit=2, lease_seconds=60)}
        holder = await asyncpg.connect(pg_dsn)
        watcher = await asyncpg.connect(pg_dsn)
        started: list[asyncio.Task[object]] = []
        try:
            async with holder.transaction():
                await holder.execute(f'SELECT 1 FROM "{pg_schema}".tasks WHERE id = $1 FOR UPDATE', "b1")
                finish = asyncio.create_task(
                    backend.finish_many([outcome(kind, leases["a1"]), outcome("success", leases["b1"])])
                )
                started.append(finish)  # type: ignore[arg-type]
                # rows go in id order: the finish holds "a1" (moved, uncommitted) and waits for "b1"
                finisher = await blocked_by(watcher, holder.get_server_pid())
                cancel = asyncio.create_task(backend.cancel("a1"))
                started.append(cancel)  # type: ignore[arg-type]
                await blocked_by(watcher, finisher)  # the cancel waits for "a1"
            # the holder let go: the finish commits, then the cancel goes on
            assert await asyncio.wait_for(finish, _WAIT) == [True, True]
            answer = await asyncio.wait_for(cancel, _WAIT)
        finally:
            await holder.close()
            await watcher.close()
            await asyncio.wait_for(asyncio.gather(*started, return_exceptions=True), _WAIT)
        task = await backend.get_task("a1")
        assert task is not None
        if kind == "success":  # final before the cancel looked: nothing to cancel
            assert (answer, task.status) == (False, TaskStatus.SUCCESS)
        else:  # queued again before the cancel looked: cancelled, never run again
            assert (answer, task.status, task.error) == (True, TaskStatus.CANCELLED, "cancelled")
            assert await backend.reserve(worker_id="w", limit=1, lease_seconds=60) == []
        result = await backend.get_result("a1")
        assert result is not None and result.status == task.status


@pytest.mark.asyncio
async def test_a_cancel_waiting_behind_a_heartbeat_of_a_running_task_requests_the_cancel(
    pg_dsn: str, pg_schema: str
) -> None:
    """The running branch after a wait: the cancel is requested, and the worker's next heartbeat hears it."""
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.enqueue(Task(id="a1", payload=b"p"))
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=60)
        holder = await asyncpg.connect(pg_dsn)
        watcher = await asyncpg.connect(pg_dsn)
        cancel: asyncio.Task[bool] | None = None
        try:
            async with holder.transaction():
                await holder.execute(f'SELECT 1 FROM "{pg_schema}".tasks WHERE id = $1 FOR UPDATE', "a1")
                cancel = asyncio.create_task(backend.cancel("a1"))
                await blocked_by(watcher, holder.get_server_pid())
            assert await asyncio.wait_for(cancel, _WAIT) is True
        finally:
            await holder.close()
            await watcher.close()
            if cancel is not None:
                await asyncio.wait_for(asyncio.gather(cancel, return_exceptions=True), _WAIT)
        task = await backend.get_task("a1")
        assert task is not None and (task.status, task.cancel_requested) == (TaskStatus.RUNNING, True)
        assert await backend.heartbeat([("a1", lease.lease_token)], 60) == {"a1": LeaseState.CANCEL_REQUESTED}
        assert await backend.get_result("a1") is None
