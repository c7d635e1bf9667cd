"""One backend object used from two event loops in different threads (e.g. SyncTaskQueue + Worker)."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import weakref
from pathlib import Path

import pytest

from sitq_core.models import Result, Task, new_id
from sitq_sqlite import SQLiteBackend
from sitq_sqlite.dbthread import DbThread

from sitq_test_helpers import wait_until


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["memory", "file"])
async def test_two_loops_share_one_backend(tmp_path: Path, where: str) -> None:
    backend = SQLiteBackend(":memory:" if where == "memory" else tmp_path / "two.db")
    count = 40
    results: list[Result | None] = []
    errors: list[BaseException] = []

    async def producer() -> None:
        ids = [await backend.enqueue(Task(id=new_id(), payload=str(i).encode())) for i in range(count)]
        for task_id in ids:
            results.append(await backend.wait_for_result(task_id, 20))

    def thread_main() -> None:
        try:
            asyncio.run(producer())  # connects lazily from this loop, racing the main loop
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=thread_main)
    thread.start()
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while done < count and loop.time() < deadline:
        leases = await backend.reserve(worker_id="main", limit=8, lease_seconds=30)
        for lease in leases:
            assert await backend.complete(lease, lease.task.payload)
        done += len(leases)
        if not leases:
            await backend.wait_for_work(0.5)
    await asyncio.to_thread(thread.join, 20)
    assert not errors, errors
    assert done == count
    assert [r.value if r else None for r in results] == [str(i).encode() for i in range(count)]
    # The memory database is one database: both loops saw the same tasks.
    assert (await backend.counts())["success"] == count
    await backend.close()


@pytest.mark.asyncio
async def test_concurrent_first_use_connects_once() -> None:
    backend = SQLiteBackend(":memory:")
    tasks = [Task(id=new_id(), payload=b"x") for _ in range(20)]
    await asyncio.gather(*(backend.enqueue(task) for task in tasks))
    assert (await backend.counts())["queued"] == 20  # one shared database, not twenty
    await backend.close()


@pytest.mark.parametrize("where", ["memory", "file"])
def test_a_call_waiting_on_a_connect_that_another_thread_then_closes_connects_again(tmp_path: Path, where: str) -> None:
    """It used to be queued behind the closed connection thread's stop mark: no answer, ever."""
    backend = SQLiteBackend(":memory:" if where == "memory" else tmp_path / "closing.db")
    connecting, closed = threading.Event(), threading.Event()
    answer: list[object] = []

    async def other_thread() -> None:
        connecting.wait(20)  # the main thread is connecting now
        call = asyncio.ensure_future(backend.counts())  # waits for that connect
        await asyncio.sleep(0)
        closed.wait(20)  # this loop is busy while the main thread connects and closes
        answer.append(await asyncio.wait_for(call, 20))

    def thread_main() -> None:
        try:
            asyncio.run(other_thread())
        except BaseException as exc:
            answer.append(exc)

    async def main_thread() -> None:
        thread = threading.Thread(target=thread_main)
        thread.start()
        connect = asyncio.ensure_future(backend.connect())
        await asyncio.sleep(0)  # the connect's first step: it owns the pending connect now
        assert backend._connecting is not None
        connecting.set()
        await connect
        await backend.close()
        closed.set()
        await asyncio.to_thread(thread.join, 30)

    asyncio.run(main_thread())
    assert len(answer) == 1 and isinstance(answer[0], dict), f"the call hung or failed: {answer!r}"
    asyncio.run(backend.close())


class _Tracked:
    """A job's result whose lifetime a weak reference can watch."""


@pytest.mark.asyncio
async def test_an_idle_connection_thread_keeps_nothing_of_its_last_job(tmp_path: Path) -> None:
    """The thread kept its last job's result (rows it read: a large task result) until the next job."""
    thread = DbThread("keeps-nothing", lambda: sqlite3.connect(tmp_path / "x.db", check_same_thread=False))
    try:
        value = await thread.run(lambda _conn: _Tracked())
        gone = weakref.ref(value)
        del value

        async def released() -> bool:
            gc.collect()
            return gone() is None

        await wait_until(released, timeout=5)
    finally:
        await thread.shutdown()
