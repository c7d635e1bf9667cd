"""``stop()`` handed to the worker's own loop from another thread, while ``run_until_complete(run())`` drives it.

A program runs ``loop.run_until_complete(worker.run())`` in a background
thread and stops it with ``asyncio.run_coroutine_threadsafe(worker.stop(),
loop).result()``. The worker stopped, but run() returned a step before the
stop() did: ``run_until_complete`` stopped the loop there, so the stop's
future never completed (``result()`` timed out) and the loop's garbage
collection said "Task was destroyed but it is pending!". run() now returns
only once every stop() awaited on its loop has returned.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import InThread, wait_until_sync

BOUND = 10.0  # seconds any stop here may take at most (an idle or drained stop takes milliseconds)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop for the worker's thread, left open after run() returns (as is common), closed at the end."""
    made = asyncio.new_event_loop()
    yield made
    made.close()


def run_until_complete(worker: Worker, loop: asyncio.AbstractEventLoop) -> InThread:
    """``loop.run_until_complete(worker.run(handle_signals=False))`` in a thread, once the worker runs."""
    runner = InThread(lambda: loop.run_until_complete(worker.run(handle_signals=False)), "worker-run")
    wait_until_sync(lambda: worker.running)
    return runner


def pending_on(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    """The tasks left unfinished on ``loop`` (not running any more): each would be destroyed pending."""
    assert not loop.is_running()
    return asyncio.all_tasks(loop)


async def _enqueue(url: str, fn: Any, *args: Any) -> str:
    async with TaskQueue(url) as queue:
        return await queue.enqueue(fn, *args)


async def _status(url: str, task_id: str) -> TaskStatus:
    async with TaskQueue(url) as queue:
        task = await queue.get_task(task_id)
        assert task is not None
        return task.status


def test_an_idle_worker_stopped_threadsafe_completes_the_stops_future(
    url: str, loop: asyncio.AbstractEventLoop
) -> None:
    worker = Worker(url)
    runner = run_until_complete(worker, loop)
    began = time.monotonic()
    asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(BOUND)  # timed out: the future never completed
    assert time.monotonic() - began < 5.0
    runner.result()
    assert not worker.running
    assert pending_on(loop) == set()  # Worker.stop() and Worker._stop_now() were left pending


def test_a_draining_stop_threadsafe_completes_after_the_task_ends(
    url: str, loop: asyncio.AbstractEventLoop, gate: None
) -> None:
    worker = Worker(url)
    runner = run_until_complete(worker, loop)
    task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate))
    assert tasks.GATE_REACHED.wait(BOUND)
    stopping = asyncio.run_coroutine_threadsafe(worker.stop(), loop)
    wait_until_sync(lambda: worker._stopping is not None and worker._stopping.is_set())
    assert not stopping.done()  # it waits for the running task
    tasks.GATE.set()
    stopping.result(BOUND)
    runner.result()
    assert asyncio.run(_status(url, task_id)) == TaskStatus.SUCCESS
    assert pending_on(loop) == set()


def test_a_stop_with_a_timeout_threadsafe_gives_the_task_back_and_completes(
    url: str, loop: asyncio.AbstractEventLoop, gate: None
) -> None:
    worker = Worker(url)
    runner = run_until_complete(worker, loop)
    task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate, 60.0))
    assert tasks.GATE_REACHED.wait(BOUND)
    asyncio.run_coroutine_threadsafe(worker.stop(timeout=0.1), loop).result(BOUND)
    runner.result()
    assert asyncio.run(_status(url, task_id)) == TaskStatus.QUEUED  # given back: another worker takes it at once
    assert pending_on(loop) == set()


def test_two_stops_threadsafe_both_complete(url: str, loop: asyncio.AbstractEventLoop) -> None:
    worker = Worker(url)
    runner = run_until_complete(worker, loop)
    first = asyncio.run_coroutine_threadsafe(worker.stop(), loop)
    second = asyncio.run_coroutine_threadsafe(worker.stop(timeout=5), loop)
    first.result(BOUND)
    second.result(BOUND)
    runner.result()
    assert pending_on(loop) == set()


def test_a_stop_from_another_loop_leaves_nothing_pending_on_the_workers_loop(
    url: str, loop: asyncio.AbstractEventLoop
) -> None:
    """The stop handed over to the worker's loop ends there before run() returns, not a step after."""
    worker = Worker(url)
    runner = run_until_complete(worker, loop)
    stopper = InThread(lambda: asyncio.run(worker.stop()), "stopper")
    stopper.result()
    runner.result()
    assert pending_on(loop) == set()


def test_a_stop_threadsafe_while_run_connects_completes(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    """The stop wins over the connect; run() returns at once, and the stop() waiting for start() returns first."""
    connecting = threading.Event()

    class NeverConnects(SQLiteBackend):
        async def connect(self) -> None:
            connecting.set()
            await asyncio.Event().wait()  # a store locked by another process: only the stop ends this

    worker = Worker(NeverConnects(tmp_path / "app.db"))
    runner = InThread(lambda: loop.run_until_complete(worker.run(handle_signals=False)), "worker-run")
    assert connecting.wait(BOUND)
    asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(BOUND)
    runner.result()
    assert not worker.running and worker._starting is None
    assert pending_on(loop) == set()
