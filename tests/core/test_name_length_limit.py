"""Queue names and task ids of new tasks are at most 255 characters, on every backend alike.

``q.with_options(queue_name="x" * 2800).enqueue(f)`` was stored by SQLite while
PostgreSQL failed with ``BackendError: ... index row size 2840 exceeds btree
version 4 maximum 2704 for index "tasks_claim_queue"``; a Task of the same id
length handed to ``Backend.enqueue`` hit the same limit through the UNIQUE
index on ``id``. A new task's queue name and id are now refused past 255
characters with a ValidationError naming the parameter and the limit, before
anything is stored. Lookups and filters take any length: tasks stored under a
longer name (by an older version) stay reachable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import sitq
from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker
from sitq_core import checks
from sitq_core.models import Task, new_id

import sitq_test_tasks as tasks
from sitq_test_helpers import store_of_kind

LIMIT = 255
WIDE = "\U0001f4e8"  # four bytes in UTF-8: 255 of them must fit every store's index too


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with store_of_kind(request.param, tmp_path) as backend, TaskQueue(backend) as q:
        yield q


def test_the_limit_is_part_of_the_checks() -> None:
    assert checks.MAX_QUEUE_NAME_LENGTH == LIMIT and checks.MAX_TASK_ID_LENGTH == LIMIT
    assert checks.new_queue_name("q" * LIMIT) == "q" * LIMIT
    with pytest.raises(ValidationError) as info:
        checks.new_queue_name("q" * (LIMIT + 1), "queue_name")
    assert info.value.parameter == "queue_name"
    assert "at most 255 characters" in info.value.message and "256" in info.value.message, info.value.message


@pytest.mark.asyncio
@pytest.mark.parametrize("letter", ["q", WIDE], ids=["ascii", "four-byte"])
async def test_a_queue_name_of_255_characters_is_stored_and_served(queue: TaskQueue, letter: str) -> None:
    name = letter * LIMIT
    view = queue.with_options(queue_name=name)
    one = await view.enqueue(tasks.add, 1, 2)
    batch = await view.enqueue_many([(tasks.add, (3, 4)), (tasks.add, (5, 6))])
    stored = await queue.get_task(one)
    assert stored is not None and stored.queue == name
    assert len(await queue.list_tasks(queue=name)) == 3
    worker = Worker(queue.backend, queues=[name], poll_interval=0.05)
    await worker.start()
    try:
        results = [await queue.get_result(task_id, timeout=20) for task_id in [one, *batch]]
    finally:
        await worker.stop()
    assert [queue.deserialize_result(result) for result in results if result is not None] == [3, 7, 11]


@pytest.mark.asyncio
@pytest.mark.parametrize("letter", ["q", WIDE], ids=["ascii", "four-byte"])
async def test_a_queue_name_of_256_characters_is_refused_with_nothing_stored(queue: TaskQueue, letter: str) -> None:
    name = letter * (LIMIT + 1)
    refusals = []
    with pytest.raises(ValidationError) as info:
        queue.with_options(queue_name=name)
    refusals.append(info.value)
    with pytest.raises(ValidationError) as info:
        queue.with_options(priority=1).with_options(queue_name=letter * 2800)
    refusals.append(info.value)
    with pytest.raises(ValidationError) as info:
        sitq.task(queue_name=name)(tasks.add)
    refusals.append(info.value)
    with pytest.raises(ValidationError) as info:
        queue.task(queue_name=name)(tasks.add)
    refusals.append(info.value)
    for refusal in refusals:
        assert refusal.parameter == "queue_name"
        assert "queue_name" in refusal.message and "at most 255 characters" in refusal.message, refusal.message
    assert sum((await queue.counts()).values()) == 0


@pytest.mark.asyncio
async def test_a_task_handed_to_the_backend_with_a_longer_id_or_queue_is_refused_alike(queue: TaskQueue) -> None:
    """The same answer from every backend (a ValidationError, ``parameter="tasks"``), not PostgreSQL's index error."""
    built = await queue.get_task(await queue.enqueue(tasks.add, 1, 2))
    assert built is not None
    backend = queue.backend
    fits = [
        dataclasses.replace(built, id="i" * LIMIT),
        dataclasses.replace(built, id=WIDE * LIMIT, queue=WIDE * LIMIT),
    ]
    assert await backend.enqueue(fits[0]) == fits[0].id
    assert await backend.enqueue_many([fits[1]]) == [fits[1].id]
    too_long = {
        "id": dataclasses.replace(built, id="i" * (LIMIT + 1)),
        "huge id": dataclasses.replace(built, id="i" * 2800),
        "queue": dataclasses.replace(built, id=new_id(), queue="q" * (LIMIT + 1)),
        "huge queue": dataclasses.replace(built, id=new_id(), queue="q" * 2800),
    }
    for what, task in too_long.items():
        for store in (
            backend.enqueue,
            lambda task: backend.enqueue_many([dataclasses.replace(built, id=new_id()), task]),
        ):
            with pytest.raises(ValidationError) as info:
                await store(task)
            assert info.value.parameter == "tasks", what
            text = info.value.message
            assert "at most 255 characters" in text and ("task id" if "id" in what else "queue name") in text, text
    assert sum((await queue.counts()).values()) == 3  # the first task and the two that fit


def test_check_task_refuses_them_too() -> None:
    task = Task(id="t", payload=b"")
    assert checks.check_task(dataclasses.replace(task, id="i" * LIMIT, queue="q" * LIMIT)).id == "i" * LIMIT
    for changed in ({"id": "i" * (LIMIT + 1)}, {"queue": "q" * (LIMIT + 1)}):
        with pytest.raises(ValidationError) as info:
            checks.check_task(dataclasses.replace(task, **changed))
        assert info.value.parameter == "tasks" and "at most 255 characters" in info.value.message


@pytest.mark.asyncio
async def test_lookups_and_filters_take_any_length(queue: TaskQueue) -> None:
    """A name stored before the limit (here written into the store by hand) stays reachable: nothing that
    reads, filters or serves refuses a long one."""
    long_name, long_id = "q" * 600, "i" * 600
    assert await queue.get_result(long_id, timeout=0) is None
    assert await queue.get_task(long_id) is None
    assert await queue.cancel(long_id) is False
    assert await queue.requeue(long_id) is False
    assert await queue.list_tasks(queue=long_name) == []
    assert sum((await queue.counts(queue=long_name)).values()) == 0
    task_id = await queue.enqueue(tasks.add, 20, 22)
    await _rename_by_hand(queue, task_id, new_id=long_id, new_queue=long_name)
    assert [task.id for task in await queue.list_tasks(queue=long_name)] == [long_id]
    worker = Worker(queue.backend, queues=[long_name], poll_interval=0.05)
    await worker.start()
    try:
        result = await queue.get_result(long_id, timeout=20)
    finally:
        await worker.stop()
    assert result is not None and queue.deserialize_result(result) == 42


async def _rename_by_hand(queue: TaskQueue, task_id: str, *, new_id: str, new_queue: str) -> None:
    backend = queue.backend
    if isinstance(backend, SQLiteBackend):
        import sqlite3

        with sqlite3.connect(backend.path) as db:
            db.execute("UPDATE tasks SET id = ?, queue = ? WHERE id = ?", (new_id, new_queue, task_id))
        db.close()
        return
    import asyncpg
    from sitq_test_postgres import DSN

    conn = await asyncpg.connect(DSN)
    try:
        schema = backend.schema  # type: ignore[attr-defined]
        await conn.execute(f'UPDATE "{schema}".tasks SET id = $1, queue = $2 WHERE id = $3', new_id, new_queue, task_id)
    finally:
        await conn.close()
