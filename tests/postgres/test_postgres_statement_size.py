"""Batches larger than one PostgreSQL message: split into statements of bounded size, in one transaction.

PostgreSQL refuses a protocol message over 1 GB ("invalid message length") and
drops the connection: an ``enqueue_many`` of five 230 MB tasks (each under the
per-field limit) was sent as one statement, taken for an outage, re-sent for a
minute and reported as of unknown fate; five 230 MB results in one
``finish_many`` lost the connection the same way. The bound is a module
constant, lowered here so that a few hundred bytes stand for the gigabytes.

Statement-level triggers on the test's own schema record what each statement
sitq ran carried (rows and bytes), in the statement's transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import ValidationError
from sitq_core.models import Outcome, Task, new_id
from sitq_postgres import PostgresBackend
from sitq_postgres import backend as pg_backend

BOUND = 1000  # bytes per statement in these tests


def _task(size: int) -> Task:
    return Task(id=new_id(), payload=b"z" * size)


async def _watch_statements(dsn: str, schema: str) -> Any:
    """After sitq made ``schema``: record each INSERT statement on tasks and results (rows, value bytes)."""
    admin = await asyncpg.connect(dsn)
    s = f'"{schema}"'
    await admin.execute(
        f"""
        CREATE TABLE {s}.seen (n serial, tbl text, rows bigint, bytes bigint);
        CREATE SEQUENCE {s}.task_statements;
        CREATE FUNCTION {s}.seen_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {s}.seen (tbl, rows, bytes)
                SELECT 'tasks', count(*), coalesce(sum(octet_length(payload)), 0) FROM new_rows;
            RETURN NULL;
        END $$;
        CREATE FUNCTION {s}.seen_results() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {s}.seen (tbl, rows, bytes)
                SELECT 'results', count(*), coalesce(sum(octet_length(value)), 0) FROM new_rows;
            RETURN NULL;
        END $$;
        CREATE TRIGGER seen_tasks AFTER INSERT ON {s}.tasks REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.seen_tasks();
        CREATE TRIGGER seen_results AFTER INSERT ON {s}.results REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.seen_results();
        """
    )
    return admin


async def _seen(admin: Any, schema: str, table: str) -> list[tuple[int, int]]:
    rows = await admin.fetch(f'SELECT rows, bytes FROM "{schema}".seen WHERE tbl = $1 ORDER BY n', table)
    return [(row["rows"], row["bytes"]) for row in rows]


@pytest.mark.asyncio
async def test_enqueue_many_splits_a_batch_over_the_bound_into_statements_of_one_transaction(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_STATEMENT_BYTES", BOUND, raising=False)
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.counts()  # the schema is made
        admin = await _watch_statements(pg_dsn, pg_schema)
        try:
            big = [_task(600) for _ in range(5)]  # each alone: two would pass the bound
            small = [_task(50) for _ in range(30)]
            batch = [*big[:2], *small, *big[2:]]
            assert await backend.enqueue_many(batch) == [task.id for task in batch]
            seen = await _seen(admin, pg_schema, "tasks")
            assert sum(rows for rows, _ in seen) == len(batch)
            assert len(seen) > 5, f"one statement for the whole batch: {seen}"
            assert all(size <= BOUND for _, size in seen), seen
            stored = await admin.fetch(f'SELECT id, payload FROM "{pg_schema}".tasks ORDER BY seq')
            assert [(row["id"], row["payload"]) for row in stored] == [(t.id, t.payload) for t in batch]  # in order
        finally:
            await admin.close()


@pytest.mark.asyncio
async def test_a_split_batch_is_still_all_or_nothing(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_STATEMENT_BYTES", BOUND, raising=False)
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        taken = _task(10)
        await backend.enqueue(taken)
        admin = await _watch_statements(pg_dsn, pg_schema)
        try:
            batch = [_task(600) for _ in range(4)]
            again = Task(id=taken.id, payload=b"again")  # the last statement meets an id already stored
            with pytest.raises(ValidationError) as info:
                await backend.enqueue_many([*batch, again])
            assert info.value.parameter == "tasks" and info.value.context.get("value") == taken.id
            assert "nothing of this batch was stored" in str(info.value)
            assert (await backend.counts())["queued"] == 1
            assert [await backend.get_task(task.id) for task in batch] == [None] * len(batch)
            assert await _seen(admin, pg_schema, "tasks") == []  # the earlier statements were rolled back
        finally:
            await admin.close()


@pytest.mark.asyncio
async def test_a_split_batch_whose_connection_is_cut_midway_is_sent_again_whole(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the session at the batch's second statement (once): the retry stores every task once."""
    monkeypatch.setattr(pg_backend, "_STATEMENT_BYTES", BOUND, raising=False)
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.counts()
        admin = await _watch_statements(pg_dsn, pg_schema)
        s = f'"{pg_schema}"'
        try:
            await admin.execute(
                f"""
                CREATE FUNCTION {s}.cut() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('{s}.task_statements') = 2 THEN  -- a sequence: not rolled back with the attempt
                        PERFORM pg_terminate_backend(pg_backend_pid());
                    END IF;
                    RETURN NULL;
                END $$;
                CREATE TRIGGER cut AFTER INSERT ON {s}.tasks FOR EACH STATEMENT EXECUTE FUNCTION {s}.cut();
                """
            )
            batch = [_task(600) for _ in range(4)]
            assert await backend.enqueue_many(batch) == [task.id for task in batch]
            assert await admin.fetchval(f"SELECT last_value FROM {s}.task_statements") > 4, "never cut"
            stored = await admin.fetch(f"SELECT id FROM {s}.tasks ORDER BY seq")
            assert [row["id"] for row in stored] == [task.id for task in batch]
        finally:
            await admin.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["finish_many", "finish_and_reserve"])
async def test_outcomes_over_the_bound_are_stored_by_several_statements_of_one_transaction(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    monkeypatch.setattr(pg_backend, "_STATEMENT_BYTES", BOUND, raising=False)
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        queued = [_task(5) for _ in range(8)]
        await backend.enqueue_many(queued)
        leases = await backend.reserve(worker_id="w", limit=6, lease_seconds=60)
        unclaimed = next(task.id for task in queued if task.id not in {lease.id for lease in leases})
        admin = await _watch_statements(pg_dsn, pg_schema)
        try:
            values = {lease.id: bytes([65 + index]) * (600 if index < 5 else 20) for index, lease in enumerate(leases)}
            outcomes = [Outcome(lease.id, lease.lease_token, "success", value=values[lease.id]) for lease in leases]
            outcomes.insert(2, Outcome(unclaimed, "stale", "success", value=b"no"))  # fenced out, as ever
            if call == "finish_many":
                accepted = await backend.finish_many(outcomes)
            else:
                accepted, more = await backend.finish_and_reserve(outcomes, worker_id="w", limit=5, lease_seconds=60)
                assert len(more) == 2  # the claim shares the transaction
            assert accepted == [outcome.lease_token != "stale" for outcome in outcomes]
            for lease in leases:
                result = await backend.get_result(lease.id)
                assert result is not None and result.value == values[lease.id]
            seen = await _seen(admin, pg_schema, "results")
            assert sum(rows for rows, _ in seen) == len(leases) and len(seen) >= 5, seen
            assert all(size <= BOUND for _, size in seen), seen
        finally:
            await admin.close()
