"""Group commit: enqueues that arrive together share one transaction, each caller keeps its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue, ValidationError
from sitq_core import hookimpl
from sitq_core.models import Task
from sitq_core.plugins import get_plugin_manager

import sitq_test_tasks as tasks

_WAL_HEADER = 32
_FRAME = 24 + 4096  # frame header + one page (the default page size)


def wal_frames(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return max(0, (wal.stat().st_size - _WAL_HEADER) // _FRAME) if wal.exists() else 0


@pytest_asyncio.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(tmp_path / "group.db")
    await backend.connect()
    yield backend
    await backend.close()


def task(task_id: str) -> Task:
    return Task(id=task_id, payload=b"x", function_name="f")


@pytest.mark.asyncio
async def test_concurrent_enqueues_share_commits(backend: SQLiteBackend) -> None:
    queue = TaskQueue(backend)
    await queue.enqueue(tasks.add, 0, 0)
    before = wal_frames(Path(backend.path))
    ids = await asyncio.gather(*(queue.enqueue(tasks.add, i, i) for i in range(60)))
    written = wal_frames(Path(backend.path)) - before
    assert len(set(ids)) == 60
    assert (await queue.counts())["queued"] == 61
    # One commit per enqueue would append at least three pages (table, id index, claim index) each.
    assert written < 60, f"{written} WAL frames for 60 concurrent enqueues: they were not grouped"


@pytest.mark.asyncio
async def test_grouped_tasks_keep_the_order_of_their_calls(backend: SQLiteBackend) -> None:
    ids = await asyncio.gather(*(backend.enqueue(task(f"t{i:03}")) for i in range(40)))
    assert ids == [f"t{i:03}" for i in range(40)]
    reserved = await backend.reserve(worker_id="w", limit=40, lease_seconds=30)
    assert [r.id for r in reserved] == ids


@pytest.mark.asyncio
async def test_a_failing_task_fails_only_its_own_caller(backend: SQLiteBackend) -> None:
    await backend.enqueue(task("taken"))
    outcomes = await asyncio.gather(
        backend.enqueue(task("a")),
        backend.enqueue(task("taken")),
        backend.enqueue(task("b")),
        return_exceptions=True,
    )
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], ValidationError) and outcomes[1].parameter == "tasks"
    assert "taken" in str(outcomes[1])
    assert sorted(t.id for t in await backend.list_tasks()) == ["a", "b", "taken"]


@pytest.mark.asyncio
async def test_a_caller_cancelled_before_its_group_is_written_stores_nothing(backend: SQLiteBackend) -> None:
    kept = asyncio.create_task(backend.enqueue(task("kept")))
    dropped = asyncio.create_task(backend.enqueue(task("dropped")))

    async def cancel_dropped() -> None:  # runs after both joined the group, before it is written
        dropped.cancel()

    canceller = asyncio.create_task(cancel_dropped())
    assert await kept == "kept"
    await canceller
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert [t.id for t in await backend.list_tasks()] == ["kept"]


def test_sync_queue_shared_by_threads_stores_every_task(tmp_path: Path) -> None:
    ids: list[str] = []
    lock = threading.Lock()
    with SyncTaskQueue(SQLiteBackend(tmp_path / "threads.db")) as queue:

        def produce(offset: int) -> None:
            for i in range(25):
                task_id = queue.enqueue(tasks.add, offset, i)
                with lock:
                    ids.append(task_id)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert len(set(ids)) == 200
        assert queue.counts()["queued"] == 200


class ThreadRecorder:
    """Records on which thread ``sitq_task_enqueued`` ran."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}

    @hookimpl
    def sitq_task_enqueued(self, task: Task) -> None:
        self.threads[task.id] = threading.current_thread().name


@pytest.fixture
def thread_recorder() -> Iterator[ThreadRecorder]:
    plugin = ThreadRecorder()
    manager = get_plugin_manager()
    manager.register_plugin(plugin, "thread-recorder")
    yield plugin
    manager.unregister_plugin("thread-recorder")


def test_a_lone_sync_enqueue_is_stored_on_the_calling_thread(tmp_path: Path, thread_recorder: ThreadRecorder) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "blocking.db")) as queue:
        task_id = queue.enqueue(tasks.add, 1, 2)
        call_id = queue.with_options(priority=3).enqueue_call(tasks.add, (3, 4))
        stored = queue.get_task(call_id)
        assert stored is not None and stored.priority == 3
        assert queue.counts()["queued"] == 2
    # no hop to the queue's loop thread ("sitq-sync-loop"): Backend.enqueue_blocking stored both here
    here = threading.current_thread().name
    assert thread_recorder.threads == {task_id: here, call_id: here}


def test_a_sync_enqueue_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        queue.enqueue(tasks.add, 0, 0)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        done = threading.Event()
        ids: list[str] = []
        thread = threading.Thread(target=lambda: (ids.append(queue.enqueue(tasks.add, 1, 1)), done.set()))
        thread.start()
        assert not done.wait(0.05)  # the blocking path declined; the loop path waits for the lock
        other.execute("COMMIT")
        other.close()
        assert done.wait(10)
        thread.join(10)
        assert queue.get_task(ids[0]) is not None
        assert queue.counts()["queued"] == 2


def test_a_duplicate_id_through_the_blocking_path_is_a_validation_error(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "dup.db")
    with SyncTaskQueue(backend) as queue:
        first = task("same")
        assert backend.enqueue_blocking(first) == "same"
        with pytest.raises(ValidationError) as info:
            backend.enqueue_blocking(task("same"))
        assert info.value.parameter == "tasks"
        assert [t.id for t in queue.list_tasks()] == ["same"]
