"""Group commit: enqueues that arrive together share one transaction, each caller keeps its own outcome."""

from __future__ import annotations

import asyncio
import gc
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import BackendError, SQLiteBackend, SyncTaskQueue, SyncTaskQueueError, TaskQueue, ValidationError
from sitq_core import hookimpl
from sitq_core.models import Task, new_id
from sitq_core.plugins import get_plugin_manager

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until_sync

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


@pytest.mark.asyncio
async def test_a_store_failure_reaches_the_whole_group_after_one_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    backend = SQLiteBackend(path, busy_timeout=0.2)
    await backend.connect()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process keeps the write lock far longer than busy_timeout
    try:
        began = time.monotonic()
        outcomes = await asyncio.gather(*(backend.enqueue(task(f"t{i}")) for i in range(20)), return_exceptions=True)
        elapsed = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(outcome, BackendError) for outcome in outcomes), outcomes
    # one wait for the whole group, not one per caller (that would be 20 x 0.2 s)
    assert elapsed < 1.5, f"{elapsed:.1f} s"
    assert await backend.list_tasks() == []
    await backend.close()


CLOSER = """
import asyncio, sys, threading
from sitq import SQLiteBackend, TaskQueue
sys.path.insert(0, sys.argv[2])
import sitq_test_tasks as tasks

backend = SQLiteBackend(sys.argv[1])
stop = threading.Event()

def producer():
    async def main():
        queue = TaskQueue(backend)
        while not stop.is_set():
            await queue.enqueue(tasks.add, 1)
    asyncio.run(main())

thread = threading.Thread(target=producer)
thread.start()

async def closer():
    for _ in range(30):
        await asyncio.sleep(0.01)
        await backend.close()

asyncio.run(closer())
stop.set()
thread.join()
print("survived")
"""


def test_closing_a_backend_while_another_thread_enqueues_is_safe(tmp_path: Path) -> None:
    # The other thread's connection used to be closed under its running statement: a segfault.
    here = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", CLOSER, str(tmp_path / "closing.db"), str(here)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_threads_that_end_give_their_connection_back(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "threads.db")
    with SyncTaskQueue(backend) as queue:
        for n in range(100):  # one short-lived thread per request, as a threaded web server does
            thread = threading.Thread(target=queue.enqueue, args=(tasks.add, n))
            thread.start()
            thread.join(10)
        gc.collect()
        assert queue.counts()["queued"] == 100
        inline = backend._inline
        assert inline is not None and inline.connection_count() <= 2  # this thread's, perhaps the loop's


def test_close_from_another_thread_ends_every_waiting_and_arriving_call(tmp_path: Path) -> None:
    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "busy.db"))
    queue.connect()
    stop = threading.Event()
    outcomes: dict[int, str] = {}
    calls = [0]

    def produce(k: int) -> None:
        try:
            while not stop.is_set():
                queue.enqueue(tasks.add, k) if k % 2 else queue.counts()
                calls[0] += 1
            outcomes[k] = "stopped"
        except SyncTaskQueueError as exc:
            outcomes[k] = str(exc)

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(4)]
    for thread in threads:
        thread.start()
    wait_until_sync(lambda: calls[0] >= 40)  # every thread is busy calling
    queue.close()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a call kept waiting on the closed queue"
    assert all(o == "stopped" or "closed by another thread" in o for o in outcomes.values()), outcomes
    assert not [t.name for t in threading.enumerate() if t.name.startswith("sitq-sync-loop")]


@pytest.mark.asyncio
async def test_close_writes_a_pending_group_and_keeps_the_backend_closed(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    backend = SQLiteBackend(path)
    queue = TaskQueue(backend)
    await queue.connect()
    callers = [asyncio.create_task(queue.enqueue(tasks.add, i)) for i in range(50)]
    await asyncio.sleep(0)  # every caller has joined the group; it is not written yet
    await queue.close()
    ids = await asyncio.gather(*callers)
    assert len(set(ids)) == 50
    assert backend._db is None, "the group reopened the backend after close()"
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM tasks").fetchone()[0] == 50


@pytest.mark.asyncio
async def test_a_caller_cancelled_while_the_first_connect_runs_cancels_only_itself(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "first.db"))  # not connected: the first enqueue connects
    callers = [asyncio.create_task(queue.enqueue(tasks.add, i)) for i in range(20)]
    await asyncio.sleep(0)
    callers[0].cancel()  # the one that started the connect
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert all(isinstance(outcome, str) for outcome in outcomes[1:]), outcomes
    assert (await queue.counts())["queued"] == 19
    await queue.close()


def test_close_from_another_thread_lets_a_running_write_finish(tmp_path: Path) -> None:
    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "write.db"))
    queue.connect()
    outcome: list[object] = []

    def produce() -> None:
        try:
            outcome.append(queue.enqueue_many([(tasks.add, (i,)) for i in range(60_000)]))
        except SyncTaskQueueError as exc:
            outcome.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until_sync(lambda: bool(queue._calls) or bool(outcome))  # the batch is being written
    queue.close()
    producer.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], list) and len(outcome[0]) == 60_000, outcome[:1]
    with sqlite3.connect(tmp_path / "write.db") as check:
        assert check.execute("SELECT count(*) FROM tasks").fetchone()[0] == 60_000


@pytest.mark.asyncio
async def test_a_task_with_unstorable_text_fails_alone_in_its_group(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "text.db")
    queue = TaskQueue(backend)
    await queue.connect()
    # a task built by hand (queues escape such names): its function_name cannot be UTF-8
    odd = Task(id=new_id(), payload=b"payload", function_name="bad\ud800")
    outcomes = await asyncio.gather(
        backend.enqueue(odd), *(queue.enqueue(tasks.add, i) for i in range(1, 6)), return_exceptions=True
    )
    assert isinstance(outcomes[0], Exception) and all(isinstance(o, str) for o in outcomes[1:]), outcomes
    assert (await queue.counts())["queued"] == 5
    await queue.close()


def test_a_connect_given_up_by_its_caller_is_taken_over_by_a_waiter_on_another_loop(tmp_path: Path) -> None:
    path = tmp_path / "taken-over.db"
    with sqlite3.connect(path) as empty:  # a WAL file without sitq's tables yet: connecting must create them
        empty.execute("PRAGMA journal_mode = WAL")
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the file while the backend connects
    backend = SQLiteBackend(path, busy_timeout=5)
    outcomes: dict[str, str] = {}

    def impatient() -> None:  # starts the connect, then gives up on it; its event loop ends
        async def run() -> None:
            await asyncio.wait_for(backend.connect(), 0.2)

        try:
            asyncio.run(run())
            outcomes["impatient"] = "connected"
        except TimeoutError:
            outcomes["impatient"] = "gave up"

    def patient() -> None:  # waits for that same connect, on its own loop
        async def run() -> None:
            await backend.connect()
            await backend.close()

        try:
            asyncio.run(run())
            outcomes["patient"] = "connected"
        except Exception as exc:
            outcomes["patient"] = repr(exc)

    first_thread = threading.Thread(target=impatient)
    first_thread.start()
    wait_until_sync(lambda: backend._connecting is not None)
    second_thread = threading.Thread(target=patient)
    second_thread.start()
    first_thread.join(10)
    locker.execute("ROLLBACK")
    locker.close()
    second_thread.join(10)
    assert outcomes == {"impatient": "gave up", "patient": "connected"}


def _close_twice_at_once(queue: SyncTaskQueue) -> list[BaseException]:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def closer() -> None:
        barrier.wait(10)
        try:
            queue.close()
        except BaseException as exc:
            errors.append(exc)

    closers = [threading.Thread(target=closer) for _ in range(2)]
    for thread in closers:
        thread.start()
    for thread in closers:
        thread.join(30)
    assert not any(thread.is_alive() for thread in closers)
    return errors


def test_close_from_two_threads_at_once_closes_once(tmp_path: Path) -> None:
    for round_ in range(10):
        queue = SyncTaskQueue(SQLiteBackend(tmp_path / f"twice-{round_}.db"))
        queue.enqueue(tasks.add, 1)
        assert _close_twice_at_once(queue) == []
        assert queue.counts()["queued"] == 1  # and it opens again afterwards
        queue.close()


def test_close_called_again_by_the_closing_thread_returns(tmp_path: Path) -> None:
    """A signal handler that closes while its thread is already closing must not wait for itself."""
    import signal

    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "reentrant.db"))
    queue.enqueue(tasks.add, 1)
    handled: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        queue.close()
        handled.append("closed")

    previous = signal.signal(signal.SIGUSR1, on_signal)
    writer = threading.Thread(target=lambda: queue.enqueue_many([(tasks.add, (i,)) for i in range(40_000)]))
    try:
        writer.start()
        wait_until_sync(lambda: bool(queue._calls))  # the batch is being written: close() will wait for it
        threading.Timer(0.05, lambda: signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)).start()
        queue.close()  # the signal arrives while this waits for the running write
        writer.join(60)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled == ["closed"]
    assert queue.counts()["queued"] == 40_001
    queue.close()


SIGNAL_CLOSER = """
import faulthandler, random, signal, sqlite3, sys
from sitq import SyncTaskQueue, SyncTaskQueueError
sys.path.insert(0, sys.argv[2])
import sitq_test_tasks as tasks

faulthandler.dump_traceback_later(90, exit=True)  # a hang prints every thread's stack and fails the run
random.seed(7)
for round_ in range(40):
    path = f"{sys.argv[1]}/round-{round_}.db"
    queue = SyncTaskQueue("sqlite:///" + path)
    ids = [queue.enqueue(tasks.add, 0)]  # opened: the next lone enqueues are stored on this thread
    stopping = []

    def on_alarm(signum, frame):
        stopping.append(signum)
        queue.close()  # a supervisor's stop request, taken on the producer's own thread

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.002, 0.02))
    while not stopping:
        try:
            ids.append(queue.enqueue(tasks.add, 1))
        except SyncTaskQueueError as exc:  # nothing stored by this one: the close came first
            assert "closed on this same thread" in str(exc), exc
    # the signal may also land between the loop's check and its next enqueue, a call made after the
    # close, which opens the queue again (as any call after close() does)
    queue.close()
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM tasks")}
    assert stored == set(ids), (round_, len(stored), len(ids))
print("survived")
"""


def test_close_from_a_signal_handler_during_an_enqueue_on_the_same_thread(tmp_path: Path) -> None:
    # The handler interrupted a lone enqueue storing its task on the main thread's own connection, whose
    # lock closing the backend waits for (on the loop thread) while the handler waited for that close: a hang.
    here = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_CLOSER, str(tmp_path), str(here)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-3000:])


def test_a_wait_ended_by_a_close_on_its_own_thread_says_so(tmp_path: Path) -> None:
    import signal

    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "own-thread.db"))
    queue.connect()

    def on_alarm(signum: int, frame: object) -> None:
        queue.close()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(SyncTaskQueueError) as caught:
            queue.get_result("no-such-task", timeout=30)  # no worker: it waits until the handler closes
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert "closed on this same thread" in str(caught.value), caught.value
    assert "another thread" not in str(caught.value)
    queue.close()


INTERRUPTED_CLOSE = """
import asyncio, gc, sys
from sitq import SQLiteBackend, SyncTaskQueue
sys.path.insert(0, sys.argv[2])
import sitq_test_tasks as tasks

class SlowToClose(SQLiteBackend):  # a backend whose close takes a while (asyncpg closing a pool, say)
    async def close(self):
        print("CLOSING", flush=True)  # the test sends the second Ctrl-C once it reads this line
        try:
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
        finally:
            await super().close()

queue = None  # bound before anything can be interrupted: the lines below run whatever happens
try:
    with SyncTaskQueue(SlowToClose(sys.argv[1])) as queue:
        queue.enqueue(tasks.add, 1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
del queue
gc.collect()  # a task left pending on the stopped loop says so as it goes
"""


def test_an_interrupted_close_lets_what_runs_on_the_loop_end_before_stopping_it(tmp_path: Path) -> None:
    # A second Ctrl-C as `with SyncTaskQueue(...)` closed stopped the loop under the running close:
    # "Task was destroyed but it is pending!" and "Event loop is closed" from asyncpg at exit.
    # The Ctrl-C is sent once the script says its close is running (a line, not a time: a thread of its
    # own that waited for the close with a time limit sent it early on a loaded machine, before `queue` was
    # bound, and the script failed with a NameError).
    here = Path(__file__).resolve().parents[1]
    errors = tmp_path / "stderr.txt"
    with open(errors, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-W", "default", "-c", INTERRUPTED_CLOSE, str(tmp_path / "interrupted.db"), str(here)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()  # "" when the script ended without reaching its close
            assert ready.strip() == "CLOSING", errors.read_text()[-3000:]
            child.send_signal(signal.SIGINT)
            out, _ = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    err = errors.read_text()
    assert child.returncode == 0 and "interrupted" in out, err[-3000:]
    assert "destroyed" not in err and "Exception ignored" not in err, err[-3000:]


def test_a_second_close_returns_only_when_the_first_has_finished(tmp_path: Path) -> None:
    for round_ in range(30):
        queue = SyncTaskQueue(SQLiteBackend(tmp_path / f"late-{round_ % 3}.db"))
        queue.enqueue(tasks.add, 1)
        loop = queue._loop
        failures: list[str] = []

        def second(queue: SyncTaskQueue = queue, loop: object = loop, failures: list[str] = failures) -> None:
            while not getattr(loop, "is_closed", lambda: True)():  # arrive just as the first closes the loop
                time.sleep(0)
            queue.close()
            try:
                queue.counts()  # the first close has finished: this opens the queue again
            except SyncTaskQueueError as exc:
                failures.append(str(exc))

        thread = threading.Thread(target=second)
        thread.start()
        queue.close()
        thread.join(30)
        queue.close()
        assert failures == []
