"""PostgreSQL's disk_full (SQLSTATE 53100) is a StoreFullError, so a worker fails a result that finds no room.

The server's disk is outside the project: a trigger on the test schema's
``results`` table raises the very error a full disk makes for a value over
``ROOM`` bytes, and the real worker, backend and server do the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import StoreFullError, TaskQueue, Worker
from sitq_core.models import Outcome, Task, TaskStatus, new_id
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

ROOM = 20_000


async def fill_the_disk_past(backend: PostgresBackend, room: int) -> None:
    """Results whose value is over ``room`` bytes are refused as a full disk refuses them."""
    connection = await asyncpg.connect(backend.dsn)
    try:
        await connection.execute(
            f"""
            CREATE FUNCTION {backend.schema}.no_room() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF octet_length(NEW.value) > {room} THEN
                    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER no_room BEFORE INSERT OR UPDATE ON {backend.schema}.results
                FOR EACH ROW EXECUTE FUNCTION {backend.schema}.no_room();
            """
        )
    finally:
        await connection.close()


@pytest.mark.asyncio
async def test_a_disk_full_refusal_is_a_store_full_error_and_stores_nothing(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await fill_the_disk_past(backend, ROOM)
        task = Task(id=new_id(), payload=b"p")
        await backend.enqueue(task)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=60)
        with pytest.raises(StoreFullError) as info:
            await backend.finish_many([Outcome(lease.id, lease.lease_token, "success", value=b"x" * (ROOM + 1))])
        assert info.value.backend_type == "postgres" and "disk holding the database is full" in info.value.message
        assert isinstance(info.value.cause, asyncpg.exceptions.DiskFullError)
        stored = await backend.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.RUNNING  # nothing of the refused call went in
        assert await backend.finish_many([Outcome(lease.id, lease.lease_token, "success", value=b"small")]) == [True]


@pytest.mark.asyncio
async def test_a_worker_fails_the_result_that_finds_no_room_and_stores_the_others(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        assert isinstance(queue.backend, PostgresBackend)
        await fill_the_disk_past(queue.backend, ROOM)
        big = await queue.enqueue(tasks.sized, 3 * ROOM, str(tmp_path / "big"))
        smalls = [await queue.enqueue(tasks.sized, 100, str(tmp_path / "small")) for _ in range(3)]
        worker = Worker(queue.backend, poll_interval=0.05, lease_timeout=30)
        await worker.start()
        try:
            failed = await queue.get_result(big, timeout=30)
            done = [await queue.get_result(task_id, timeout=30) for task_id in smalls]
        finally:
            await worker.stop()
    assert failed is not None and failed.status == TaskStatus.FAILED
    assert failed.error is not None and "could not be stored: the disk holding the store is full" in failed.error
    assert [result.status if result else None for result in done] == [TaskStatus.SUCCESS] * 3
    assert (tmp_path / "big").read_text() == "ran\n"  # run once, not again after a lease expiry


class Reports(PostgresBackend):
    """A real PostgreSQL backend that keeps every report it is sent, refused or not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[Outcome] = []

    async def finish_many(self, outcomes: Any) -> Any:
        self.sent += outcomes
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self.sent += outcomes
        return await super().finish_and_reserve(outcomes, **kwargs)


@pytest.mark.asyncio
async def test_a_result_refused_while_every_write_finds_no_room_is_stored_once_there_is_room(
    pg_dsn: str, pg_schema: str
) -> None:
    """The failure reported for the result is refused too: the disk is full for every write, not too full for
    this result. The result itself is reported again, and stored (succeeded) once the disk has room."""
    async with TaskQueue(Reports(pg_dsn, schema=pg_schema)) as queue:
        backend = queue.backend
        assert isinstance(backend, Reports)
        flag = f"{pg_schema}.disk"
        connection = await asyncpg.connect(pg_dsn)
        try:
            await connection.execute(
                f"""
                CREATE TABLE {flag} (full_disk boolean NOT NULL);
                INSERT INTO {flag} VALUES (false);
                CREATE FUNCTION {pg_schema}.no_room() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF (SELECT full_disk FROM {flag}) THEN
                        RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER no_room BEFORE INSERT OR UPDATE ON {pg_schema}.results
                    FOR EACH ROW EXECUTE FUNCTION {pg_schema}.no_room();
                CREATE TRIGGER no_room BEFORE INSERT OR UPDATE ON {pg_schema}.tasks
                    FOR EACH ROW EXECUTE FUNCTION {pg_schema}.no_room();
                """
            )
            task_id = await queue.enqueue(tasks.fills_the_disk, pg_dsn, flag, 10_000)
            worker = Worker(backend, poll_interval=0.05, lease_timeout=30)
            await worker.start()
            try:

                async def result_reported_again_after_its_failure() -> bool:
                    kinds = [o.kind for o in backend.sent if o.task_id == task_id]
                    return "failed" in kinds and "success" in kinds[kinds.index("failed") :]

                await wait_until(result_reported_again_after_its_failure, timeout=30)
                await connection.execute(f"UPDATE {flag} SET full_disk = false")  # room again
                result = await queue.get_result(task_id, timeout=30)
            finally:
                await worker.stop()
        finally:
            await connection.close()
    assert result is not None and result.status == TaskStatus.SUCCESS and result.attempts == 1, result
    assert result.value == queue.serializer.dumps(b"r" * 10_000)
