"""What a connect that fails raises on PostgreSQL: a database not made yet is retryable, and every refusal
says it happened while connecting (``operation='connect'``)."""

from __future__ import annotations

import socket
import uuid

import asyncpg  # type: ignore[import-untyped]
import pytest
from sitq_test_postgres import dsn_with

from sitq import StoreGoneError, TaskQueue
from sitq_core.errors import ConnectionError
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks


def _free_port() -> int:
    """A local TCP port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.asyncio
async def test_a_database_not_made_yet_is_a_retryable_connection_error_and_creating_it_is_enough(pg_dsn: str) -> None:
    """Before: StoreGoneError "... it was dropped or never made; create it ... and restart this process", while
    creating it and calling again in the same process worked."""
    name = f"sitq_db_{uuid.uuid4().hex[:12]}"
    backend = PostgresBackend(dsn_with(pg_dsn, database=name), schema="sitq", connect_timeout=10)
    admin = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(ConnectionError) as info:
            await backend.connect()
        error = info.value
        assert not isinstance(error, StoreGoneError), error.message
        assert error.operation == "connect", error.context
        assert name in error.message and "create the database" in error.message, error.message
        assert "restart" not in error.message, error.message
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            async with TaskQueue(backend) as queue:  # the same backend, in the same process
                task_id = await queue.enqueue(tasks.add, 1, 2)
                assert (await queue.get_task(task_id)).status == "queued"
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_a_port_nobody_listens_on_is_a_connect_error(pg_dsn: str) -> None:
    """Before: ConnectionError.operation was None."""
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/test"
    with pytest.raises(ConnectionError) as info:
        await PostgresBackend(url, connect_timeout=5).connect()
    assert info.value.operation == "connect", info.value.context


@pytest.mark.asyncio
async def test_a_role_that_does_not_exist_is_a_connect_error(pg_dsn: str) -> None:
    """Before: ConnectionError.operation was None."""
    backend = PostgresBackend(dsn_with(pg_dsn, role=f"nobody_{uuid.uuid4().hex[:8]}"), connect_timeout=10)
    with pytest.raises(ConnectionError) as info:
        await backend.connect()
    assert info.value.operation == "connect", info.value.context
