"""Durations given as any real number (Fraction, Decimal) are taken as float seconds, not refused as non-numbers.

api.md says "any number >= 0 is a timeout"; a Fraction or Decimal (read from a
config file, or computed) was refused with "must be a number of seconds".
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, ValidationError, Worker
from sitq_core import checks

import sitq_test_tasks as tasks

REALS = [Fraction(1, 4), Decimal("0.25")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, 2.0),
        (0.5, 0.5),
        (Fraction(1, 4), 0.25),
        (Decimal("0.25"), 0.25),
        (Fraction(10**400, 1), math.inf),
        (-(10**400), -math.inf),
        (True, None),
        ("1", None),
        (None, None),
        (1j, None),
        (Decimal("sNaN"), None),
    ],
)
def test_as_seconds_takes_real_numbers_only(value: Any, expected: float | None) -> None:
    assert checks.as_seconds(value) == expected
    assert math.isnan(checks.as_seconds(Decimal("NaN")) or 0.0)


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", REALS, ids=["Fraction", "Decimal"])
async def test_get_result_takes_a_fraction_or_decimal_timeout(tmp_path: Path, timeout: Any) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        task_id = await queue.enqueue(tasks.add, 1, b=2)
        assert await queue.get_result(task_id, timeout=timeout) is None  # no worker: it waits, then gives up
        with pytest.raises(ValidationError) as info:
            await queue.get_result(task_id, timeout=-timeout)
        assert info.value.parameter == "timeout" and "must be >= 0" in str(info.value)


def test_the_sync_queue_takes_them_too(tmp_path: Path) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        task_id = queue.enqueue(tasks.add, 1, b=2)
        assert queue.get_result(task_id, timeout=Decimal("0.05")) is None


@pytest.mark.asyncio
async def test_task_options_store_them_as_float(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        view = queue.with_options(delay=Decimal(60), retry_backoff=Fraction(3, 2), timeout=Decimal("2.5"))
        assert (view.options.delay, view.options.retry_backoff, view.options.timeout) == (60.0, 1.5, 2.5)
        assert all(type(value) is float for value in (view.options.delay, view.options.retry_backoff))
        task = await queue.get_task(await view.enqueue(tasks.add, 1, b=2))
        assert task is not None and (task.retry_backoff, task.timeout) == (1.5, 2.5)
        for name, bad in (("delay", Decimal("Infinity")), ("timeout", Fraction(0)), ("retry_backoff", Decimal(-1))):
            with pytest.raises(ValidationError) as info:
                queue.with_options(**{name: bad})
            assert info.value.parameter == name
        assert (await queue.counts())["queued"] == 1


@pytest.mark.asyncio
async def test_worker_durations_are_stored_as_float(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "q.db", busy_timeout=Decimal(5), watch_interval=Fraction(1, 100))
    assert (backend.busy_timeout, backend.watch_interval) == (5.0, 0.01)
    worker = Worker(
        backend,
        poll_interval=Fraction(1, 2),
        lease_timeout=Decimal(30),
        shutdown_timeout=Decimal(4),
        batch_window=Fraction(1, 1000),
    )
    assert (worker.poll_interval, worker.lease_timeout, worker.shutdown_timeout, worker.batch_window) == (
        0.5,
        30.0,
        4.0,
        0.001,
    )
    await worker.start()
    await worker.stop(timeout=Decimal(5))
    with pytest.raises(ValidationError) as info:
        Worker(backend, poll_interval=Decimal("NaN"))
    assert info.value.parameter == "poll_interval"
    with pytest.raises(ValidationError) as stop_info:
        await worker.stop(timeout=Fraction(-1))
    assert stop_info.value.parameter == "timeout"
