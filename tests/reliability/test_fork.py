"""A queue used in a parent keeps working in a forked child (gunicorn --preload, a fork pool) and in the parent."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

from sitq import SyncTaskQueue, TaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import in_child, wait_until_sync

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fork.db'}"
        return
    require_postgres()
    schema = f"fork_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}"
    yield f"{DSN}?schema={schema}"
    drop_schema(schema)


def test_a_sync_queue_used_before_fork_works_in_the_child_and_the_parent(url: str) -> None:
    with SyncTaskQueue(url) as queue:
        queue.enqueue(tasks.add, 1)  # the parent connected: its threads do not exist in the child

        def child() -> None:
            for n in range(5):
                queue.enqueue(tasks.add, n)
            assert queue.counts()["queued"] == 6

        assert in_child(child) == 0, "the child's calls hung or failed"
        queue.enqueue(tasks.add, 2)  # and the parent's queue is untouched by the child
        assert queue.counts()["queued"] == 7


def test_an_async_queue_used_before_fork_works_in_the_child(url: str) -> None:
    queue = TaskQueue(url)
    asyncio.run(queue.enqueue(tasks.add, 1))

    def child() -> None:
        async def work() -> None:
            await queue.enqueue(tasks.add, 2)
            assert (await queue.counts())["queued"] == 2
            await queue.close()

        asyncio.run(work())

    assert in_child(child) == 0, "the child's calls hung or failed"
    assert asyncio.run(queue.counts())["queued"] == 2
    asyncio.run(queue.close())


def test_a_backend_travels_to_a_spawn_child_as_its_configuration(url: str) -> None:
    import multiprocessing
    import pickle

    backend = SyncTaskQueue(url).backend
    with SyncTaskQueue(backend) as queue:
        queue.enqueue(tasks.add, 0)  # connected here: only the configuration travels
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            task_id = pool.apply(tasks.enqueue_through, (backend,))
        assert queue.get_task(task_id) is not None, "the child's enqueue did not reach the same store"
        copy = pickle.loads(pickle.dumps(backend))
        assert type(copy) is type(backend) and copy is not backend
        assert {k: v for k, v in vars(copy).items() if not k.startswith("_")} == {
            k: v for k, v in vars(backend).items() if not k.startswith("_")
        }


def test_an_in_memory_database_refuses_to_travel() -> None:
    import pickle

    from sitq import SQLiteBackend

    with pytest.raises(TypeError, match="in-memory"):
        pickle.dumps(SQLiteBackend(":memory:"))


def test_forks_while_other_threads_write_leave_every_child_working(tmp_path: Path) -> None:
    """A fork in the middle of another thread's transaction used to leave the child waiting on a phantom lock."""
    import threading

    path = tmp_path / "busy.db"
    with SyncTaskQueue(f"sqlite:///{path}") as queue:
        queue.enqueue(tasks.add, 0)
        stop = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            try:
                while not stop.is_set():
                    queue.enqueue(tasks.add, 1)
            except BaseException as exc:
                failures.append(exc)

        def write_batches() -> None:
            try:
                while not stop.is_set():
                    queue.enqueue_many([(tasks.add, (n,), {}) for n in range(20)])
            except BaseException as exc:
                failures.append(exc)

        writers = [threading.Thread(target=write) for _ in range(2)] + [threading.Thread(target=write_batches)]
        for thread in writers:
            thread.start()
        try:

            def child() -> None:
                with SyncTaskQueue(f"sqlite:///{path}") as own:
                    own.enqueue(tasks.add, 2)
                queue.enqueue(tasks.add, 3)

            codes = []
            for _ in range(20):
                codes.append(in_child(child, timeout=10))
                if codes[-1] != 0:
                    break
        finally:
            stop.set()
            for thread in writers:
                thread.join()
    assert codes == [0] * 20, "a child forked during a write hung (-14: SIGALRM) or failed"
    assert failures == [], "the parent's own writes failed across the forks"


def test_the_parent_closing_its_queue_does_not_lose_the_childs_commits(tmp_path: Path) -> None:
    """A child's connection must hold real file locks: a parent's last close must not delete the WAL under it."""
    import sqlite3

    path = tmp_path / "shared.db"
    queue = SyncTaskQueue(f"sqlite:///{path}")
    queue.__enter__()
    queue.enqueue(tasks.add, 0)  # the parent holds connections to the file when it forks
    child_ready, parent_closed = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        signal.alarm(30)
        try:
            with SyncTaskQueue(f"sqlite:///{path}") as own:
                own.enqueue(tasks.add, 1)
                os.write(child_ready[1], b"x")
                os.read(parent_closed[0], 1)
                for n in range(300):
                    own.enqueue(tasks.add, n)
                os._exit(0)  # a crash: no clean close, so nothing is checkpointed on the way out
        except BaseException:
            os._exit(1)
    assert os.read(child_ready[0], 1) == b"x"
    queue.__exit__(None, None, None)  # the parent's last connection to the file closes
    os.write(parent_closed[1], b"x")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert stored == 302, f"{302 - stored} enqueues that returned in the child were lost"


async def inline_when_it_runs(backend: Any) -> Any:
    """The journal mode read on the calling thread's own (inline) connection.

    The inline path steps aside for a moment after meeting a lock (``Fallback``),
    as under a loaded machine with a rollback journal: ask again until it runs.
    """
    from sitq_sqlite.inline import Fallback

    deadline = time.monotonic() + 10
    while True:
        try:
            return backend._inline.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0], write=False)
        except Fallback:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("journal_mode", ["TRUNCATE", "PERSIST", "MEMORY"])
def test_a_rollback_journal_mode_survives_the_reopen_after_a_fork(tmp_path: Path, journal_mode: str) -> None:
    """A rollback journal mode is per connection: the connection reopened after a fork went back to DELETE."""
    from sitq import SQLiteBackend

    def modes(backend: SQLiteBackend) -> tuple[str, str]:
        async def read() -> tuple[str, str]:
            thread = await backend._run("check", lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
            inline = await inline_when_it_runs(backend)
            return str(thread).upper(), str(inline).upper()

        return asyncio.run(read())

    backend = SQLiteBackend(tmp_path / "journal.db", journal_mode=journal_mode)
    with SyncTaskQueue(backend) as queue:
        queue.enqueue(tasks.add, 1)
        assert in_child(lambda: None) == 0
        assert modes(backend) == (journal_mode, journal_mode)


def test_a_fork_does_not_wait_for_a_call_that_waits_for_another_processs_lock(tmp_path: Path) -> None:
    """A call busy-waiting for another process's write lock held the fork (and every inline caller) for seconds."""
    import subprocess
    import sys
    import threading

    from sitq import SQLiteBackend

    path = tmp_path / "held.db"
    with SyncTaskQueue(SQLiteBackend(path, busy_timeout=20)) as queue:
        queue.enqueue(tasks.add, 0)
        hold = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(3)\nc.execute('COMMIT')\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
            writer = threading.Thread(target=queue.enqueue_many, args=([(tasks.add, (n,), {}) for n in range(50)],))
            writer.start()  # its transaction waits (retrying) until the other process commits
            slowest = 0.0
            forks = 0
            while writer.is_alive() and forks < 5:
                began = time.monotonic()
                assert in_child(lambda: None) == 0
                slowest = max(slowest, time.monotonic() - began)
                forks += 1
            writer.join(30)
        finally:
            holder.wait(30)
        assert queue.counts()["queued"] == 51
    assert forks >= 2 and slowest < 1.0, f"a fork waited {slowest:.2f} s for a call that held no lock"


def test_forks_while_other_threads_open_and_close_queues_carry_no_connection_into_the_children(
    tmp_path: Path,
) -> None:
    """A connection still opening (or closing, its backend already let go of it) was left open across the fork:
    children lost enqueues that had returned, and the file was corrupted."""
    import sqlite3
    import threading

    url = f"sqlite:///{tmp_path / 'per-request.db'}"
    with SyncTaskQueue(url) as queue:
        queue.enqueue(tasks.add, 0)
    stop = threading.Event()
    failures: list[BaseException] = []

    def request_thread() -> None:  # a web handler opening a queue per request
        try:
            while not stop.is_set():
                with SyncTaskQueue(url) as per_request:
                    per_request.enqueue(tasks.add, 1)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=request_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    codes: list[int] = []
    try:

        def child() -> None:
            with SyncTaskQueue(url) as own:
                task_id = own.enqueue(tasks.add, 2)
            with open(tmp_path / "child-ids", "a") as ids:
                ids.write(task_id + "\n")
            os._exit(0)  # hard, as a crashed child would: what it enqueued must already be stored

        for _ in range(60):
            codes.append(in_child(child, timeout=20))
            if codes[-1] != 0:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert codes == [0] * 60, "a child failed or hung"
    assert failures == [], failures[:1]
    returned = (tmp_path / "child-ids").read_text().split()
    with sqlite3.connect(tmp_path / "per-request.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in conn.execute("SELECT id FROM tasks")}
    assert len(returned) == 60 and set(returned) <= stored, "enqueues that returned in a child were lost"


def test_forks_while_short_lived_threads_enqueue_carry_no_connection_into_the_children(tmp_path: Path) -> None:
    """A thread's inline connection was closed by its finalizer outside the gate when the thread ended: a fork
    in that moment carried it into the child (lost tasks, a WAL deleted under live connections)."""
    import threading

    path = tmp_path / "short-threads.db"
    with SyncTaskQueue(f"sqlite:///{path}") as shared:
        shared.enqueue(tasks.add, 0)
        stop = threading.Event()

        def spawner() -> None:
            while not stop.is_set():
                short = [threading.Thread(target=shared.enqueue, args=(tasks.add, 1)) for _ in range(4)]
                for thread in short:
                    thread.start()
                for thread in short:
                    thread.join()

        spawners = [threading.Thread(target=spawner) for _ in range(2)]
        for thread in spawners:
            thread.start()

        def child() -> None:
            fds = os.listdir("/proc/self/fd")
            inherited = [fd for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(path))]
            if inherited:
                os._exit(7)

        try:
            codes = [in_child(child, timeout=20) for _ in range(60)]
        finally:
            stop.set()
            for thread in spawners:
                thread.join(30)
    assert codes == [0] * 60, "a child inherited an open handle to the database (7) or hung"


def test_a_child_forked_while_another_thread_closes_the_queue_can_wait_for_results(tmp_path: Path) -> None:
    """The count of closes under way was copied mid-close into the child, where that close never ends:
    every get_result there refused ("called while the queue was closing") for the child's life."""
    import threading

    from sitq import SQLiteBackend

    parent = os.getpid()
    closing = threading.Event()
    releases: list[Callable[[], object]] = []

    class SlowToClose(SQLiteBackend):  # a backend whose close takes a while (a slow network, say)
        async def close(self) -> None:
            if os.getpid() == parent:
                loop, release = asyncio.get_running_loop(), asyncio.Event()
                releases.append(lambda: loop.call_soon_threadsafe(release.set))
                closing.set()
                async with asyncio.timeout(30):
                    await release.wait()
            await super().close()

    queue = TaskQueue(SlowToClose(tmp_path / "closing.db"))
    task_id = asyncio.run(queue.enqueue(tasks.add, 1))
    closer = threading.Thread(target=lambda: asyncio.run(queue.close()))
    closer.start()
    try:
        assert closing.wait(30)  # the close is under way in the other thread as this one forks

        def child() -> None:
            async def work() -> None:
                assert await queue.get_result(task_id, timeout=0) is None  # not run yet, and no refusal
                await queue.close()

            asyncio.run(work())

        assert in_child(child) == 0, "get_result in the child refused: a close of the parent's counted there"
    finally:
        for release in releases:
            release()
        closer.join(30)


CHILD_EXIT = """
import os, sys
from sitq import SyncTaskQueue
sys.path.insert(0, sys.argv[2])
import sitq_test_tasks as tasks

queue = SyncTaskQueue(sys.argv[1])
task_id = queue.enqueue(tasks.add, 1)
assert queue.get_result(task_id, timeout=0.1) is None  # it waited: a PostgreSQL backend opened its listener
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: the interpreter's shutdown runs in the child
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
queue.enqueue(tasks.add, 2)  # the child left the parent's connections alone
assert queue.counts()["queued"] == 2 and queue.get_result(task_id, timeout=0.1) is None
queue.close()
print("parent done")
"""

# CPython 3.12+ warns at a fork of a process that has threads (an open queue has its loop thread, SQLite its
# connection thread); the warning is printed by the parent, at the fork, and is not about the child's exit.
FORK_WITH_THREADS = re.compile(
    r"^.*?: DeprecationWarning: This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to "
    r"deadlocks in the child\.\n(?:  .*\n)?",
    re.MULTILINE,
)


def test_a_child_exiting_normally_prints_nothing_about_the_parents_connections(url: str) -> None:
    """The parent's PostgreSQL listener, kept referenced in the child, was freed half-way through the child's
    shutdown: asyncpg's finaliser failed there ("'NoneType' object has no attribute 'warn'") at every exit."""
    import subprocess
    import sys

    here = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", CHILD_EXIT, url, str(here)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "parent done" in done.stdout, done.stderr[-3000:]
    stderr = FORK_WITH_THREADS.sub("", done.stderr)
    assert "Exception ignored" not in stderr and "Warning" not in stderr, done.stderr[-3000:]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_closed_queue_leaves_no_thread_behind_to_warn_about_at_a_fork(url: str, kind: str) -> None:
    """Closing a queue before forking is how to keep CPython 3.12+ from warning that the process is
    multi-threaded (docs/how-to/sqlite-backend.md, "Forking"): so a close returns once the queue's threads
    have ended. The SQLite connection thread said it was closed before it ended, and often was still there."""
    import threading

    before = set(threading.enumerate())
    for _ in range(30):  # the thread outlived the close in about one close in 20
        if kind == "sync":
            with SyncTaskQueue(url) as queue:
                queue.enqueue(tasks.add, 1)
        else:

            async def use_and_close() -> None:
                async with TaskQueue(url) as queue:
                    await queue.enqueue(tasks.add, 1)

            asyncio.run(use_and_close())
        left = [thread.name for thread in set(threading.enumerate()) - before]
        assert not left, f"threads still running after the queue closed: {left}"


def test_a_running_workers_loop_watch_stays_in_the_parent_and_a_child_gets_its_own(tmp_path: Path) -> None:
    """The worker's loop watch is a thread: a child forked beside it (a fork pool) inherits a stopped copy that
    never waits on the parent's thread or its lock, and a worker started in the child watches its own loop."""
    import logging
    import threading

    from sitq import Worker

    def child() -> None:
        inherited = worker._watch
        assert inherited is not None and not inherited.alive
        inherited.stop()  # returns at once: nothing of the parent's thread is waited for

        class Warned(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "has not responded" in record.getMessage():
                    tasks.LOOP_BLOCK_WARNED.set()

        tasks.LOOP_BLOCK_WARNED.clear()
        logging.getLogger("sitq.worker").addHandler(Warned())

        async def work() -> None:
            async with TaskQueue(f"sqlite:///{tmp_path / 'child.db'}") as queue:
                own = Worker(queue.backend, lease_timeout=0.6)
                await own.start()
                result = await queue.get_result(await queue.enqueue(tasks.blocks_the_loop, 10), timeout=30)
                await own.stop()
                assert result is not None and queue.deserialize_result(result) == "warned"

        asyncio.run(work())

    async def main() -> None:
        async with TaskQueue(f"sqlite:///{tmp_path / 'parent.db'}") as queue:
            await worker.start()
            try:
                assert worker._watch is not None and worker._watch.alive
                assert await asyncio.to_thread(in_child, child) == 0, "the child's worker hung or did not warn"
                assert worker._watch is not None and worker._watch.alive
                result = await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=10)
                assert result is not None and result.status == "success"
            finally:
                await worker.stop()

    worker = Worker(f"sqlite:///{tmp_path / 'parent.db'}", lease_timeout=0.6)
    asyncio.run(main())
    name = f"sitq-loopwatch-{worker.worker_id}"
    wait_until_sync(lambda: not any(t.name == name for t in threading.enumerate()))  # it ended with the worker


def test_a_child_forked_by_a_task_gets_back_the_signal_handlers_from_before_run(url: str) -> None:
    """With the worker's setup (asyncio's no-op handler, the loop's socket as wake-up fd) a task's child ignored
    SIGTERM and wrote every signal it got into the worker's socket, as if the worker had been signalled."""
    from sitq import Worker

    before = signal.signal(signal.SIGTERM, tasks.app_sigterm_handler)  # the application's own, before run()
    try:

        async def main() -> Any:
            async with TaskQueue(url) as queue:
                worker = Worker(queue.backend)
                running = asyncio.ensure_future(worker.run())
                try:
                    task_id = await queue.enqueue(tasks.fork_and_report_signal_setup)
                    result = await queue.get_result(task_id, timeout=30)
                finally:
                    await worker.stop()
                    await running
                assert result is not None and result.status == "success", result
                return queue.deserialize_result(result)

        report = asyncio.run(main())
        assert signal.getsignal(signal.SIGTERM) is tasks.app_sigterm_handler
    finally:
        signal.signal(signal.SIGTERM, before)
    assert report == {"SIGTERM": "app", "SIGINT": report["SIGINT"], "wakeup_fd": -1}
    assert report["SIGINT"] != "_sighandler_noop"  # asyncio.run's own (it is not sitq's to undo) or the default
