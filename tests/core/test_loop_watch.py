"""An async task that blocks the event loop stops every lease renewal: the worker warns while it lasts."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until, wait_until_sync


class WarnedOfBlockedLoop(logging.Handler):
    """Unblocks ``tasks.blocks_the_loop`` once the worker has logged its warning: no sleep, no timing."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING and "has not responded" in record.getMessage():
            tasks.LOOP_BLOCK_WARNED.set()


@pytest.fixture
def warned_handler() -> Iterator[None]:
    tasks.LOOP_BLOCK_WARNED.clear()
    handler = WarnedOfBlockedLoop()
    logger = logging.getLogger("sitq.worker")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        tasks.LOOP_BLOCK_WARNED.set()  # a task still blocking (a failed test) lets go


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sitq-loopwatch")]


LEASE = 2.0  # long enough that a loaded machine's stalls stay short of half of it; the blocks here last until warned


def not_responded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "has not responded" in r.getMessage()]


def stalled_for(warning: str) -> float:
    found = re.search(r"has not responded for ([0-9.]+) s", warning)
    assert found is not None, warning
    return float(found.group(1))


@pytest.mark.asyncio
@pytest.mark.usefixtures("warned_handler")
async def test_an_async_task_blocking_the_loop_is_named_in_a_warning_while_it_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A time.sleep in an async task stopped the renewals of every lease the worker held, silently: another
    worker then ran the innocent sync task beside it a second time, and the blocking task's outcome was refused.
    The warning comes once the loop has stood still for half the lease: a renewal is overdue by then, and a
    lease may run out soon after (a stall of a third of it, one renewal period, put no lease at risk)."""
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    tasks.GATE.clear()
    tasks.GATE_REACHED.clear()
    async with TaskQueue(SQLiteBackend(tmp_path / "block.db")) as queue:
        worker = Worker(queue.backend, max_concurrency=2, lease_timeout=LEASE)
        await worker.start()
        try:
            innocent = await queue.enqueue(tasks.wait_for_gate, 30)  # a sync task, safe in its thread
            await asyncio.to_thread(tasks.GATE_REACHED.wait, 10)
            blocker = await queue.enqueue(tasks.blocks_the_loop, 30)
            result = await queue.get_result(blocker, timeout=60)
            assert result is not None and queue.deserialize_result(result) == "warned", "no warning while blocked"
            tasks.GATE.set()
            assert (await queue.get_result(innocent, timeout=30)) is not None
            await wait_until(lambda: asyncio.sleep(0, "responded again" in caplog.text))
        finally:
            tasks.GATE.set()
            await worker.stop()
    # a loaded machine may stall the loop past half the lease again; the block is the one naming the blocker
    warning = next(w for w in not_responded(caplog) if str(blocker) in w)
    assert f"async task {blocker} (sitq_test_tasks:blocks_the_loop) is blocking it" in warning
    assert stalled_for(warning) >= LEASE / 2 - 0.05  # printed to 0.1 s
    assert "lease" in warning and "asyncio.to_thread" in warning and "run_in_executor" in warning
    assert innocent not in warning  # a sync task in its thread does not block the loop
    assert "blocks_the_loop at sitq_test_tasks.py" in warning  # where it blocks: the task's code ...
    assert "worker.py" not in warning and "events.py" not in warning  # ... not sitq's or asyncio's frames
    wait_until_sync(lambda: not watch_threads())  # the watch ends with the worker


@pytest.mark.asyncio
@pytest.mark.usefixtures("warned_handler")
async def test_a_loop_stalled_outside_any_code_but_sitqs_and_pythons_is_said_to_get_no_cpu_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CPU-bound sync tasks (32 threads, lease_timeout=0.6) starved the loop of the GIL while it ran sitq's own
    code: the warnings said "other code on the loop is blocking it", showed sitq's frames (waiting for the GIL)
    as the culprit, and told to move async code into threads, though no async task ran. Stalled where nothing
    but sitq, asyncio and the standard library shows (here a callback that waits, as a loop waiting for the
    GIL does), the loop most likely gets no CPU time, and the warning says so."""
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    tasks.GATE.clear()
    tasks.GATE_REACHED.clear()
    async with TaskQueue(SQLiteBackend(tmp_path / "starved.db")) as queue:
        worker = Worker(queue.backend, max_concurrency=2, lease_timeout=LEASE)
        await worker.start()
        try:
            await queue.enqueue(tasks.wait_for_gate, 30)  # held: its lease needs the loop
            await asyncio.to_thread(tasks.GATE_REACHED.wait, 10)
            asyncio.get_running_loop().call_soon(tasks.LOOP_BLOCK_WARNED.wait, 30)
            await wait_until(lambda: asyncio.sleep(0, "responded again" in caplog.text), timeout=60)
        finally:
            tasks.GATE.set()
            await worker.stop()
    warning = not_responded(caplog)[0]
    assert "other code on the loop is blocking it" not in warning
    assert "no CPU time" in warning and "GIL" in warning and "max_concurrency" in warning
    assert "now in" not in warning and "threading.py" not in warning  # no frame of its own shown as the culprit
    assert "asyncio.to_thread" not in warning  # no async task to move into a thread
    assert stalled_for(warning) >= LEASE / 2 - 0.05


@pytest.mark.asyncio
async def test_the_loop_answering_again_says_whether_a_lease_may_have_run_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It said a lease "ran out meanwhile" after any stall; a stall shorter than the leases it holds left them
    all in force."""
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    tasks.GATE.clear()
    tasks.GATE_REACHED.clear()
    async with TaskQueue(SQLiteBackend(tmp_path / "answered.db")) as queue:
        worker = Worker(queue.backend, lease_timeout=60)
        await worker.start()
        try:
            await queue.enqueue(tasks.wait_for_gate, 30)
            await asyncio.to_thread(tasks.GATE_REACHED.wait, 10)
            worker._loop_answered(31.0)  # as the watch calls it: a stall of half this lease, and it was held anew
            worker._loop_answered(61.0)  # longer than any lease
        finally:
            tasks.GATE.set()
            await worker.stop()
    short, long = [r.getMessage() for r in caplog.records if "responded again" in r.getMessage()]
    assert "may have run out" not in short and "before any lease it holds ran out" in short, short
    assert "may have run out" in long, long


@pytest.mark.asyncio
async def test_an_idle_or_stopped_worker_keeps_no_watch_thread_of_its_own(tmp_path: Path) -> None:
    before = set(watch_threads())
    async with TaskQueue(SQLiteBackend(tmp_path / "idle.db")) as queue:
        for _ in range(3):  # started and stopped again: one watch at a time, none left behind
            worker = Worker(queue.backend, lease_timeout=0.6)
            await worker.start()
            assert len(set(watch_threads()) - before) == 1
            task_id = await queue.enqueue(tasks.add, 1, 2)
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None and result.status == "success"
            await worker.stop()
            wait_until_sync(lambda: not set(watch_threads()) - before)
        assert (await queue.get_task(task_id)) is not None
        assert (await queue.get_task(task_id)).status == TaskStatus.SUCCESS  # type: ignore[union-attr]


def test_the_watch_ends_with_a_loop_closed_while_its_worker_ran(tmp_path: Path) -> None:
    """loop.run_until_complete(worker.start()); loop.close(): never stopped, an idle worker never pinged its loop,
    so its watch thread never learnt the loop was gone and woke forever. In a child process: the worker's
    coroutines, destroyed pending with the loop, complain when collected, which is not what is tested here."""
    script = f"""
import asyncio, threading
from sitq import SQLiteBackend, Worker
from sitq_test_helpers import wait_until_sync

worker = Worker(SQLiteBackend({str(tmp_path / "closed.db")!r}), lease_timeout=0.6)
name = "sitq-loopwatch-" + worker.worker_id
loop = asyncio.new_event_loop()
loop.run_until_complete(worker.start())
assert any(t.name == name for t in threading.enumerate()), "no watch"
loop.close()
wait_until_sync(lambda: not any(t.name == name for t in threading.enumerate()))
print("watch ended")
"""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # sitq_test_helpers
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert "watch ended" in done.stdout, done.stderr[-3000:]


async def blocks_the_loop_for(seconds: float) -> None:
    """An async task that blocks its event loop with ``time.sleep`` (the mistake under test)."""
    time.sleep(seconds)  # noqa: ASYNC251 (blocking the loop is the point)


@pytest.mark.asyncio
async def test_tasks_dropped_after_a_blocked_loop_do_not_blame_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prefetched task whose lease ran out while an async task blocked the loop was let go with "their leases
    ran out while the store could not renew them": the store was fine, the loop never sent the renewal."""
    caplog.set_level(logging.WARNING, logger="sitq.worker")
    lease = 1.0
    async with TaskQueue(SQLiteBackend(tmp_path / "dropped.db")) as queue:
        blocker, waiting = await queue.enqueue_many([(blocks_the_loop_for, (lease * 1.5,), {}), (tasks.add, (1,), {})])
        worker = Worker(queue.backend, max_concurrency=1, prefetch=1, lease_timeout=lease)
        await worker.start()
        try:
            for task_id in (blocker, waiting):  # the waiting one runs again from the queue
                result = await queue.get_result(task_id, timeout=30)
                assert result is not None
        finally:
            await worker.stop()
    dropped = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
    assert dropped, caplog.text
    assert "event loop was blocked" in dropped[0] and "store" not in dropped[0], dropped[0]
