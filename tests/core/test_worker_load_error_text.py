"""A task a worker cannot load is stored failed with sitq's message, without the ``(context: ...)`` suffix.

A cloudpickle task on a msgpack-only worker was stored as "cannot load task m:add: task was written by
serializer 'cloudpickle', but this worker accepts only 'msgpack' (context: operation='loads_call',
data_type='cloudpickle')": the ``str()`` of sitq's own SerializationError, whose keyword dump is for raised
errors, not for the text users read in ``Result.error``, ``Task.error`` and ``sitq tasks``. The raised
error's ``str()`` keeps its context.
"""

from __future__ import annotations

import sqlite3
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import MsgpackSerializer, SerializationError, SQLiteBackend, TaskQueue, Worker

import sitq_test_tasks as tasks

GONE = "sitq_vanished_module_for_load_errors"


@pytest_asyncio.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    async with SQLiteBackend(tmp_path / "load.db") as store:
        yield store


@pytest.fixture
def vanishing_module() -> Iterator[types.ModuleType]:
    """A module importable while a task is enqueued (cloudpickle refers to it by name), gone when it runs."""
    module = types.ModuleType(GONE)
    exec("def add(a, b):\n    return a + b\n", module.__dict__)
    sys.modules[GONE] = module
    try:
        yield module
    finally:
        sys.modules.pop(GONE, None)


async def _failed_texts(queue: TaskQueue, task_id: str, worker: Worker) -> tuple[str, str]:
    """Run ``worker`` until ``task_id`` is final: its Result.error and Task.error."""
    await worker.start()
    try:
        result = await queue.get_result(task_id, timeout=20)
    finally:
        await worker.stop()
    task = await queue.get_task(task_id)
    assert result is not None and task is not None and result.status == "failed" == task.status
    return result.error or "", task.error or ""


@pytest.mark.asyncio
async def test_a_serializer_mismatch_is_stored_without_the_context(backend: SQLiteBackend) -> None:
    queue = TaskQueue(backend)  # cloudpickle
    task_id = await queue.enqueue(tasks.add, 1, 2)
    texts = await _failed_texts(queue, task_id, Worker(backend, serializer="msgpack"))
    expected = (
        "cannot load task sitq_test_tasks:add: task was written by serializer 'cloudpickle', "
        "but this worker accepts only 'msgpack'"
    )
    assert texts == (expected, expected)  # Task.error is also what `sitq tasks` and `sitq show` print


def test_the_raised_error_keeps_its_context() -> None:
    """Only the stored text loses it: ``str()`` of sitq's errors is as it was."""
    error = SerializationError("cannot load", operation="loads_call", data_type="cloudpickle")
    assert str(error) == "cannot load (context: operation='loads_call', data_type='cloudpickle')"


@pytest.mark.asyncio
async def test_a_missing_module_is_stored_without_the_context(
    backend: SQLiteBackend, vanishing_module: types.ModuleType
) -> None:
    """cloudpickle's missing module (the "not importable here" wording), and msgpack's."""
    queue = TaskQueue(backend)
    pickled = await queue.enqueue(vanishing_module.add, 1, 2)
    del sys.modules[GONE]
    msgpack_queue = TaskQueue(backend, serializer="msgpack")
    packed = await msgpack_queue.enqueue(tasks.add, 1, 2)
    with sqlite3.connect(backend.path) as db:
        db.execute(
            "UPDATE tasks SET payload = ?, function_name = ? WHERE id = ?",
            (MsgpackSerializer().dumps([f"{GONE}:add", [1, 2], {}]), f"{GONE}:add", packed),
        )
    db.close()
    error, stored = await _failed_texts(queue, pickled, Worker(backend))
    assert error == stored
    assert error.startswith(f"cannot load task {GONE}:add: module {GONE!r} is not importable here"), error
    assert error.endswith(f"ModuleNotFoundError: No module named {GONE!r}"), error
    error, stored = await _failed_texts(msgpack_queue, packed, Worker(backend, serializer="msgpack"))
    assert error == stored
    assert error.startswith(f"cannot load task {GONE}:add: cannot import task function"), error
    assert "(context:" not in error, error
