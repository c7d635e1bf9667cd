"""A hand-built Task whose times fall outside UTC's years 1 to 9999 is refused by every backend alike.

``Backend.enqueue(Task(eta=datetime(9999, 12, 31, 23, 59, tzinfo=UTC-14:00)))``
was stored by SQLite as 1970 (so a task meant for the far future was due at
once) while PostgreSQL failed with its own ``date value out of range``; both
now raise ``ValidationError(parameter="tasks")`` and store nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import Backend, ValidationError
from sitq_core import checks
from sitq_core.models import Task, new_id

from sitq_test_helpers import store_of_kind

PAST_THE_END = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))
BEFORE_THE_START = datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with store_of_kind(request.param, tmp_path) as store, store:
        yield store


def a_task(**times: datetime) -> Task:
    now = datetime.now(UTC)
    return dataclasses.replace(
        Task(
            id=new_id(),
            payload=b"x",
            serializer="cloudpickle",
            function_name="m:f",
            queue="default",
            eta=now,
            enqueued_at=now,
        ),
        **times,
    )


def test_the_check_names_the_field_and_the_range() -> None:
    with pytest.raises(ValidationError) as info:
        checks.check_task(a_task(eta=PAST_THE_END))
    assert info.value.parameter == "tasks"
    assert "eta 9999-12-31T23:59:00-14:00 is outside the datetimes UTC can express" in info.value.message
    assert checks.check_task(a_task(eta=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))).eta.year == 9999


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("field", "value"),
    [("eta", PAST_THE_END), ("eta", BEFORE_THE_START), ("enqueued_at", PAST_THE_END), ("started_at", PAST_THE_END)],
)
async def test_a_time_outside_utc_is_refused_and_nothing_is_stored(
    backend: Backend, field: str, value: datetime
) -> None:
    kept = a_task()
    await backend.enqueue(kept)
    refused = a_task(**{field: value})
    with pytest.raises(ValidationError) as info:
        await backend.enqueue_many([a_task(), refused])
    assert info.value.parameter == "tasks"
    assert "outside the datetimes UTC can express" in info.value.message, info.value.message
    with pytest.raises(ValidationError):
        await backend.enqueue(refused)
    assert await backend.get_task(refused.id) is None
    assert [task.id for task in await backend.list_tasks()] == [kept.id]


@pytest.mark.asyncio
async def test_the_last_utc_minute_is_stored_as_it_is(backend: Backend) -> None:
    last = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    task = a_task(eta=last)
    await backend.enqueue(task)
    stored = await backend.get_task(task.id)
    assert stored is not None and stored.eta == last
