"""The sync tasks' thread pool: results, errors, its bound, shutdown, and daemon threads."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

from sitq_core.taskthreads import TaskThreads

from sitq_test_helpers import wait_until_sync

TESTS = Path(__file__).resolve().parents[1]


def test_results_and_errors_reach_their_futures() -> None:
    pool = TaskThreads(2, "t")
    try:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result(5) == 5
        with pytest.raises(KeyboardInterrupt):  # any BaseException is the caller's, not the thread's end
            pool.submit(lambda: (_ for _ in ()).throw(KeyboardInterrupt())).result(5)
        assert pool.submit(lambda: "still serving").result(5) == "still serving"
    finally:
        pool.shutdown()


def test_never_more_threads_than_asked_and_idle_ones_are_reused() -> None:
    pool = TaskThreads(2, "bounded")
    gate = threading.Event()
    seen: set[str] = set()

    def hold() -> None:
        seen.add(threading.current_thread().name)
        gate.wait(10)

    try:
        futures = [pool.submit(hold) for _ in range(5)]
        gate.set()
        for future in futures:
            future.result(10)
        assert seen <= {"bounded_0", "bounded_1"}
        for _ in range(20):
            pool.submit(lambda: None).result(5)
        assert len(pool._threads) == 2
        assert all(thread.daemon for thread in pool._threads)
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_refuses_more() -> None:
    pool = TaskThreads(1, "s")
    gate = threading.Event()
    running = pool.submit(gate.wait, 10)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    assert running.result(10) is True
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    pool.shutdown(wait=True)
    assert not any(thread.is_alive() for thread in pool._threads)


APP = """
import asyncio, sys, time
import sitq_test_tasks as tasks
from sitq import SQLiteBackend, TaskQueue, Worker

async def main():
    async with TaskQueue(SQLiteBackend(sys.argv[1])) as queue:
        worker = Worker(queue.backend)
        await worker.start()
        task_id = await queue.enqueue(tasks.sync_sleepy, 120.0)
        while (await queue.backend.get_task(task_id)).status != "running":
            await asyncio.sleep(0.02)
        await worker.stop(timeout=0.1)  # the call runs on in its thread; its lease is released
        print("stopped", flush=True)

asyncio.run(main())
"""


def test_an_app_exits_although_a_sync_task_it_gave_up_on_still_runs(tmp_path: Path) -> None:
    """The process used to wait for the abandoned call (120 s here) before it could exit."""
    env = {"PYTHONPATH": str(TESTS), "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(APP), str(tmp_path / "app.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_a_pool_dropped_without_shutdown_lets_its_idle_threads_end() -> None:
    import gc

    pool = TaskThreads(2, "dropped")
    pool.submit(lambda: None).result(5)
    threads = list(pool._threads)
    del pool
    gc.collect()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


class _Tracked:
    """A return value whose lifetime a weak reference can watch."""


def test_an_idle_thread_keeps_nothing_of_the_last_value_it_returned() -> None:
    """An idle pool thread kept its last return value (a batch's list: every value in it) until its next item."""
    pool = TaskThreads(1, "keeps-nothing")
    try:
        value = pool.submit(_Tracked).result(5)
        gone = weakref.ref(value)
        del value

        def released() -> bool:
            gc.collect()
            return gone() is None

        wait_until_sync(released, timeout=5)
    finally:
        pool.shutdown()
