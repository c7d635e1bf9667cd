"""Every duration sitq takes in seconds also takes a ``datetime.timedelta``.

An outside tester wrote ``with_options(delay=timedelta(seconds=5))`` (as
``purge(older_than=...)`` takes one) and got "delay must be a number of
seconds or None". A timedelta now counts as its ``total_seconds()``; the
checks on the number (>= 0, finite, before year 9999) apply as before.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import sitq
from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker
from sitq_core import checks

import sitq_test_tasks as tasks


def test_as_seconds_reads_a_timedelta() -> None:
    assert checks.as_seconds(timedelta(minutes=1, milliseconds=500)) == 60.5
    assert checks.as_seconds(timedelta(0)) == 0.0


@pytest.mark.asyncio
async def test_task_options_take_a_timedelta_and_store_seconds(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "td.db")) as queue:
        view = queue.with_options(
            delay=timedelta(hours=1), retry_backoff=timedelta(milliseconds=250), timeout=timedelta(minutes=2)
        )
        assert view.options.delay == 3600.0 and view.options.retry_backoff == 0.25 and view.options.timeout == 120.0
        task_id = await view.enqueue(tasks.add, 1, 2)
        task = await queue.get_task(task_id)
        assert task is not None
        assert task.eta - task.enqueued_at == timedelta(hours=1)
        assert (task.retry_backoff, task.timeout) == (0.25, 120.0)
        assert await queue.get_result(task_id, timeout=timedelta(milliseconds=20)) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("option", ["delay", "retry_backoff", "timeout"])
async def test_a_negative_timedelta_is_refused_naming_the_option(tmp_path: Path, option: str) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "neg.db")) as queue:
        with pytest.raises(ValidationError) as info:
            queue.with_options(**{option: timedelta(seconds=-1)})
        assert info.value.parameter == option
        assert await queue.list_tasks() == []


def test_a_delay_past_year_9999_is_refused_as_a_number_is() -> None:
    with pytest.raises(ValidationError) as info:
        sitq.task(delay=timedelta.max)(tasks.add)
    assert info.value.parameter == "delay"


@pytest.mark.asyncio
async def test_worker_durations_take_a_timedelta(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "w.db")) as queue:
        worker = Worker(queue.backend, lease_timeout=timedelta(seconds=30), poll_interval=timedelta(milliseconds=50))
        assert (worker.lease_timeout, worker.poll_interval) == (30.0, 0.05)
        task_id = await queue.enqueue(tasks.add, 2, 3)
        await worker.start()
        try:
            result = await queue.get_result(task_id, timeout=timedelta(seconds=20))
        finally:
            await worker.stop(timeout=timedelta(seconds=5))
        assert result is not None and queue.deserialize_result(result) == 5
