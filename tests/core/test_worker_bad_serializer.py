"""A third-party serializer that hands the worker the wrong thing fails that one task; the worker goes on.

A ``loads_call`` returning something other than ``(callable, args, kwargs)`` left the task ``running`` for
good with its slot held (the unpacking raised inside a background asyncio task); a ``dumps`` returning
``str`` or ``None`` for a task's return value stored it as a success that could not be read, or as ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sitq import CloudpickleSerializer, SQLiteBackend, TaskQueue, Worker
from sitq_core.serializers import CallSpec

import sitq_test_tasks as tasks

_BAD_CALLS: dict[str, Any] = {
    "text": "nope",
    "none": None,
    "pair": (tasks.add, (1, 2)),
    "not-callable": ("tasks.add", (1, 2), {}),
    "args-not-iterable": (tasks.add, 5, {}),
    "args-text": (tasks.add, "12", {}),
    "kwargs-not-a-mapping": (tasks.add, (1,), [("b", 2)]),
    "kwargs-key-not-str": (tasks.add, (1,), {1: 2}),
}

_SAYS = {
    "text": "returned str, not a (func, args, kwargs) tuple",
    "none": "returned NoneType, not a (func, args, kwargs) tuple",
    "pair": "returned a tuple of 2 items, not a (func, args, kwargs) tuple",
    "not-callable": "returned a call whose func is a str, not a callable",
    "args-not-iterable": "returned a call whose args is an int, not a tuple or list",
    "args-text": "returned a call whose args is a str, not a tuple or list",
    "kwargs-not-a-mapping": "returned a call whose kwargs is a list, not a mapping",
    "kwargs-key-not-str": "returned a call whose kwargs has a key that is not a str (an int)",
}


class WrongCalls(CloudpickleSerializer):
    """Loads a call whose first argument is ``"bad"`` as the wrong thing (what a broken plugin might return)."""

    name = "wrongcalls"

    def __init__(self, bad: Any = None) -> None:
        super().__init__()
        self.bad = bad

    def loads_call(self, data: bytes) -> CallSpec:
        func, args, kwargs = super().loads_call(data)
        if args[:1] == ("bad",):
            return self.bad  # type: ignore[no-any-return]
        return func, args, kwargs


class WrongValues(CloudpickleSerializer):
    """``dumps`` of a task's return value ``"bad"`` returns ``self.bad`` instead of bytes."""

    name = "wrongvalues"

    def __init__(self, bad: Any = None) -> None:
        super().__init__()
        self.bad = bad

    def dumps(self, obj: Any) -> bytes:
        if obj == "bad":
            return self.bad  # type: ignore[no-any-return]
        return super().dumps(obj)


async def _run_pair(path: Path, serializer: Any, bad: tuple[Any, ...], good: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """Enqueue a bad then a good task, run one real worker (one slot) on them; the results and the final counts."""
    async with TaskQueue(SQLiteBackend(path), serializer=serializer) as queue:
        bad_id = await queue.enqueue(*bad)
        good_id = await queue.enqueue(*good)
        worker = Worker(SQLiteBackend(path), serializer=serializer, max_concurrency=1, poll_interval=0.05)
        await worker.start()
        try:
            bad_result = await queue.get_result(bad_id, timeout=10)
            good_result = await queue.get_result(good_id, timeout=10)
            again = await queue.get_result(await queue.enqueue(tasks.add, 20, 22), timeout=10)
        finally:
            await worker.stop()
        assert again is not None and queue.deserialize_result(again) == 42, "the worker must keep serving"
        return bad_result, good_result, await queue.counts()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(_BAD_CALLS))
async def test_a_loads_call_returning_the_wrong_thing_fails_that_task_and_the_worker_goes_on(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    serializer = WrongCalls(_BAD_CALLS[kind])
    with caplog.at_level(logging.ERROR):
        failed, good, counts = await _run_pair(tmp_path / "q.db", serializer, (tasks.add, "bad"), (tasks.add, 1, 2))
    assert failed is not None and failed.status == "failed", failed
    error = failed.error or ""
    assert error.startswith("cannot load task sitq_test_tasks:add: serializer 'wrongcalls' loads_call "), error
    assert _SAYS[kind] in error, error
    assert "Serializer.loads_call must return (func, args, kwargs)" in error, error
    assert "argument after" not in error  # the bare TypeError of the unpacking is no part of it
    assert failed.attempts == 1  # final: the same payload loads the same way on every worker
    assert good is not None and good.status == "success"
    assert counts["running"] == 0 and counts["queued"] == 0
    assert "Task exception was never retrieved" not in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "call",
    [
        (tasks.add, [40, 2], {}),
        (tasks.add, (40,), types.MappingProxyType({"b": 2})),
        [tasks.add, range(40, 42, 1), {}],
    ],
    ids=["args-list", "kwargs-mapping", "list-of-three"],
)
async def test_a_loads_call_returning_any_sequence_and_mapping_runs(tmp_path: Path, call: Any) -> None:
    """A list of arguments or a read-only mapping is what JSON or msgpack plugins naturally hand back."""
    serializer = WrongCalls(call)
    ran, good, _counts = await _run_pair(tmp_path / "q.db", serializer, (tasks.add, "bad"), (tasks.add, 1, 2))
    assert ran is not None and ran.status == "success", ran
    assert CloudpickleSerializer().loads(ran.value) == (81 if isinstance(call[1], range) else 42)
    assert good is not None and good.status == "success"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("bad", "says"), [("text", "returned str"), (None, "returned NoneType"), (12, "returned int")], ids=str
)
async def test_a_dumps_of_the_return_value_that_is_not_bytes_fails_that_task(
    tmp_path: Path, bad: Any, says: str
) -> None:
    """A str was stored as a success get_result then called failed; None lost the value as a success."""
    serializer = WrongValues(bad)
    failed, good, counts = await _run_pair(tmp_path / "q.db", serializer, (tasks.echo, "bad"), (tasks.add, 1, 2))
    assert failed is not None and failed.status == "failed", failed
    assert failed.value is None
    error = failed.error or ""
    assert error.startswith(f"cannot serialise the return value: serializer 'wrongvalues' {says}, not bytes"), error
    assert "(Serializer.dumps must return bytes)" in error, error
    assert good is not None and good.status == "success"
    assert counts["running"] == 0


@pytest.mark.asyncio
async def test_a_dumps_returning_a_bytearray_is_stored_as_bytes(tmp_path: Path) -> None:
    """As enqueue accepts it (and a memoryview) for a payload."""
    serializer = WrongValues(bytearray(CloudpickleSerializer().dumps("stored")))
    ran, _good, _counts = await _run_pair(tmp_path / "q.db", serializer, (tasks.echo, "bad"), (tasks.add, 1, 2))
    assert ran is not None and ran.status == "success"
    assert type(ran.value) is bytes and CloudpickleSerializer().loads(ran.value) == "stored"


class _ClockFailingOnce:
    """A backend clock that raises once, when read from inside the asyncio task of a running task (or batch)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.armed = True

    def __call__(self) -> datetime:
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no loop: a thread of the backend's
            current = None
        if self.armed and current is not None and current.get_name().startswith(self.prefix):
            self.armed = False
            raise RuntimeError("clock broke")
        return datetime.now(UTC)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("func", "prefix"), [(tasks.async_add, "sitq-task-"), (tasks.add, "sitq-batch-")], ids=["async", "sync-batch"]
)
async def test_an_error_of_the_worker_itself_around_a_call_fails_the_task_and_is_logged_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, func: Any, prefix: str
) -> None:
    """Anything raised in the worker's own steps around a task must not leave it running with its slot held."""
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        ids = [await queue.enqueue(func, n, 1) for n in range(3)]  # sync ones share a thread batch
        backend = SQLiteBackend(path)
        backend.clock = _ClockFailingOnce(prefix)  # type: ignore[method-assign]
        worker = Worker(backend, max_concurrency=1, poll_interval=0.05, prefetch=4)  # all three reserved at once
        with caplog.at_level(logging.ERROR, logger="sitq"):
            await worker.start()
            try:
                results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
                logged = [record for record in caplog.records if record.levelno >= logging.ERROR]
                after = await queue.get_result(await queue.enqueue(func, 40, 2), timeout=10)
            finally:
                await worker.stop()
            counts = await queue.counts()
    assert all(result is not None for result in results), results
    failed = [result for result in results if result is not None and result.status == "failed"]
    assert len(failed) == 1, results
    assert failed[0].error == "the worker failed around this task's call (not an error of the task): clock broke"
    assert "RuntimeError: clock broke" in (failed[0].traceback or "")
    assert any("clock broke" in (record.exc_text or "") for record in logged), caplog.text
    assert after is not None and queue.deserialize_result(after) == 42
    assert counts["running"] == 0
