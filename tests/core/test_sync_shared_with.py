"""A SyncTaskQueue shared by threads that each use ``with queue:``: the last one out closes it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, SyncTaskQueueError, Worker

import sitq_test_tasks as tasks
from sitq_test_helpers import in_child, wait_until_sync


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


@contextlib.contextmanager
def running_worker(path: Path) -> Iterator[None]:
    """A real worker on its own event loop in a thread, with a backend object of its own on the same file."""
    stop = threading.Event()
    started = threading.Event()

    async def serve() -> None:
        running = Worker(SQLiteBackend(path), max_concurrency=4)
        await running.start()
        started.set()
        await asyncio.to_thread(stop.wait)
        await running.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()))
    thread.start()
    try:
        assert started.wait(10)
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


@pytest.fixture
def worker(path: Path) -> Iterator[None]:
    with running_worker(path):
        yield


def is_closed(queue: SyncTaskQueue) -> bool:
    """The queue's loop thread is stopped and its SQLite backend holds no connection thread."""
    backend = queue.backend
    assert isinstance(backend, SQLiteBackend)
    return queue._loop is None and backend._db is None


def test_threads_sharing_a_queue_with_with_blocks_never_close_it_under_each_other(path: Path, worker: None) -> None:
    """8 request threads, each ``with queue:``: one thread's exit closed the queue under the others' get_result."""
    queue = SyncTaskQueue(f"sqlite:///{path}")

    def request(n: int) -> int:
        with queue:
            return int(queue.get_result(queue.enqueue(tasks.add, n, n), timeout=10))

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda n: _outcome(request, n), range(100)))
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], f"{len(failures)} of 100 requests failed: {failures[0]!r}"
    assert outcomes == [2 * n for n in range(100)]
    assert is_closed(queue), "the last with block to end must close the queue"


def _outcome(call: Callable[[int], int], n: int) -> int | BaseException:
    try:
        return call(n)
    except BaseException as exc:
        return exc


def test_a_thread_leaving_its_with_block_leaves_another_threads_wait_alone(path: Path) -> None:
    """Deterministic: B waits on a result inside its with; A leaves its with; B's wait must go on."""
    queue = SyncTaskQueue(f"sqlite:///{path}")
    entered = threading.Event()
    leave = threading.Event()

    def first() -> None:
        with queue:
            entered.set()
            assert leave.wait(10)

    a = threading.Thread(target=first)
    a.start()
    assert entered.wait(10)
    outcome: list[Any] = []
    with queue:
        task_id = queue.enqueue(tasks.add, 20, 1)

        def second() -> None:
            try:
                outcome.append(queue.get_result(task_id, timeout=30))
            except BaseException as exc:
                outcome.append(exc)

        b = threading.Thread(target=second)
        b.start()
        wait_until_sync(lambda: any(queue._calls.values()))  # B's get_result waits on the loop
        leave.set()
        a.join(10)
        assert not a.is_alive()
        assert not is_closed(queue), "A's exit closed the queue while this with block was still open"

        with running_worker(path):
            b.join(10)
        assert outcome == [21], outcome
    assert is_closed(queue)


def test_nested_with_blocks_close_the_queue_only_at_the_outermost_exit(path: Path) -> None:
    queue = SyncTaskQueue(f"sqlite:///{path}")
    with queue:
        queue.enqueue(tasks.add, 1)
        with queue:
            queue.enqueue(tasks.add, 2)
        assert not is_closed(queue), "the inner with block closed the queue the outer one still uses"
        loop = queue._loop
        queue.enqueue(tasks.add, 3)
        assert queue._loop is loop, "the queue was closed and opened again in between"
    assert is_closed(queue), "the outermost exit must close the queue"
    with queue:  # and it opens again, counting from nothing
        assert queue.counts()["queued"] == 3
    assert is_closed(queue)


def test_a_with_block_entered_while_the_last_one_closes_waits_for_that_close_then_opens(path: Path) -> None:
    """B entering while A's last exit is closing used to fail with "closed by another thread"."""
    closing = threading.Event()
    release = threading.Event()

    class SlowToClose(SQLiteBackend):
        async def close(self) -> None:
            closing.set()
            await asyncio.to_thread(release.wait, 10)
            await super().close()

    queue = SyncTaskQueue(SlowToClose(path))
    queue.enqueue(tasks.add, 0)

    def leave() -> None:
        with queue:
            pass

    a = threading.Thread(target=leave)
    a.start()
    assert closing.wait(10)
    outcome: list[Any] = []

    def enter() -> None:
        try:
            with queue:
                outcome.append(queue.counts()["queued"])
        except BaseException as exc:
            outcome.append(exc)

    b = threading.Thread(target=enter)
    b.start()
    # B counted itself in while A's close is still under way (or, refused at once, it failed)
    wait_until_sync(lambda: bool(outcome) or getattr(queue, "_users", 0) == 1)
    release.set()
    a.join(10)
    b.join(10)
    assert outcome == [1], outcome
    assert is_closed(queue)


def test_close_from_another_thread_still_ends_a_wait_inside_a_with_block(path: Path) -> None:
    """An explicit close() keeps its meaning: it closes now, whoever is inside a with block."""
    queue = SyncTaskQueue(f"sqlite:///{path}")
    outcome: list[Any] = []
    inside = threading.Event()

    def wait() -> None:
        with queue:
            task_id = queue.enqueue(tasks.add, 1)  # no worker: its result never comes
            inside.set()
            try:
                outcome.append(queue.get_result(task_id, timeout=30))
            except BaseException as exc:
                outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert inside.wait(10)
    wait_until_sync(lambda: any(queue._calls.values()))
    queue.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SyncTaskQueueError)
    assert "closed by another thread" in str(outcome[0])
    assert is_closed(queue)


def test_a_failed_enter_beside_an_open_with_block_does_not_close_it(path: Path, tmp_path: Path) -> None:
    """A connect that fails in __enter__ counts itself out again, closing only when it was the last."""
    queue = SyncTaskQueue(f"sqlite:///{path}")
    with queue:
        queue.enqueue(tasks.add, 1)
        backend = queue.backend
        assert isinstance(backend, SQLiteBackend)
        real_connect = backend.connect
        failed = False

        async def failing_connect() -> None:
            nonlocal failed
            failed = True
            raise OSError("no connection today")

        backend.connect = failing_connect  # type: ignore[method-assign]
        try:
            with pytest.raises(SyncTaskQueueError), queue:
                pass  # pragma: no cover - never reached
        finally:
            backend.connect = real_connect  # type: ignore[method-assign]
        assert failed
        assert not is_closed(queue), "the failed enter closed the queue this with block still uses"
        assert queue.counts()["queued"] == 1
    assert is_closed(queue)


def test_a_queue_reopened_after_the_last_exit_and_dropped_still_warns(path: Path) -> None:
    queue = SyncTaskQueue(f"sqlite:///{path}")
    with queue:
        queue.enqueue(tasks.add, 1)
    queue.enqueue(tasks.add, 2)  # opens it again, outside any with block: nobody closes it
    with pytest.warns(ResourceWarning, match="garbage-collected without close"):
        del queue
        gc.collect()


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
def test_a_child_forked_inside_a_with_block_counts_its_own_with_blocks_from_nothing(path: Path) -> None:
    """A fork pool's child of a parent inside ``with queue:``: its own with block must close the child's queue."""
    queue = SyncTaskQueue(f"sqlite:///{path}")
    with queue:
        queue.enqueue(tasks.add, 0)

        def child() -> None:
            with queue:
                queue.enqueue(tasks.add, 1)
            assert is_closed(queue), "the child's with block left the queue open: it counted the parent's"

        assert in_child(child) == 0
        assert not is_closed(queue), "the child closed the parent's queue"
        assert queue.counts()["queued"] == 2
    assert is_closed(queue)


@needs_fork
def test_a_child_leaving_the_with_block_it_was_forked_in_closes_its_queue(path: Path) -> None:
    """``os.fork()`` inside ``with queue:``: the child runs that block's exit, and it is the child's last."""
    queue = SyncTaskQueue(f"sqlite:///{path}")
    with queue:
        queue.enqueue(tasks.add, 0)

        def child() -> None:
            queue.enqueue(tasks.add, 1)
            queue.__exit__(None, None, None)  # what the inherited with statement does as the child leaves it
            assert is_closed(queue)

        assert in_child(child) == 0
        assert not is_closed(queue)
        assert queue.counts()["queued"] == 2
    assert is_closed(queue)
