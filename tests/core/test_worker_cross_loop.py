"""``stop()`` awaited on another event loop than the worker's (a sync program stopping its worker thread).

A program that runs ``asyncio.run(worker.run())`` in a background thread
stops it from its own thread with ``asyncio.run(worker.stop())``. That stop
used to run on the caller's loop, beside a worker whose tasks and events
live on the other one: an idle worker's stop took 12 s and ``run()`` never
returned; with a task running, the stop hung and the worker stopped
processing. The stop is now handed to the worker's own loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import InThread, wait_until_sync

BOUND = 10.0  # seconds any stop here may take at most (an idle or drained stop takes milliseconds)


def stop_from_another_thread(worker: Worker, timeout: float | None = None) -> InThread:
    """``asyncio.run(worker.stop())`` in a plain thread of its own (that thread's own event loop)."""
    return InThread(lambda: asyncio.run(worker.stop(timeout)), "stopper")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


def run_in_thread(worker: Worker) -> InThread:
    runner = InThread(lambda: asyncio.run(worker.run()), "worker-run")
    wait_until_sync(lambda: worker.running)
    return runner


async def _enqueue(url: str, fn: Any, *args: Any) -> str:
    async with TaskQueue(url) as queue:
        return await queue.enqueue(fn, *args)


async def _status(url: str, task_id: str) -> TaskStatus:
    async with TaskQueue(url) as queue:
        task = await queue.get_task(task_id)
        assert task is not None
        return task.status


def test_idle_run_in_a_thread_is_stopped_from_another_loop(url: str) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    began = time.monotonic()
    stop_from_another_thread(worker).result()
    assert time.monotonic() - began < 5.0  # it took 12 s
    assert not worker.running
    runner.result()  # run() returns


def test_the_stop_drains_a_running_sync_task_then_returns(url: str, gate: None) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate))
    assert tasks.GATE_REACHED.wait(BOUND)
    stopper = stop_from_another_thread(worker)
    wait_until_sync(lambda: worker._stopping is not None and worker._stopping.is_set())
    assert not stopper.done.is_set()  # it waits for the running task
    tasks.GATE.set()
    stopper.result()
    runner.result()
    assert not worker.running
    assert asyncio.run(_status(url, task_id)) == TaskStatus.SUCCESS


def test_a_timeout_gives_the_running_task_back(url: str, gate: None) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate, 60.0))
    assert tasks.GATE_REACHED.wait(BOUND)
    stop_from_another_thread(worker, timeout=0.1).result()
    runner.result()
    assert asyncio.run(_status(url, task_id)) == TaskStatus.QUEUED  # given back: another worker takes it at once


def test_a_worker_started_on_a_loop_in_a_thread_is_stopped_from_another_loop(url: str) -> None:
    loop = asyncio.new_event_loop()
    looper = InThread(loop.run_forever, "loop")
    try:
        worker = Worker(url)
        asyncio.run_coroutine_threadsafe(worker.start(), loop).result(BOUND)
        assert worker.running
        stop_from_another_thread(worker).result()
        assert not worker.running
    finally:
        loop.call_soon_threadsafe(loop.stop)
        looper.result()
        loop.close()


def test_two_stops_from_two_threads_both_return(url: str, gate: None) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    asyncio.run(_enqueue(url, tasks.wait_for_gate))
    assert tasks.GATE_REACHED.wait(BOUND)
    first = stop_from_another_thread(worker)
    second = stop_from_another_thread(worker)
    wait_until_sync(lambda: worker._stopping is not None and worker._stopping.is_set())
    tasks.GATE.set()
    first.result()
    second.result()
    runner.result()
    stop_from_another_thread(worker).result()  # a stop after the end returns at once


def test_a_caller_that_gives_up_leaves_the_stop_going(url: str, gate: None) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate))
    assert tasks.GATE_REACHED.wait(BOUND)
    impatient = InThread(lambda: asyncio.run(asyncio.wait_for(worker.stop(), 0.05)), "impatient")
    with pytest.raises(TimeoutError):
        impatient.result()
    assert worker.running and worker._stopping is not None and worker._stopping.is_set()  # it drains on
    tasks.GATE.set()
    runner.result()
    assert not worker.running
    assert asyncio.run(_status(url, task_id)) == TaskStatus.SUCCESS


def test_a_bad_timeout_raises_in_the_caller_and_the_worker_goes_on(url: str) -> None:
    worker = Worker(url)
    runner = run_in_thread(worker)
    with pytest.raises(ValidationError):
        stop_from_another_thread(worker, timeout=-1).result()
    assert worker.running
    stop_from_another_thread(worker).result()
    runner.result()


def test_a_stop_before_start_from_another_loop_returns(url: str) -> None:
    worker = Worker(url)
    stop_from_another_thread(worker).result()
    assert not worker.running


def test_a_worker_whose_loop_is_stopped_but_open_is_not_waited_for(url: str) -> None:
    """Its stop needs that loop to run: stop() says so at once instead of waiting for it."""
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(url)
        loop.run_until_complete(worker.start())
        with pytest.raises(RuntimeError, match="not running"):
            stop_from_another_thread(worker).result()
        assert worker.running
        loop.run_until_complete(worker.stop())  # on its own loop, as the message says
        assert not worker.running
    finally:
        loop.close()


# the worker's tasks, pending on the closed loop, are destroyed at the gc.collect() below (asyncio logs that)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_a_worker_whose_loop_was_closed_under_it_is_marked_stopped(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing of it can run any more: the stop returns, and says its tasks run again when their leases expire."""
    loop = asyncio.new_event_loop()
    worker = Worker(url)
    loop.run_until_complete(worker.start())
    loop.close()  # its tasks never cancelled: no give-back could run
    with caplog.at_level(logging.WARNING, logger="sitq.worker"):
        stop_from_another_thread(worker).result()
    assert not worker.running
    assert "event loop was closed" in caplog.text
    del worker, loop
    gc.collect()  # here, not in the next test


def test_run_in_a_thread_says_why_no_signal_handlers(url: str, caplog: pytest.LogCaptureFixture) -> None:
    worker = Worker(url)
    with caplog.at_level(logging.DEBUG, logger="sitq.worker"):
        runner = run_in_thread(worker)
        stop_from_another_thread(worker).result()
        runner.result()
    lines = [r for r in caplog.records if "signal handlers" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG, [r.getMessage() for r in lines]


WORKERS: dict[str, Worker] = {}


def stops_its_worker(url: str) -> str:
    """A sync task that stops the worker running it from its own thread, on a loop of its own."""
    asyncio.run(WORKERS[url].stop())  # returns at once: waiting would wait for this task itself
    return "stopping"


def test_a_sync_task_stops_its_own_worker_with_asyncio_run(url: str) -> None:
    worker = WORKERS[url] = Worker(url)
    try:
        runner = run_in_thread(worker)
        task_id = asyncio.run(_enqueue(url, stops_its_worker, url))
        runner.result()  # the worker stopped once the task had ended
        assert asyncio.run(_status(url, task_id)) == TaskStatus.SUCCESS
    finally:
        del WORKERS[url]


def run_until_complete_in_thread(worker: Worker, loop: asyncio.AbstractEventLoop) -> InThread:
    """``loop.run_until_complete(worker.run())`` in a thread, the loop left open afterwards (as is common)."""
    runner = InThread(lambda: loop.run_until_complete(worker.run()), "worker-run")
    wait_until_sync(lambda: worker.running)
    return runner


def test_a_run_driven_by_run_until_complete_is_stopped_from_another_loop(url: str) -> None:
    """run()'s end stops that loop before it hands the stop's end over (one more step): the stop hung, polling."""
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(url)
        runner = run_until_complete_in_thread(worker, loop)
        began = time.monotonic()
        stop_from_another_thread(worker).result()
        assert time.monotonic() - began < 5.0
        runner.result()
        assert not worker.running
    finally:
        loop.close()


def test_a_timeout_there_gives_the_running_task_back_before_the_stop_returns(url: str, gate: None) -> None:
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(url)
        runner = run_until_complete_in_thread(worker, loop)
        task_id = asyncio.run(_enqueue(url, tasks.wait_for_gate, 60.0))
        assert tasks.GATE_REACHED.wait(BOUND)
        stop_from_another_thread(worker, timeout=0.1).result()
        assert asyncio.run(_status(url, task_id)) == TaskStatus.QUEUED  # given back already
        runner.result()
    finally:
        loop.close()


class CloseFails(SQLiteBackend):
    async def close(self) -> None:
        await super().close()
        raise OSError("the store could not be closed")


def test_the_stops_error_reaches_the_caller_when_that_loop_stopped_at_once(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(CloseFails(tmp_path / "app.db"))
        worker._owns_backend = True  # as for a URL: the stop closes it, and that fails
        runner = run_until_complete_in_thread(worker, loop)
        with pytest.raises(OSError, match="could not be closed"):
            stop_from_another_thread(worker).result()
        runner.result()
        assert not worker.running
    finally:
        loop.close()


def test_a_start_on_another_loop_during_the_stops_first_step_gets_the_stop(url: str) -> None:
    """stop() looked for the worker's loop once, before its ``sleep(0)``: a start() on another thread during that
    sleep had the stop run here, on the caller's loop, with the objects of the worker's loop."""
    worker = Worker(url)
    loop = asyncio.new_event_loop()
    try:
        stopping = loop.create_task(worker.stop())
        loop.call_soon(loop.stop)
        loop.run_forever()  # one step: the stop waits in its sleep(0), nothing running or starting
        assert not stopping.done()
        runner = run_in_thread(worker)
        began = time.monotonic()
        loop.run_until_complete(asyncio.wait_for(stopping, BOUND))
        assert time.monotonic() - began < 5.0
        runner.result()
        assert not worker.running
    finally:
        loop.close()


def test_a_run_still_connecting_under_run_until_complete_is_stopped_from_another_loop(tmp_path: Path) -> None:
    """The stop wins over the connect, run() returns and that loop stops a step before the stop's own end."""
    connecting = threading.Event()

    class NeverConnects(SQLiteBackend):
        async def connect(self) -> None:
            connecting.set()
            await asyncio.Event().wait()  # a store locked by another process: only the stop ends this

    loop = asyncio.new_event_loop()
    try:
        worker = Worker(NeverConnects(tmp_path / "app.db"))
        runner = InThread(lambda: loop.run_until_complete(worker.run()), "worker-run")
        assert connecting.wait(BOUND)
        stop_from_another_thread(worker).result()
        runner.result()
        assert not worker.running and worker._starting is None
        assert asyncio.all_tasks(loop) == set()  # the stop handed there ended before run() returned
    finally:
        loop.close()


def test_the_stops_error_reaches_the_caller_when_that_loop_stops_before_the_stop_returns(
    tmp_path: Path, gate: None
) -> None:
    """As an application that stops its loop once the stop has ended: the stop handed there never returns."""
    loop = asyncio.new_event_loop()
    looper = InThread(loop.run_forever, "loop")
    try:
        worker = Worker(CloseFails(tmp_path / "app.db"))
        worker._owns_backend = True  # as for a URL: the stop closes it, and that fails
        asyncio.run_coroutine_threadsafe(worker.start(), loop).result(BOUND)
        asyncio.run(_enqueue(f"sqlite:///{tmp_path / 'app.db'}", tasks.wait_for_gate))
        assert tasks.GATE_REACHED.wait(BOUND)
        stopper = stop_from_another_thread(worker)
        wait_until_sync(lambda: worker._stop_task is not None)

        def stop_the_loop_as_the_stop_ends() -> None:
            assert worker._stop_task is not None
            worker._stop_task.add_done_callback(lambda _: loop.stop())

        loop.call_soon_threadsafe(stop_the_loop_as_the_stop_ends)
        tasks.GATE.set()
        looper.result()
        with pytest.raises(OSError, match="could not be closed"):
            stopper.result()
        assert not worker.running
        loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop)))  # the stop handed there ends too
    finally:
        loop.call_soon_threadsafe(loop.stop)
        looper.result()
        loop.close()
