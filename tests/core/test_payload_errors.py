"""A payload whose own code raises a BaseException as it loads fails its task; the worker goes on."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import pytest

from sitq import SerializationError, SQLiteBackend, TaskQueue, Worker
from sitq_core.models import Result, Task, new_id

import sitq_test_tasks as tasks


def _raise(kind: str) -> None:
    raise {"generator": GeneratorExit, "cancelled": asyncio.CancelledError, "keyboard": KeyboardInterrupt}.get(
        kind, SystemExit
    )(f"raised while loading ({kind})")


class Poison:
    """Unpickling it calls _raise: what a hostile or broken payload can do."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise, (self.kind,))


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["generator", "cancelled", "keyboard", "exit"])
async def test_a_payload_raising_a_base_exception_as_it_loads_fails_only_its_task(tmp_path: Path, kind: str) -> None:
    """GeneratorExit or CancelledError froze the worker with the task held; KeyboardInterrupt ended the process."""
    backend = SQLiteBackend(tmp_path / f"{kind}.db")
    async with TaskQueue(backend) as queue:
        poisoned = Task(id=new_id(), payload=pickle.dumps((tasks.add, (Poison(kind),), {})), function_name="x:add")
        await backend.enqueue(poisoned)
        good = await queue.enqueue(tasks.add, 1, 2)
        worker = Worker(backend)
        await worker.start()
        try:
            result = await queue.get_result(poisoned.id, timeout=10)
            assert result is not None and result.status == "failed", result
            assert "cannot load task x:add" in (result.error or "") and "raised while loading" in (result.error or "")
            other = await queue.get_result(good, timeout=10)
            assert other is not None and queue.deserialize_result(other) == 3, "the worker must go on"
        finally:
            await worker.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["generator", "cancelled", "exit"])
async def test_a_result_raising_a_base_exception_as_it_loads_is_a_serialization_error(
    tmp_path: Path, kind: str
) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "r.db")) as queue:
        result = Result(id="t1", task_id="t1", status="success", value=pickle.dumps(Poison(kind)))
        with pytest.raises(SerializationError, match="cannot read the result of task t1"):
            queue.deserialize_result(result)
