"""Bad options are refused where they are given, not at the first enqueue or inside a running worker.

A delay past the last date a task can be stored with (year 9999 in UTC) was
taken by ``with_options`` and ``@sitq.task`` and refused only at enqueue;
``Worker.run(handle_signals=...)`` took any object as a truth value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import sitq
from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker

import sitq_test_tasks as tasks


@pytest.mark.parametrize("delay", [10**30, 1e300, Decimal("1e20"), 400_000 * 365 * 86_400])
@pytest.mark.parametrize(
    "give",
    [
        lambda queue, delay: queue.with_options(delay=delay),
        lambda queue, delay: sitq.task(delay=delay)(tasks.add),
        lambda queue, delay: queue.task(delay=delay)(tasks.add),
        lambda queue, delay: queue.with_options(priority=1).with_options(delay=delay),
        lambda queue, delay: sitq.SyncTaskQueue(SQLiteBackend(":memory:")).with_options(delay=delay),
    ],
    ids=["with_options", "task", "queue.task", "view.with_options", "sync.with_options"],
)
def test_a_delay_past_the_last_storable_date_is_refused_where_it_is_given(
    give: Callable[[TaskQueue, Any], Any], delay: Any
) -> None:
    queue = TaskQueue(SQLiteBackend(":memory:"))
    with pytest.raises(ValidationError) as info:
        give(queue, delay)
    assert info.value.parameter == "delay" and "last date" in info.value.message


def test_a_long_delay_that_fits_is_still_taken() -> None:
    queue = TaskQueue(SQLiteBackend(":memory:"))
    assert queue.with_options(delay=100 * 365 * 86_400).options.delay == 100 * 365 * 86_400


@pytest.mark.asyncio
@pytest.mark.parametrize("value", [None, 0, 1, "yes", "", object()])
async def test_handle_signals_must_be_a_bool(value: object) -> None:
    worker = Worker(SQLiteBackend(":memory:"))
    with pytest.raises(ValidationError) as info:
        # a bound, not a wait: refused, it returns at once; taken, it would run until stopped
        await asyncio.wait_for(worker.run(handle_signals=value), timeout=10)  # type: ignore[arg-type]
    assert info.value.parameter == "handle_signals"
