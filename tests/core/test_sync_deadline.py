"""A sync task's timeout counts from when its thread starts it, whatever blocks the event loop meanwhile.

docs/how-to/workers.md: "A sync task's timeout counts from when its thread
starts it … it is reported as timed out at the deadline". An async task that
blocks the loop delayed the worker's notice of the thread's start, and with it
the deadline: a sync task that ran past its timeout ended ``success``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, TaskQueue, Worker

_BOUND = 10.0  # seconds any event below is waited for at most: a broken worker fails the test, never hangs it

THREAD_STARTED = threading.Event()  # the sync task's thread began its call
THREAD_DONE = threading.Event()  # the sync task's function is about to return
LOOP_FREE = threading.Event()  # the loop-blocking task is about to return (the loop answers again)


@pytest.fixture(autouse=True)
def fresh_events() -> Iterator[None]:
    for event in (THREAD_STARTED, THREAD_DONE, LOOP_FREE):
        event.clear()
    yield
    for event in (THREAD_STARTED, THREAD_DONE, LOOP_FREE):
        event.set()  # never leave a thread (or the loop) waiting


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "deadline.db")) as q:
        yield q


def runs_past_its_timeout(hold: float) -> str:
    """Sync: starts, runs ``hold`` seconds (longer than its timeout), returns."""
    THREAD_STARTED.set()
    time.sleep(hold)
    THREAD_DONE.set()
    return "done"


def returns_once_the_loop_is_free() -> str:
    """Sync: starts, then returns as soon as the loop-blocking task lets the loop go (past its deadline)."""
    THREAD_STARTED.set()
    LOOP_FREE.wait(_BOUND)
    return "done"


async def blocks_the_loop_until_the_thread_returned() -> None:
    """Async, blocking the loop on purpose: from the sync task's start until its function returned."""
    THREAD_STARTED.wait(_BOUND)
    THREAD_DONE.wait(_BOUND)


async def blocks_the_loop_past_the_deadline(seconds: float) -> None:
    """Async, blocking the loop on purpose: from the sync task's start for ``seconds``, then lets it return."""
    THREAD_STARTED.wait(_BOUND)
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is what this task is for
    LOOP_FREE.set()


async def _run(queue: TaskQueue, calls: list[tuple[object, tuple[object, ...]]]) -> list[str]:
    """Enqueue ``calls`` with a 1 s timeout and work them on a two-slot worker; the results' (status, error)."""
    ids = await queue.with_options(timeout=1).enqueue_many(calls)
    worker = Worker(queue.backend, max_concurrency=2)
    await worker.start()
    try:
        results = [await queue.get_result(task_id, timeout=_BOUND * 2) for task_id in ids]
    finally:
        await worker.stop()
    return [f"{r.status}: {r.error}" if r is not None else "no result" for r in results]


@pytest.mark.asyncio
async def test_a_sync_task_that_returned_past_its_deadline_while_the_loop_was_blocked_timed_out(
    queue: TaskQueue,
) -> None:
    sync_outcome, _blocker = await _run(
        queue, [(runs_past_its_timeout, (1.5,)), (blocks_the_loop_until_the_thread_returned, ())]
    )
    assert sync_outcome == "failed: task timed out after 1 s"


@pytest.mark.asyncio
async def test_a_sync_task_still_running_when_the_loop_gets_free_past_its_deadline_times_out_then(
    queue: TaskQueue,
) -> None:
    """Its deadline passed while the loop was blocked: it is timed out as the loop answers, not 1 s later
    (by when it has returned, and would have ended ``success``)."""
    sync_outcome, _blocker = await _run(
        queue, [(returns_once_the_loop_is_free, ()), (blocks_the_loop_past_the_deadline, (1.5,))]
    )
    assert sync_outcome == "failed: task timed out after 1 s"


def raises_its_own_timeout() -> None:
    raise TimeoutError("the remote service did not answer")


@pytest.mark.asyncio
async def test_a_sync_task_s_own_timeout_error_before_its_deadline_keeps_its_message(queue: TaskQueue) -> None:
    (outcome,) = await _run(queue, [(raises_its_own_timeout, ())])
    assert outcome == "failed: the remote service did not answer"


def quick() -> str:
    return "done"


@pytest.mark.asyncio
async def test_a_sync_task_within_its_timeout_succeeds(queue: TaskQueue) -> None:
    (outcome,) = await _run(queue, [(quick, ())])
    assert outcome == "success: None"
