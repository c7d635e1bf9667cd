"""A task whose cancel was requested while its worker was dead is logged when reserve ends it, as on SQLite."""

from __future__ import annotations

import logging

import pytest

from sitq_core.models import Task, TaskStatus, new_id
from sitq_core.testing import FakeClock
from sitq_postgres import PostgresBackend


@pytest.mark.asyncio
async def test_a_cancel_whose_worker_is_gone_is_logged_at_info(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite said 'task ... cancelled (its worker is gone)'; PostgreSQL ended the task without a word."""
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        backend.clock = FakeClock()  # type: ignore[method-assign]
        now = backend.now()
        task = Task(id=new_id(), payload=b"x", eta=now, enqueued_at=now, function_name="app.tasks:resize")
        await backend.enqueue(task)
        await backend.reserve(worker_id="dies", limit=1, lease_seconds=30)  # its worker is killed
        await backend.cancel(task.id)
        backend.clock.advance(31)  # type: ignore[attr-defined]
        with caplog.at_level(logging.INFO, logger="sitq.postgres"):
            assert await backend.reserve(worker_id="next", limit=1, lease_seconds=30) == []
        stored = await backend.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.CANCELLED
        lines = [r for r in caplog.records if r.name == "sitq.postgres" and "worker is gone" in r.getMessage()]
        assert [(r.levelno, r.getMessage()) for r in lines] == [
            (logging.INFO, f"task {task.id} (app.tasks:resize) cancelled (its worker is gone)")
        ], caplog.text
