"""Workers serving named queues (``queues=[...]``, ``--queues``) read an index of their own queues.

The claim and ``next_eta`` of such a worker filtered every active task with
``queue = ANY(...)``: a Seq Scan of ``tasks`` on every claim and every idle
check once the table was large (200,000 tasks in another queue: 80-98 ms a
claim that found nothing).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from sitq_test_postgres import dsn_with, temporary_role

from sitq_core.models import Task, new_id
from sitq_postgres import PostgresBackend

#: Enough active tasks in one queue that a filter over them plans as a Seq Scan (checked below).
BACKLOG = 20_000


async def _backlog(conn: Any, schema: str, n: int = BACKLOG) -> None:
    """``n`` due tasks in queue ``default`` (one INSERT: the test is about the plan, not about enqueue)."""
    await conn.execute(
        f'INSERT INTO "{schema}".tasks (id, queue, status, priority, due, eta, payload, serializer, function_name, '
        "max_retries, retry_backoff, max_lease_expiries, enqueued_at) "
        "SELECT 'b' || g, 'default', 'queued', 0, now() - interval '1 hour', now() - interval '1 hour', "
        "'\\x00', 'pickle', 'f', 0, 1, 3, now() FROM generate_series(1, $1) AS g",
        n,
    )
    await conn.execute(f'ANALYZE "{schema}".tasks')


async def _plan(conn: Any, statement: str, *args: Any, generic: bool = False, before: str = "") -> str:
    """EXPLAIN ANALYZE of ``statement`` after ``before``, all rolled back (a claim's locks included)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        if before:
            await conn.execute(before)
        if generic:  # the plan a prepared statement settles on after five runs
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {statement}", *args)
    finally:
        await transaction.rollback()
    return "\n".join(row[0] for row in rows)


@pytest_asyncio.fixture
async def loaded(pg_dsn: str, pg_schema: str) -> AsyncIterator[tuple[PostgresBackend, Any]]:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    await backend.connect()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _backlog(conn, pg_schema)
        yield backend, conn
    finally:
        await conn.close()
        await backend.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("queues", [["rare"], ["rare", "other"], ["default"], ["rare", "default"]])
async def test_a_claim_of_named_queues_reads_their_index_not_the_table(
    loaded: tuple[PostgresBackend, Any], queues: list[str], generic: bool
) -> None:
    backend, conn = loaded
    sql = backend._sql
    now = backend.now()
    # the filter it was, over the indexes there were: the backlog is large enough that it reads the table
    old = sql.candidates.replace("WHERE ", "WHERE queue = ANY($3::text[]) AND ", 1)
    without = f'DROP INDEX "{backend.schema}".tasks_claim_queue'
    assert "Seq Scan on tasks" in await _plan(conn, old, now, 16, ["rare"], before=without), "too small to tell"
    claim = await _plan(conn, sql.candidates_in, now, 16, queues, generic=generic)
    assert "Seq Scan" not in claim and "Index Scan using tasks_claim_queue on tasks" in claim, claim
    assert "Index Scan using tasks_claim on" not in claim, claim  # its order is not the queue's: filtered
    if "default" not in queues:  # a queue without tasks: not one entry of the backlog is read
        assert "Rows Removed by Filter" not in claim, claim
    eta = await _plan(conn, sql.next_eta_in, queues, generic=generic)
    assert "Seq Scan" not in eta and "tasks_claim_queue" in eta, eta
    assert "Sort" not in eta, eta


@pytest.mark.asyncio
async def test_named_queues_are_claimed_in_the_global_order_past_rows_other_claims_hold(
    pg_dsn: str, pg_schema: str
) -> None:
    """priority DESC, due, seq across the queues named; a row locked by another claim is skipped inside its
    queue's read without cutting that queue's share short; limits hold."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    clock = backend.now()
    made: dict[str, Task] = {}
    spec = [  # name: queue, priority, seconds ago
        ("a_hi_old", "a", 5, 30),
        ("a_hi_new", "a", 5, 10),
        ("a_lo", "a", 0, 50),
        ("b_hi", "b", 5, 20),
        ("b_mid", "b", 2, 40),
        ("b_lo", "b", 0, 60),
        ("c_top", "c", 9, 5),  # a queue not named
        ("b_later", "b", 9, -600),  # not due yet
    ]
    for name, queue, priority, ago in spec:
        made[name] = Task(
            id=f"{name}-{new_id()}", payload=b"p", queue=queue, priority=priority, eta=clock - timedelta(seconds=ago)
        )
    await backend.enqueue_many(list(made.values()))
    locker = await asyncpg.connect(pg_dsn)
    try:
        async with locker.transaction():  # another claim holds the queue's first task
            await locker.execute(f'SELECT 1 FROM "{pg_schema}".tasks WHERE id = $1 FOR UPDATE', made["a_hi_old"].id)
            first = await backend.reserve(worker_id="w", limit=3, lease_seconds=30, queues=["a", "b"])
            assert [r.id for r in first] == [made[n].id for n in ("b_hi", "a_hi_new", "b_mid")]
        rest = await backend.reserve(worker_id="w", limit=10, lease_seconds=30, queues=["b", "a"])
        assert [r.id for r in rest] == [made[n].id for n in ("a_hi_old", "b_lo", "a_lo")]
        assert await backend.reserve(worker_id="w", limit=10, lease_seconds=30, queues=["a", "b"]) == []
    finally:
        await locker.close()
        await backend.close()


@pytest.mark.asyncio
async def test_next_eta_of_named_queues_is_the_earliest_due_over_every_priority(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    now = backend.now()
    try:
        assert await backend.next_eta(queues=["a"]) is None
        await backend.enqueue_many(
            [
                Task(id=new_id(), payload=b"p", queue="a", priority=7, eta=now + timedelta(seconds=300)),
                Task(id=new_id(), payload=b"p", queue="a", priority=0, eta=now + timedelta(seconds=100)),
                Task(id=new_id(), payload=b"p", queue="a", priority=0, eta=now + timedelta(seconds=200)),
                Task(id=new_id(), payload=b"p", queue="a", priority=-3, eta=now + timedelta(seconds=60)),
                Task(id=new_id(), payload=b"p", queue="a", priority=-9, eta=now + timedelta(seconds=90)),
                Task(id=new_id(), payload=b"p", queue="b", priority=1, eta=now + timedelta(seconds=30)),
                Task(id=new_id(), payload=b"p", queue="c", priority=1, eta=now + timedelta(seconds=5)),
            ]
        )
        assert await backend.next_eta(queues=["a"]) == now + timedelta(seconds=60)
        assert await backend.next_eta(queues=["a", "b"]) == now + timedelta(seconds=30)
        assert await backend.next_eta(queues=["x", "a"]) == now + timedelta(seconds=60)
        assert await backend.next_eta(queues=["x"]) is None
        assert await backend.next_eta() == now + timedelta(seconds=5)
    finally:
        await backend.close()


async def _indexes(conn: Any, schema: str) -> set[str]:
    return {
        row[0]
        for row in await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tasks'", schema
        )
    }


@pytest.mark.asyncio
async def test_a_schema_made_before_the_queue_index_gets_it_from_a_role_that_may_make_it(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema of an earlier sitq-postgres (current version, no tasks_claim_queue): a role with table privileges
    only carries on without it, warned; the owner's next connect makes it."""
    caplog.set_level(logging.WARNING, logger="sitq.postgres")
    async with temporary_role(pg_dsn, pg_schema, "sitq_app", grants="SELECT, INSERT, UPDATE, DELETE") as role:
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(f'DROP INDEX "{pg_schema}".tasks_claim_queue')
            app = PostgresBackend(dsn_with(pg_dsn, role=role), schema=pg_schema)
            try:
                await app.enqueue(Task(id="t1", payload=b"p", queue="q"))
                [got] = await app.reserve(worker_id="w", limit=5, lease_seconds=30, queues=["q"])
                assert got.id == "t1"
            finally:
                await app.close()
            assert "tasks_claim_queue" not in await _indexes(admin, pg_schema)
            warned = [r.getMessage() for r in caplog.records if "tasks_claim_queue" in r.getMessage()]
            assert len(warned) == 1 and "cannot create" in warned[0] and "owner" in warned[0], warned
            owner = PostgresBackend(pg_dsn, schema=pg_schema)
            try:
                await owner.counts()
            finally:
                await owner.close()
            assert "tasks_claim_queue" in await _indexes(admin, pg_schema)
            assert (
                await admin.fetchval(f'SELECT value FROM "{pg_schema}".meta WHERE key = $1', "schema_version")
            ) == "1"
        finally:
            await admin.close()
