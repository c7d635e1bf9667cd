"""Queues sharing one SQLiteBackend object: closing one of them leaves the backend open for the others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, Worker

from sitq_test_helpers import wait_until, wait_until_sync


def _enqueue_with_a_sync_queue(backend: SQLiteBackend) -> str:
    with SyncTaskQueue(backend) as queue:
        return queue.enqueue(len, "f")


@pytest.mark.asyncio
async def test_a_nested_queue_leaves_a_shared_memory_database_open_for_the_outer_one() -> None:
    """``async with TaskQueue(b)`` inside another queue's ``async with`` on the same backend closes nothing.

    Closing an in-memory database throws it away: the outer queue and its worker would go on, after a
    silent reconnect, with an empty database (tasks, results and a running task's lease gone).
    """
    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        first = await queue.enqueue(len, "abc")
        async with TaskQueue(backend) as helper:
            second = await helper.enqueue(len, "de")
        third = await asyncio.to_thread(_enqueue_with_a_sync_queue, backend)
        for task_id in (first, second, third):
            assert await queue.get_task(task_id) is not None, f"{task_id} vanished when a nested queue closed"
        assert (await queue.counts())["queued"] == 3
    # the last queue to close closes the backend: a new queue starts on a new, empty in-memory database
    async with TaskQueue(backend) as again:
        assert (await again.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_the_last_queue_to_close_closes_a_shared_file_backend(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "t.db")
    outer, inner = TaskQueue(backend), TaskQueue(backend)
    await outer.connect()
    await inner.connect()
    await inner.enqueue(len, "x")
    await inner.close()
    assert backend._db is not None, "a queue closed the backend while another queue still had it open"
    await inner.close()  # twice: still only one release
    assert backend._db is not None
    await outer.close()
    assert backend._db is None, "the last open queue must close the backend"


@pytest.mark.asyncio
async def test_a_queue_that_only_connected_on_first_use_does_not_keep_the_backend_open(tmp_path: Path) -> None:
    """Only connect() / async with holds the backend: a module-level queue that just enqueues pins nothing."""
    backend = SQLiteBackend(tmp_path / "t.db")
    module_level = TaskQueue(backend)
    async with TaskQueue(backend) as queue:
        await module_level.enqueue(len, "x")  # connects on first use, never closed
        await queue.enqueue(len, "y")
    assert backend._db is None, "async with must close the backend, as documented"


@pytest.mark.asyncio
async def test_a_running_worker_keeps_a_shared_memory_database_open() -> None:
    backend = SQLiteBackend(":memory:")
    worker = Worker(backend)
    await worker.start()
    try:
        async with TaskQueue(backend) as helper:  # a helper queue beside the running worker
            task_id = await helper.enqueue(len, "abc")
        async with TaskQueue(backend) as queue:
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None and queue.deserialize_result(result) == 3, "the task vanished with the database"
    finally:
        await worker.stop()
    assert backend._db is None, "the queues asked to close it: that happens once the worker lets go"


@pytest.mark.asyncio
async def test_a_worker_leaves_open_a_backend_nobody_asked_to_close(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "mine.db")
    await backend.connect()
    worker = Worker(backend)
    await worker.start()
    await worker.stop()
    assert backend._db is not None, "a worker never closes a backend it did not open"
    await backend.close()


@pytest.mark.asyncio
async def test_a_copied_or_unpickled_queue_holds_nothing_until_it_connects() -> None:
    import copy

    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(len, "abc")
        duplicate = copy.copy(queue)
        await duplicate.close()  # it never connected: the original still holds the backend
        assert await queue.get_task(task_id) is not None, "closing a copy threw the shared database away"


def _connect_and_drop(backend: SQLiteBackend) -> None:
    queue = SyncTaskQueue(backend)
    queue.connect()  # holds the backend, then is dropped without close()
    queue.enqueue(len, "x")


@pytest.mark.asyncio
async def test_a_dropped_sync_queue_lets_go_of_a_backend_it_was_given(tmp_path: Path) -> None:
    import gc

    backend = SQLiteBackend(tmp_path / "t.db")
    async with TaskQueue(backend) as queue:
        with pytest.warns(ResourceWarning, match="garbage-collected without close"):
            await asyncio.to_thread(_connect_and_drop, backend)
            gc.collect()
        assert (await queue.counts())["queued"] == 1
    assert backend._db is None, "the dropped queue's hold kept the backend open after the last async with"


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["auto-connect", "connect()", "unpickled", "sitq.connect"])
async def test_queues_made_per_request_and_dropped_unclosed_warn_and_do_not_leak(tmp_path: Path, how: str) -> None:
    """Each TaskQueue(url) dropped without close() kept a thread and 4 file descriptors for good, silently.

    A queue that called connect() counted itself among the backend's holders, so its finalizer saw the
    backend still held (by itself) and let it leak, without a warning. An unpickled queue (a module-level
    queue travelling in the globals of a task function shipped by value) had no finalizer at all.
    """
    import pickle

    template = pickle.dumps(TaskQueue(f"sqlite:///{tmp_path / 'requests.db'}"))
    import gc
    import os
    import threading
    import warnings

    url = f"sqlite:///{tmp_path / 'requests.db'}"

    async def handle_request(i: int) -> str:
        if how == "sitq.connect":  # it made the backend itself and handed the object over: not let go
            import sitq

            queue = sitq.connect(url)
        else:
            queue = pickle.loads(template) if how == "unpickled" else TaskQueue(url)
        if how == "connect()":
            await queue.connect()
        return await queue.enqueue(len, "x" * i)  # and the queue is forgotten

    async with TaskQueue(url) as keeper:  # the file stays open in this process throughout
        await keeper.counts()
        threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(40):
                await handle_request(i)
                gc.collect()
        # an unpickled queue (no caller made it, none could close it) goes quietly
        assert sum(issubclass(w.category, ResourceWarning) for w in caught) == (0 if how == "unpickled" else 40)

        async def threads_ended() -> bool:  # the dropped backends' threads end once their last job ran
            return threading.active_count() <= threads + 2

        await wait_until(threads_ended, timeout=10)
        assert len(os.listdir("/proc/self/fd")) <= fds + 8, "file descriptors piled up"
        assert (await keeper.counts())["queued"] == 40, "every task the forgotten queues stored is there"


@pytest.mark.asyncio
async def test_a_queue_closed_before_its_worker_stops_has_the_backend_closed_when_the_worker_stops(
    tmp_path: Path,
) -> None:
    """The worker reopened the backend the queue had closed, and nobody closed it again (a thread, 4 fds)."""
    backend = SQLiteBackend(tmp_path / "order.db")
    queue = TaskQueue(backend)
    await queue.connect()
    worker = Worker(backend)
    await worker.start()
    result = await queue.get_result(await queue.enqueue(len, "ab"), timeout=10)
    assert result is not None and queue.deserialize_result(result) == 2
    await queue.close()  # the worker still runs: the backend stays open for it
    assert backend._db is not None
    await worker.stop()
    assert backend._db is None, "the queue's close happens once the worker lets go"


@pytest.mark.asyncio
@pytest.mark.parametrize("dropped", ["before", "after"])
async def test_a_queue_dropped_after_connect_does_not_keep_a_given_backend_open(tmp_path: Path, dropped: str) -> None:
    """Its hold outlived it: the last real queue's close() then left the backend (a thread, files) open for good."""
    import gc

    backend = SQLiteBackend(tmp_path / "given.db")
    forgotten: TaskQueue | None = TaskQueue(backend)
    await forgotten.connect()  # a per-request queue someone forgot to close
    if dropped == "before":
        forgotten = None
        gc.collect()
    async with TaskQueue(backend) as queue:  # the application's own queue
        await queue.counts()
    if dropped == "after":
        assert backend._db is not None, "still held by the forgotten queue"
        forgotten = None
        gc.collect()

    async def let_go() -> bool:
        return backend._db is None

    await wait_until(let_go, timeout=10)


@pytest.mark.asyncio
async def test_a_copy_that_connected_and_was_dropped_does_not_keep_the_backend_open(tmp_path: Path) -> None:
    import copy
    import gc

    queue = TaskQueue(f"sqlite:///{tmp_path / 'copy-hold.db'}")
    duplicate = copy.copy(queue)
    await duplicate.connect()
    del duplicate
    gc.collect()
    await queue.connect()
    await queue.close()
    assert queue.backend._db is None  # type: ignore[attr-defined]


def test_a_sync_copy_that_connected_and_was_dropped_does_not_keep_the_backend_open(tmp_path: Path) -> None:
    import copy
    import gc

    queue = SyncTaskQueue(f"sqlite:///{tmp_path / 'sync-copy-hold.db'}")
    duplicate = copy.copy(queue)
    duplicate.connect()
    queue.connect()
    queue.close()  # the copy still holds the backend: closed when the copy goes
    backend = queue.backend
    del duplicate
    gc.collect()
    wait_until_sync(lambda: backend._db is None, timeout=10)  # type: ignore[attr-defined]


def test_a_copy_unpickled_while_another_is_collected_on_another_thread_does_not_deadlock(tmp_path: Path) -> None:
    """The shared-copies registry had a lock of its own, taken before the hold counts' lock when a copy was
    unpickled and after it when a collection inside the counts' lock freed another copy (review)."""
    import gc
    import pickle
    import threading
    import time
    import weakref

    from sitq_core.holders import holders

    data = pickle.dumps(TaskQueue(f"sqlite:///{tmp_path / 'copies.db'}"))
    original = holders._counts
    reached = threading.Event()

    class CollectsInside(weakref.WeakKeyDictionary):  # type: ignore[type-arg]
        def __setitem__(self, key: Any, value: Any) -> None:  # an allocation under the lock may collect
            super().__setitem__(key, value)
            if threading.current_thread().name == "collector":
                reached.set()
                time.sleep(0.3)  # the other thread is unpickling meanwhile
                gc.collect()

    gc.disable()
    try:
        cycle = pickle.loads(data)
        cycle.me = cycle  # freed only by a cyclic collection
        del cycle
        holders._counts = CollectsInside(original)
        collector = threading.Thread(target=holders.hold, args=(threading.Event(),), name="collector", daemon=True)
        unpickler = threading.Thread(target=pickle.loads, args=(data,), daemon=True)
        collector.start()
        assert reached.wait(10)
        unpickler.start()
        collector.join(10)
        unpickler.join(10)
        assert not collector.is_alive() and not unpickler.is_alive(), "deadlocked"
    finally:
        holders._counts = original
        gc.enable()
