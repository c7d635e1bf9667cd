"""sitq through application roles: one with table privileges only, and one at its connection limit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
import pytest_asyncio

from sitq import TaskQueue, Worker
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks


def role_dsn(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")).geturl()


@pytest_asyncio.fixture
async def app_role(pg_dsn: str, pg_schema: str) -> AsyncIterator[str]:
    """A login role with only the table privileges of docs/how-to/postgres-backend.md on a schema the
    test's owner made (at most 2 connections); dropped afterwards."""
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)):
        pass  # the owner's first connect creates the schema
    role = f"sitq_app_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2; GRANT USAGE ON SCHEMA {pg_schema} TO {role}; "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {pg_schema} TO {role}"
        )
        yield role
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")
        await admin.close()


@pytest.mark.asyncio
async def test_a_role_with_table_privileges_only_runs_producers_and_workers(
    pg_dsn: str, pg_schema: str, app_role: str
) -> None:
    """Once an owner made the schema, the application's role needs no CREATE: connecting skips the DDL."""
    backend = PostgresBackend(role_dsn(pg_dsn, app_role), schema=pg_schema, max_connections=1)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        try:
            task_id = await queue.enqueue(tasks.add, 2, 3)
            assert queue.deserialize_result(await queue.get_result(task_id, timeout=20)) == 5
        finally:
            await worker.stop()
