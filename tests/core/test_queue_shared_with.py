"""One TaskQueue shared by coroutines that each use ``async with queue:``: the last block to end closes it."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, TaskQueue, TaskQueueError, Worker

import sitq_test_tasks as tasks
from sitq_test_helpers import in_child, wait_until


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


@pytest_asyncio.fixture
async def worker(path: Path) -> AsyncIterator[Worker]:
    """A real worker with a backend object of its own on the same file."""
    running = Worker(f"sqlite:///{path}", max_concurrency=4)
    await running.start()
    yield running
    await running.stop()


def is_closed(queue: TaskQueue) -> bool:
    """The queue's SQLite backend holds no connection thread."""
    backend = queue.backend
    assert isinstance(backend, SQLiteBackend)
    return backend._db is None


async def waiting_on(queue: TaskQueue) -> bool:
    return bool(queue._waiters._waiting)


@pytest.mark.asyncio
async def test_request_handlers_sharing_a_queue_never_close_it_under_each_other(path: Path, worker: Worker) -> None:
    """50 handlers, each ``async with queue:``: the first exit closed the queue under the other 49's get_result."""
    queue = TaskQueue(f"sqlite:///{path}")

    async def request(n: int) -> int:
        async with queue:
            task_id = await queue.enqueue(tasks.add, n, n)
            for _ in range(n % 3):  # the handlers leave their blocks in a mixed order
                await asyncio.sleep(0)
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None
            return int(queue.deserialize_result(result))

    outcomes = await asyncio.gather(*(request(n) for n in range(50)), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], f"{len(failures)} of 50 requests failed: {failures[0]!r}"
    assert outcomes == [2 * n for n in range(50)]
    assert is_closed(queue), "the last async with block to end must close the queue"


@pytest.mark.asyncio
async def test_a_block_ending_leaves_another_blocks_wait_alone(path: Path) -> None:
    """Deterministic: B waits on a result inside its block; A leaves its block; B's wait must go on."""
    queue = TaskQueue(f"sqlite:///{path}")
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def first() -> None:
        async with queue:
            entered.set()
            await leave.wait()

    a = asyncio.create_task(first())
    await entered.wait()
    async with queue:
        task_id = await queue.enqueue(tasks.add, 20, 1)
        b = asyncio.create_task(queue.get_result(task_id, timeout=30))
        await wait_until(lambda: waiting_on(queue))
        leave.set()
        await a
        assert not b.done(), f"A's exit ended B's wait: {b}"
        assert not is_closed(queue), "A's exit closed the queue while this block was still open"
        running = Worker(f"sqlite:///{path}")
        await running.start()
        try:
            result = await b
        finally:
            await running.stop()
        assert result is not None and queue.deserialize_result(result) == 21
    assert is_closed(queue)


@pytest.mark.asyncio
async def test_nested_blocks_close_the_queue_only_at_the_outermost_exit(path: Path) -> None:
    queue = TaskQueue(f"sqlite:///{path}")
    async with queue:
        await queue.enqueue(tasks.add, 1)
        backend = queue.backend
        assert isinstance(backend, SQLiteBackend)
        db = backend._db
        async with queue as inner:
            assert inner is queue
            await queue.enqueue(tasks.add, 2)
        assert not is_closed(queue), "the inner block closed the queue the outer one still uses"
        await queue.enqueue(tasks.add, 3)
        assert backend._db is db, "the queue was closed and opened again in between"
    assert is_closed(queue), "the outermost exit must close the queue"
    async with queue:  # and it opens again, counting from nothing
        assert (await queue.counts())["queued"] == 3
    assert is_closed(queue)


@pytest.mark.asyncio
async def test_a_block_entered_while_the_last_one_closes_waits_for_that_close_then_opens(path: Path) -> None:
    """B entering while A's last exit is closing ran its body on a queue being closed under it."""
    closing = asyncio.Event()
    release = asyncio.Event()
    closed = asyncio.Event()

    class SlowToClose(SQLiteBackend):
        async def close(self) -> None:
            closing.set()
            await release.wait()
            await super().close()
            closed.set()

    queue = TaskQueue(SlowToClose(path))
    await queue.enqueue(tasks.add, 0)

    async def leave() -> None:
        async with queue:
            pass

    a = asyncio.create_task(leave())
    await closing.wait()
    outcome: list[Any] = []

    async def enter() -> None:
        try:
            async with queue:
                outcome.append((closed.is_set(), not is_closed(queue), (await queue.counts())["queued"]))
        except BaseException as exc:
            outcome.append(exc)

    b = asyncio.create_task(enter())

    async def counted_in_or_done() -> bool:  # B counted itself in while A's close is under way (or went ahead)
        return bool(outcome) or getattr(queue, "_users", 0) == 1

    await wait_until(counted_in_or_done)
    release.set()
    await asyncio.gather(a, b)
    assert outcome == [(True, True, 1)], "B's block must run after A's close, on the queue opened again"
    assert is_closed(queue)


@pytest.mark.asyncio
async def test_explicit_close_still_ends_a_wait_inside_a_block(path: Path) -> None:
    """``close()`` keeps its meaning: it closes now, whoever is inside an ``async with`` block."""
    queue = TaskQueue(f"sqlite:///{path}")
    inside = asyncio.Event()

    async def wait() -> Any:
        async with queue:
            task_id = await queue.enqueue(tasks.add, 1)  # no worker: its result never comes
            inside.set()
            return await queue.get_result(task_id, timeout=30)

    waiter = asyncio.create_task(wait())
    await inside.wait()
    await wait_until(lambda: waiting_on(queue))
    await queue.close()
    with pytest.raises(TaskQueueError, match="closed while it waited"):
        await waiter
    assert is_closed(queue)


def half_open_connect(backend: SQLiteBackend) -> Callable[[], Any]:
    """A connect that opens the file, then fails (say, on a schema the backend refuses)."""
    real_connect = backend.connect

    async def failing_connect() -> None:
        await real_connect()
        raise OSError("no connection today")

    return failing_connect


@pytest.mark.asyncio
async def test_a_failed_enter_beside_an_open_block_does_not_close_it(path: Path) -> None:
    queue = TaskQueue(f"sqlite:///{path}")
    async with queue:
        await queue.enqueue(tasks.add, 1)
        backend = queue.backend
        assert isinstance(backend, SQLiteBackend)
        real_connect = backend.connect
        backend.connect = half_open_connect(backend)  # type: ignore[method-assign]
        try:
            with pytest.raises(OSError, match="no connection today"):
                async with queue:
                    pass  # pragma: no cover - never reached
        finally:
            backend.connect = real_connect  # type: ignore[method-assign]
        assert not is_closed(queue), "the failed enter closed the queue this block still uses"
        assert (await queue.counts())["queued"] == 1
    assert is_closed(queue), "the failed enter was counted as a block still open"


@pytest.mark.asyncio
async def test_a_failed_enter_with_no_other_block_open_closes_what_it_opened(path: Path) -> None:
    """No exit follows a failed enter: when it was the only block, its half-open backend is closed."""
    queue = TaskQueue(f"sqlite:///{path}")
    backend = queue.backend
    assert isinstance(backend, SQLiteBackend)
    real_connect = backend.connect
    backend.connect = half_open_connect(backend)  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="no connection today"):
            async with queue:
                pass  # pragma: no cover - never reached
    finally:
        backend.connect = real_connect  # type: ignore[method-assign]
    assert is_closed(queue)
    async with queue:  # nothing was left counted: this block opens and closes it
        assert (await queue.counts())["queued"] == 0
    assert is_closed(queue)


@pytest.mark.asyncio
async def test_queues_sharing_a_backend_still_leave_it_to_the_last_queue(path: Path) -> None:
    """Blocks are counted per queue, holds per backend: the last block of the last queue closes the backend."""
    backend = SQLiteBackend(path)
    first, second = TaskQueue(backend), TaskQueue(backend)
    leave = asyncio.Event()
    entered = asyncio.Event()

    async def other_block() -> None:
        async with first:
            entered.set()
            await leave.wait()

    async with second:
        async with first:
            a = asyncio.create_task(other_block())
            await entered.wait()
            task_id = await first.enqueue(tasks.add, 4, 5)
            waiting = asyncio.create_task(first.get_result(task_id, timeout=30))
            await wait_until(lambda: waiting_on(first))
            leave.set()
            await a  # one of first's two blocks ends: its wait goes on
            assert not waiting.done(), f"the end of one of first's blocks ended its wait: {waiting}"
            running = Worker(f"sqlite:///{path}")
            await running.start()
            try:
                result = await waiting
            finally:
                await running.stop()
            assert result is not None and first.deserialize_result(result) == 9
        assert backend._db is not None, "first's last block closed the backend second still has open"
        assert (await second.counts())["success"] == 1
    assert backend._db is None, "the last block of the last queue sharing the backend must close it"


@pytest.mark.asyncio
async def test_a_copy_made_inside_a_block_counts_its_own_blocks(path: Path) -> None:
    queue = TaskQueue(f"sqlite:///{path}")
    async with queue:
        clone = copy.copy(queue)
        async with clone:
            await clone.enqueue(tasks.add, 1)
        assert not is_closed(queue), "the copy's block closed the backend the original still uses"
    assert is_closed(queue), "the copy's block was left counted as open, so it kept holding the backend"


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
@pytest.mark.asyncio
async def test_a_child_forked_inside_a_block_counts_its_own_blocks_from_nothing(path: Path) -> None:
    """A fork pool's child of a parent inside ``async with queue:``: its own block must close the child's queue."""
    queue = TaskQueue(f"sqlite:///{path}")
    async with queue:
        await queue.enqueue(tasks.add, 0)

        async def child_block() -> None:
            async with queue:
                await queue.enqueue(tasks.add, 1)
            assert is_closed(queue), "the child's block left the queue open: it counted the parent's"

        assert in_child(lambda: asyncio.run(child_block()), on_new_thread=True) == 0
        assert not is_closed(queue), "the child closed the parent's queue"
        assert (await queue.counts())["queued"] == 2
    assert is_closed(queue)


@needs_fork
@pytest.mark.asyncio
async def test_a_child_leaving_the_block_it_was_forked_in_closes_its_queue(path: Path) -> None:
    """``os.fork()`` inside ``async with queue:``: the child runs that block's exit, and it is the child's last."""
    queue = TaskQueue(f"sqlite:///{path}")
    async with queue:
        await queue.enqueue(tasks.add, 0)

        async def child_exit() -> None:
            await queue.enqueue(tasks.add, 1)
            await queue.__aexit__(None, None, None)  # what the inherited block does as the child leaves it
            assert is_closed(queue)

        assert in_child(lambda: asyncio.run(child_exit()), on_new_thread=True) == 0
        assert not is_closed(queue)
        assert (await queue.counts())["queued"] == 2
    assert is_closed(queue)
