"""A forced stop (``stop(timeout=0)``, ``run()`` cancelled twice) while the store is slow to answer.

It cancels the async tasks still running and gives them back; a task whose
outcome is known by then (it had finished, its report waiting for the store,
or it ended as its cancel arrived) is reported, never given back to run
again. Before, the stop gave back every task it held, finished ones too,
while a lock held elsewhere delayed its calls: the outcomes waiting to be
reported were then dropped as "reclaimed by another worker" and those tasks
ran a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import Outcome, TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import SQLiteWriteLock, wait_until

# starts the worker; returns what ``Force`` needs to stop it at once
Begin = Callable[[Worker], Awaitable["asyncio.Task[None] | None"]]
Force = Callable[[Worker, "asyncio.Task[None] | None"], Awaitable[None]]


async def begin_with_start(worker: Worker) -> None:
    await worker.start()


async def force_with_stop_0(worker: Worker, runner: asyncio.Task[None] | None) -> None:
    await worker.stop(timeout=0)


async def begin_with_run(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run(handle_signals=False))


async def force_with_two_cancels(worker: Worker, runner: asyncio.Task[None] | None) -> None:
    assert runner is not None
    runner.cancel()  # drains, as a first signal does
    await wait_until(lambda: asyncio.sleep(0, worker._stopping is not None and worker._stopping.is_set()))
    runner.cancel()  # stops at once, as a second signal does
    with contextlib.suppress(asyncio.CancelledError):
        await runner


WAYS = [
    pytest.param(begin_with_start, force_with_stop_0, id="stop-timeout-0"),
    pytest.param(begin_with_run, force_with_two_cancels, id="run-cancelled-twice"),
]


class Gates:
    """Named ``tasks.LOOP_GATES`` for one test (unique names), all opened at the end."""

    def __init__(self, marks: Path) -> None:
        self.marks = marks
        self.prefix = uuid.uuid4().hex[:8]

    def name(self, key: str) -> str:
        return f"{self.prefix}-{key}"

    def add(self, key: str) -> str:
        name = self.name(key)
        tasks.LOOP_GATES[name] = asyncio.Event()
        tasks.LOOP_GATES[name + "/late"] = asyncio.Event()
        return name

    def open(self, key: str) -> None:
        tasks.LOOP_GATES[self.name(key)].set()

    def lines(self) -> list[str]:
        return self.marks.read_text().splitlines() if self.marks.exists() else []

    async def seen(self, key: str, what: str) -> bool:
        return f"{self.name(key)} {what}" in self.lines()

    def close(self) -> None:
        for name in [n for n in tasks.LOOP_GATES if n.startswith(self.prefix)]:
            tasks.LOOP_GATES.pop(name).set()


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    opened = Gates(tmp_path / "marks.txt")
    yield opened
    opened.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("begin", "force"), WAYS)
async def test_a_forced_stop_reports_what_finished_and_gives_back_only_what_it_cancelled(
    tmp_path: Path, gates: Gates, caplog: pytest.LogCaptureFixture, begin: Begin, force: Force
) -> None:
    """a: finished, its report waits for the lock; b: finished behind it; c: cancelled; d: returns on its cancel."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    path = tmp_path / "forced.db"
    backend = SQLiteBackend(path, busy_timeout=60)  # the lock below never outlasts it
    async with TaskQueue(backend) as queue:
        ids = {
            key: await queue.enqueue(tasks.ends_at_gate, str(gates.marks), gates.add(key), on_cancel)
            for key, on_cancel in (("a", "raise"), ("b", "raise"), ("c", "raise"), ("d", "return"))
        }
        worker = Worker(backend, max_concurrency=4, shutdown_timeout=60)
        runner = await begin(worker)
        for key in ids:
            await wait_until(lambda key=key: gates.seen(key, "start"))
        lock = SQLiteWriteLock(path)
        try:
            gates.open("a")  # its report goes out and waits for the lock
            await wait_until(lambda: asyncio.sleep(0, "a" in _done(gates) and not worker._outcomes))
            gates.open("b")  # its outcome waits for that report to return
            await wait_until(lambda: asyncio.sleep(0, "b" in _done(gates) and len(worker._outcomes) == 1))
            stopping = asyncio.create_task(force(worker, runner))
            await wait_until(lambda: gates.seen("c", "cancelled"))
            await wait_until(lambda: gates.seen("d", "done"))
        finally:
            lock.release()
        await stopping
        found = {key: await queue.get_task(task_id) for key, task_id in ids.items()}
    statuses = {key: task.status if task is not None else None for key, task in found.items()}
    assert statuses == {
        "a": TaskStatus.SUCCESS,
        "b": TaskStatus.SUCCESS,
        "c": TaskStatus.QUEUED,  # given back, to run again elsewhere
        "d": TaskStatus.SUCCESS,
    }
    messages = [r.getMessage() for r in caplog.records if r.name == "sitq.worker"]
    assert not [m for m in messages if "reclaimed by another worker" in m]
    given_back = [m for m in messages if "still running at shutdown" in m]
    assert len(given_back) == 1 and ids["c"] in given_back[0]
    assert not [key for key in ("a", "b", "d") if ids[key] in given_back[0]]


@pytest.mark.asyncio
async def test_a_task_that_ends_after_the_stop_gave_it_back_is_not_said_to_be_reclaimed_by_another_worker(
    tmp_path: Path, gates: Gates, caplog: pytest.LogCaptureFixture
) -> None:
    """It swallowed its cancel and returned as its give-back was on its way: the log says why it is discarded."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    backend = SQLiteBackend(tmp_path / "late.db")
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(tasks.ends_at_gate, str(gates.marks), gates.add("e"), "linger")
        worker = Worker(backend, max_concurrency=1)
        await worker.start()
        await wait_until(lambda: gates.seen("e", "start"))
        giving_back, go_on = asyncio.Event(), asyncio.Event()
        finish_many = backend.finish_many

        async def slow_give_back(outcomes: list[Outcome]) -> list[bool]:
            """A store slow to take the give-back (a lock held elsewhere): held until the test goes on."""
            if any(o.kind == "release" for o in outcomes):
                giving_back.set()
                await go_on.wait()
            return await finish_many(outcomes)

        backend.finish_many = slow_give_back  # type: ignore[method-assign]
        stopping = asyncio.create_task(worker.stop(timeout=0))
        try:
            await wait_until(lambda: asyncio.sleep(0, giving_back.is_set()))
            tasks.LOOP_GATES[gates.name("e") + "/late"].set()  # it returns now
            await wait_until(lambda: asyncio.sleep(0, _logged(caplog, task_id, "discarded")))
        finally:
            go_on.set()
        await stopping
        task = await queue.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED
    assert not _logged(caplog, "reclaimed by another worker")
    (line,) = [r.getMessage() for r in caplog.records if task_id in r.getMessage() and "discarded" in r.getMessage()]
    assert "gave it back" in line


def _done(gates: Gates) -> set[str]:
    return {line.split()[0].rsplit("-", 1)[1] for line in gates.lines() if line.endswith(" done")}


def _logged(caplog: pytest.LogCaptureFixture, *parts: str) -> bool:
    return any(all(part in r.getMessage() for part in parts) for r in caplog.records)


@pytest.mark.asyncio
@pytest.mark.parametrize(("begin", "force"), WAYS)
@pytest.mark.parametrize("max_retries", [0, 2])
async def test_a_task_that_raises_on_the_stops_cancel_is_given_back_not_failed(
    tmp_path: Path, gates: Gates, caplog: pytest.LogCaptureFixture, begin: Begin, force: Force, max_retries: int
) -> None:
    """The error it raised is the stop's doing, not the task's: it runs again, with no attempt used up."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    async with TaskQueue(SQLiteBackend(tmp_path / "raises.db")) as queue:
        task_id = await queue.with_options(max_retries=max_retries).enqueue(
            tasks.ends_at_gate, str(gates.marks), gates.add("e"), "error"
        )
        worker = Worker(queue.backend, shutdown_timeout=60)
        runner = await begin(worker)
        await wait_until(lambda: gates.seen("e", "start"))
        await force(worker, runner)
        assert await gates.seen("e", "cancelled")
        task = await queue.get_task(task_id)
    assert task is not None
    assert (task.status, task.attempts, task.error) == (TaskStatus.QUEUED, 0, None)
    messages = [r.getMessage() for r in caplog.records if r.name == "sitq.worker"]
    assert [m for m in messages if "still running at shutdown" in m and task_id in m]
    assert not [m for m in messages if "failed after" in m or "will retry" in m]
