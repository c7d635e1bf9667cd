"""A queue name with surrounding whitespace is refused where tasks get their queue (``with_options``,
``@task``): ``sitq worker -q``, ``sitq stats --queue`` and ``sitq tasks --queue`` strip names, so such a
queue could not be served or seen from the CLI. What reads or serves stored tasks keeps taking the name.

``q.with_options(queue_name="mail ").enqueue(...)`` was stored as given, while ``sitq worker -q "mail "``
served ``mail``: the task never ran.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import sitq
from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, ValidationError, Worker
from sitq_core import checks
from sitq_core.models import new_id

import sitq_test_tasks as tasks

SPACED = ["mail ", " mail", "\tmail", "mail\n", "mail\u00a0", "   "]


@pytest.mark.parametrize("name", SPACED)
def test_the_check_refuses_surrounding_whitespace_and_says_why(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        checks.new_queue_name(name, "queue_name")
    assert info.value.parameter == "queue_name" and info.value.value == name
    text = str(info.value)
    assert "whitespace" in text and "CLI strips queue names" in text and "sitq worker -q" in text, text


def test_names_with_inner_spaces_or_commas_stay_valid() -> None:
    assert checks.new_queue_name("mail outbox") == "mail outbox"
    assert checks.new_queue_name("mail,eu") == "mail,eu"


@pytest.mark.parametrize("name", SPACED)
def test_with_options_and_the_task_decorator_refuse_it_and_nothing_is_stored(tmp_path: Path, name: str) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        with pytest.raises(ValidationError) as info:
            queue.with_options(queue_name=name)
        assert info.value.parameter == "queue_name"
        with pytest.raises(ValidationError) as info:
            sitq.task(queue_name=name)(tasks.add)
        assert info.value.parameter == "queue_name"
        assert queue.counts()["queued"] == 0


@pytest.mark.asyncio
async def test_tasks_already_stored_under_such_a_name_stay_reachable(tmp_path: Path) -> None:
    """Backends, the worker and the readers take the name as stored (a Task built by hand, or stored before
    this check): refusing there would strand those tasks. ``sitq worker --queue NAME`` serves one verbatim."""
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        built = await queue.get_task(await queue.enqueue(tasks.add, 1, 2))
        assert built is not None
        moved = dataclasses.replace(built, id=new_id(), queue="mail ")
        assert await queue.backend.enqueue(moved) == moved.id
        assert (await queue.counts(queue="mail "))["queued"] == 1
        assert [task.id for task in await queue.list_tasks(queue="mail ")] == [moved.id]
        worker = Worker(queue.backend, queues=["mail "])
        await worker.start()
        try:
            done = await queue.get_result(moved.id, timeout=30)
        finally:
            await worker.stop()
        assert done is not None and queue.deserialize_result(done) == 3
        assert await queue.get_result(built.id, timeout=0) is None  # "default" was not named
