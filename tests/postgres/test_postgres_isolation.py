"""sitq's sessions run at READ COMMITTED whatever the role's or database's default isolation level.

A role (or database) with ``default_transaction_isolation = 'serializable'``
made every worker log asyncpg SerializationError tracebacks ("backend call
failed; retrying", "heartbeat failed"): sitq's claims and fencing are written
for READ COMMITTED. The test sets the default on a role made for it, never on
the shared database.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from sitq_test_postgres import dsn_with, temporary_role

from sitq import TaskQueue, Worker
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks


@pytest.mark.asyncio
@pytest.mark.parametrize("named", [False, True], ids=["default-name", "application_name-in-dsn"])
async def test_sitq_sessions_read_committed_under_a_serializable_role_default(
    pg_dsn: str, pg_schema: str, named: bool
) -> None:
    async with temporary_role(pg_dsn, pg_schema, "sitq_serial", grants="SELECT, INSERT, UPDATE, DELETE") as role:
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(f"ALTER ROLE {role} SET default_transaction_isolation = 'serializable'")
        finally:
            await admin.close()
        dsn = dsn_with(pg_dsn, role=role) + ("?application_name=billing" if named else "")
        plain = await asyncpg.connect(dsn)
        try:  # the role's default holds for other sessions: the test means something
            assert await plain.fetchval("SHOW default_transaction_isolation") == "serializable"
        finally:
            await plain.close()
        backend = PostgresBackend(dsn, schema=pg_schema)
        async with TaskQueue(backend) as queue:
            ids = [await queue.enqueue(tasks.add, i, 1) for i in range(5)]
            worker = Worker(backend, max_concurrency=2)
            await worker.start()
            try:
                results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
            finally:
                await worker.stop(timeout=10)
            assert [queue.deserialize_result(result) for result in results] == [1, 2, 3, 4, 5]
            pool = await backend._pool()
            async with pool.acquire() as conn:
                async with conn.transaction():
                    assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
                assert await conn.fetchval("SHOW application_name") == ("billing" if named else "sitq")
