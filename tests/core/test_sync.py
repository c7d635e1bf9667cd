"""SyncTaskQueue: the blocking API for code without an event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, tzinfo
from pathlib import Path

import pytest

from sitq import (
    SQLiteBackend,
    SyncTaskQueue,
    SyncTaskQueueError,
    TaskExecutionError,
    ValidationError,
    Worker,
)

import sitq_test_tasks as tasks
from sitq_test_helpers import BROKEN_ZONES, wait_until, wait_until_sync


@pytest.fixture
def backend(tmp_path: Path) -> SQLiteBackend:
    return SQLiteBackend(tmp_path / "sync.db")


@pytest.fixture
def worker_thread(backend: SQLiteBackend) -> Iterator[None]:
    """A worker on its own event loop in a thread, sharing the backend object."""
    stop = threading.Event()
    started = threading.Event()

    async def serve() -> None:
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        started.set()
        await asyncio.to_thread(stop.wait)
        await worker.stop()

    thread = threading.Thread(target=lambda: asyncio.run(serve()))
    thread.start()
    assert started.wait(10)
    yield
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_values_failures_and_timeouts(backend: SQLiteBackend, worker_thread: None) -> None:
    with SyncTaskQueue(backend) as queue:
        assert queue.get_result(queue.enqueue(tasks.add, 2, b=3), timeout=10) == 5
        failing = queue.enqueue(tasks.boom, "sync kaput")
        with pytest.raises(TaskExecutionError) as info:
            queue.get_result(failing, timeout=10)
        assert "sync kaput" in str(info.value) and info.value.task_id == failing
        assert "ValueError" in (info.value.traceback or "")
        assert (info.value.function_name or "").endswith(":boom")
        assert info.value.execution_time is not None and info.value.execution_time >= 0
        slow = queue.enqueue(tasks.sync_sleepy, 0.5)
        assert queue.get_result(slow, timeout=0.01) is None
        assert queue.get_result(slow, timeout=10) == "slept"


def test_state_operations(backend: SQLiteBackend) -> None:
    with SyncTaskQueue(backend) as queue:
        ids = queue.enqueue_many([(tasks.add, (n,)) for n in range(3)])
        assert queue.counts()["queued"] == 3
        assert queue.cancel(ids[0]) is True
        task = queue.get_task(ids[1])
        assert task is not None and task.function_name.endswith(":add")
        assert len(queue.list_tasks(status="queued")) == 2


def test_bad_input_stays_a_validation_error(backend: SQLiteBackend) -> None:
    with SyncTaskQueue(backend) as queue:
        with pytest.raises(ValidationError):
            queue.enqueue(42)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            queue.get_result("", timeout=0)


def test_machinery_errors_are_wrapped(tmp_path: Path) -> None:
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not a sqlite file" * 100)
    queue = SyncTaskQueue(SQLiteBackend(not_a_db))
    with pytest.raises(SyncTaskQueueError) as info:
        queue.enqueue(tasks.add, 1)
    assert info.value.operation == "enqueue"
    queue.close()
    assert not_a_db.read_bytes().startswith(b"this is not a sqlite file")


@pytest.mark.asyncio
async def test_refuses_a_running_event_loop(backend: SQLiteBackend) -> None:
    queue = SyncTaskQueue(backend)
    with pytest.raises(RuntimeError, match="use TaskQueue"):
        queue.enqueue(tasks.add, 1)
    with pytest.raises(RuntimeError, match="use TaskQueue"), queue:
        pass


@pytest.mark.asyncio
async def test_a_refused_call_names_the_method_called(backend: SQLiteBackend) -> None:
    queue = SyncTaskQueue(backend)
    with pytest.raises(
        RuntimeError, match=r"SyncTaskQueue\.get_result_record\(\) was called.*await queue\.get_result\("
    ):
        queue.get_result_record("some-task", timeout=0)
    # ... and points to the async call of the same name, not to enqueue
    with pytest.raises(RuntimeError, match=r"SyncTaskQueue\.get_result\(\) .*await queue\.get_result\(\.\.\.\)"):
        queue.get_result("some-task", timeout=0)
    with pytest.raises(RuntimeError, match=r"await queue\.counts\(\.\.\.\)"):
        queue.counts()
    # what does not block works inside the loop too: nothing to refuse
    assert queue.with_options(priority=1).options.priority == 1
    assert queue.queue.backend is queue.backend


@pytest.mark.asyncio
async def test_close_inside_a_running_loop_says_to_call_it_on_a_thread(backend: SQLiteBackend) -> None:
    """An async app's shutdown hook closing a shared SyncTaskQueue was told to 'use TaskQueue (await enqueue)'."""
    before = set(threading.enumerate())
    queue = SyncTaskQueue(backend)
    await asyncio.to_thread(queue.enqueue, tasks.add, 1)
    [loop_thread] = [t for t in set(threading.enumerate()) - before if t.name == "sitq-sync-loop"]
    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread\(queue\.close\)"):
        queue.close()
    await asyncio.to_thread(queue.close)  # what the message says works: its loop thread ends

    async def loop_thread_gone() -> bool:
        return not loop_thread.is_alive()

    await wait_until(loop_thread_gone, timeout=10)


def test_options_and_enqueue_call_without_an_event_loop(backend: SQLiteBackend) -> None:
    with SyncTaskQueue(backend) as queue:
        urgent = queue.with_options(priority=5, queue_name="urgent")
        first = urgent.enqueue(tasks.add, 1)
        second = urgent.with_options(delay=60).enqueue_call(tasks.echo, ({"eta": "a kwarg"},))
        third, fourth = urgent.enqueue_many([(tasks.add, (3,)), (tasks.add, (4,))])
        plain = queue.enqueue_call(tasks.add, (1,), {"b": 2})
        stored = [queue.get_task(task_id) for task_id in (first, second, third, fourth, plain)]
        assert [(t.priority, t.queue) for t in stored if t is not None] == [(5, "urgent")] * 4 + [(0, "default")]
        assert stored[1] is not None and stored[1].eta > stored[1].enqueued_at
        with pytest.raises(ValidationError) as info:
            queue.enqueue_call(tasks.add, 5)  # type: ignore[arg-type]
        assert info.value.parameter == "args"
        with pytest.raises(ValidationError) as info:
            queue.enqueue_call(tasks.add, (1,), [2])  # type: ignore[arg-type]
        assert info.value.parameter == "kwargs"
        with pytest.raises(ValidationError):
            queue.with_options(priority="high")
        assert queue.counts()["queued"] == 5


def test_close_from_another_thread_ends_a_waiting_get_result(tmp_path: Path) -> None:
    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "closing.db"))
    queue.connect()
    task_id = queue.enqueue(tasks.add, 1)  # no worker: its result never comes
    outcome: list[BaseException | object] = []

    def wait() -> None:
        try:
            outcome.append(queue.get_result(task_id, timeout=30))
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until_sync(lambda: bool(queue._calls))  # the waiter's call is on the queue's loop
    queue.close()
    waiter.join(10)
    assert not waiter.is_alive(), "get_result kept waiting on a closed queue"
    assert len(outcome) == 1 and isinstance(outcome[0], SyncTaskQueueError)
    assert "closed by another thread" in str(outcome[0]) and outcome[0].operation == "get_result"


def test_a_sync_queue_travels_to_a_spawn_child_as_its_configuration(tmp_path: Path) -> None:
    """It failed with "cannot pickle '_thread.RLock'" (unused) or a WeakSet error (used)."""
    import multiprocessing
    import pickle

    url = f"sqlite:///{tmp_path / 'travels.db'}"
    with SyncTaskQueue(url) as queue:
        queue.enqueue(tasks.add, 0)  # used here first: its loop thread must not travel
        copy = pickle.loads(pickle.dumps(queue))
        assert isinstance(copy, SyncTaskQueue) and copy is not queue
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            task_id = pool.apply(tasks.enqueue_with_sync_queue, (queue,))
        assert queue.get_task(task_id) is not None, "the child's enqueue did not reach the same file"
        copy.close()


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sitq-sync-loop"]


def test_a_queue_dropped_unclosed_ends_its_thread_and_closes_the_backend_it_made(tmp_path: Path) -> None:
    """One SyncTaskQueue per request, never closed, used to keep two threads and ~7 files each for good."""
    import gc

    before = len(_sync_threads())
    with pytest.warns(ResourceWarning, match="garbage-collected without close"):
        for _ in range(3):
            queue = SyncTaskQueue(f"sqlite:///{tmp_path / 'dropped.db'}")
            queue.enqueue(tasks.add, 1, 2)
            del queue
            gc.collect()
    wait_until_sync(lambda: len(_sync_threads()) == before)
    wait_until_sync(lambda: not [t for t in threading.enumerate() if t.name.endswith("dropped.db")])


def test_a_with_block_whose_connect_fails_leaves_no_thread_and_no_false_warning(tmp_path: Path) -> None:
    """No __exit__ follows a failed __enter__: the queue was later collected with a 'use with' warning."""
    import gc
    import warnings

    before = len(_sync_threads())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SyncTaskQueueError, match="connect"), SyncTaskQueue(f"sqlite:///{tmp_path}"):  # a folder
            pass  # pragma: no cover - never reached
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert len(_sync_threads()) == before


@pytest.mark.parametrize("spec", ["object", "mapping"])
def test_a_queue_dropped_unclosed_leaves_a_backend_object_it_was_given_open(backend: SQLiteBackend, spec: str) -> None:
    import gc

    before = len(_sync_threads())
    closed: list[bool] = []
    original_close = backend.close

    async def recording_close() -> None:
        closed.append(True)
        await original_close()

    backend.close = recording_close  # type: ignore[method-assign]
    with pytest.warns(ResourceWarning):
        queue = SyncTaskQueue(backend if spec == "object" else {"backend": backend})
        queue.enqueue(tasks.add, 1, 2)
        del queue
        gc.collect()
    wait_until_sync(lambda: len(_sync_threads()) == before)
    assert closed == [], "a backend object passed in (also inside a config mapping) is left open for its users"
    backend.close = original_close  # type: ignore[method-assign]
    with SyncTaskQueue(backend) as other:  # the shared backend still serves everyone else
        assert len(other.queue.backend is backend and other.enqueue(tasks.add, 3, 4)) == 32


CHAIN_SCRIPT = """
from sitq import SyncTaskQueue

squeue = SyncTaskQueue(URL)


def step2(x):
    return x + 1


def step1(x):
    return squeue.enqueue(step2, x)  # a follow-up, through the script's module-level queue
"""


def test_tasks_shipped_by_value_with_a_module_level_queue_do_not_pile_up_its_copies(tmp_path: Path) -> None:
    """A __main__ task travels with its globals: each run unpickled its own SyncTaskQueue, never released.

    The worker's current_task() record held the loaded call, and the copy's loop thread kept a context
    holding that record: 60 chained tasks left ~130 threads and ~500 file descriptors behind.
    """
    import gc
    import warnings

    from sitq import Worker

    script: dict[str, object] = {"__name__": "__main__", "URL": f"sqlite:///{tmp_path / 'chain.db'}"}
    exec(CHAIN_SCRIPT, script)  # as a script run with python: cloudpickle ships these functions by value
    squeue: SyncTaskQueue = script["squeue"]  # type: ignore[assignment]
    step1 = script["step1"]
    stop = threading.Event()

    def run_worker() -> None:
        async def serve() -> None:
            worker = Worker(squeue.backend, max_concurrency=4)
            await worker.start()
            await asyncio.to_thread(stop.wait)
            await worker.stop()

        asyncio.run(serve())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with squeue:
            thread = threading.Thread(target=run_worker)
            thread.start()
            try:
                for _ in range(30):
                    child = squeue.get_result(squeue.enqueue(step1, 1), timeout=30)
                    assert squeue.get_result(child, timeout=30) == 2

                def copies_released() -> bool:
                    gc.collect()
                    return sum(type(o) is SyncTaskQueue for o in gc.get_objects()) <= 3

                wait_until_sync(copies_released, timeout=20)
            finally:
                stop.set()
                thread.join(30)
    dropped = [str(w.message) for w in caught if "garbage-collected" in str(w.message)]
    assert not dropped, "the copies go quietly: no caller made them, none could close them"


def test_a_copy_has_its_own_queue_so_closing_it_leaves_the_originals_wait_alone(tmp_path: Path) -> None:
    import copy

    with SyncTaskQueue(SQLiteBackend(tmp_path / "copied.db")) as queue:
        task_id = queue.enqueue(tasks.add, 1, 2)  # no worker: the wait runs to its timeout
        duplicate = copy.copy(queue)
        assert duplicate.queue is not queue.queue
        outcome: list[object] = []
        waiting = threading.Thread(target=lambda: outcome.append(queue.get_result(task_id, timeout=1.0)))
        waiting.start()
        duplicate.counts()
        duplicate.close()
        waiting.join(10)
        assert outcome == [None], "the original's get_result ran to its own timeout"
        assert queue.counts()["queued"] == 1


@pytest.mark.parametrize("zone", BROKEN_ZONES, ids=lambda zone: type(zone).__name__)
def test_an_eta_whose_zone_cannot_give_its_offset_is_a_validation_error_naming_eta(
    backend: SQLiteBackend, zone: tzinfo
) -> None:
    """The tzinfo's own error came out (wrapped as a SyncTaskQueueError where the sync queue wraps machinery)."""
    eta = datetime(2030, 1, 1, tzinfo=zone)
    with SyncTaskQueue(backend) as queue:
        view = queue.with_options(priority=1)
        for parameter, call in (
            ("eta", lambda: queue.enqueue(tasks.add, 1, eta=eta)),
            ("eta", lambda: queue.with_options(eta=eta)),
            ("eta", lambda: view.enqueue(tasks.add, 1, eta=eta)),
            ("eta", lambda: view.with_options(eta=eta)),
            ("eta", lambda: queue.requeue("some-task", eta=eta)),
            ("older_than", lambda: queue.purge(older_than=eta)),
        ):
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.parameter == parameter and info.value.value is eta, repr(info.value)
            assert isinstance(info.value.cause, RuntimeError | TypeError | ValueError)
        assert queue.counts()["queued"] == 0


def test_an_unreadable_result_names_its_task_once(tmp_path: Path) -> None:
    """The queue's message already says "cannot read the result of task X"; the sync queue adds no second prefix."""
    path = tmp_path / "tasks.db"
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        task_id = queue.enqueue(len, "abc")
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO results (task_id, id, status, value, attempts, serializer) VALUES (?, ?, 'success', ?, 1, ?)",
        (task_id, task_id, b"not a pickle", "cloudpickle"),
    )
    conn.commit()
    conn.close()
    with SyncTaskQueue(SQLiteBackend(path)) as queue, pytest.raises(SyncTaskQueueError) as info:
        queue.get_result(task_id, timeout=0)
    assert str(info.value).count(task_id) == 2  # once in the message, once in its context (task_id=...)
    assert str(info.value).startswith(f"cannot read the result of task {task_id}: ")
