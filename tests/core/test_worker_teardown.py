"""A worker whose event loop ends under it (``asyncio.run`` returning, a framework cancelling every task).

Nothing drains then, so the worker gives back what it holds: a restart of the
application must not use up the running task's lease expiries (three restarts
used to end a healthy task ``failed``, "lease expired after 3 attempts").
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

from sitq import Backend, SQLiteBackend, TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

Shutdown = Callable[[Worker], Awaitable[None]]
MakeBackend = Callable[[], Backend]


@pytest.fixture(params=["sqlite", "postgres"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeBackend]:
    """A new backend object on one store per call (each application run makes its own)."""
    if request.param == "sqlite":
        yield lambda: SQLiteBackend(tmp_path / "app.db")
        return
    require_postgres()
    from sitq_postgres import PostgresBackend

    schema = f"teardown_{uuid.uuid4().hex[:8]}"
    yield lambda: PostgresBackend(DSN, schema=schema)
    drop_schema(schema)


async def returns_at_once(worker: Worker) -> None:
    """The app forgets to stop the worker."""


async def gives_up_waiting_for_stop(worker: Worker) -> None:
    """A framework's shutdown deadline: stop() goes on in the background while asyncio.run ends."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(worker.stop(), 0.2)


def run_app(
    make_backend: MakeBackend, shutdown: Shutdown, marker: Path, *, via_run: bool = False, sync_tasks: int = 0
) -> list[str]:
    """One application run on its own event loop (as ``asyncio.run`` in a process); returns the tasks' ids.

    One long async task runs, or ``sync_tasks`` sync ones that share a thread;
    the first to start writes to ``marker``.
    """

    async def main() -> list[str]:
        async with TaskQueue(make_backend()) as queue:
            worker = Worker(queue.backend, lease_timeout=60.0)
            runner = asyncio.create_task(worker.run(handle_signals=False)) if via_run else None
            if runner is None:
                await worker.start()
            if sync_tasks:
                ids = await queue.enqueue_many([(tasks.record, (str(marker), n, 2.0)) for n in range(sync_tasks)])
            else:
                ids = [await queue.enqueue(tasks.async_record, str(marker), 30.0)]

            async def started() -> bool:
                # started on the worker, not only claimed in the store: a loop ending while the claim's
                # answer is on its way leaves tasks the worker never knew of to their leases (workers.md)
                return await asyncio.to_thread(marker.exists)

            await wait_until(started, timeout=15)
            if runner is not None:
                runner.cancel()  # a lifespan cancelling its background task: the drain begins
                await asyncio.sleep(0.2)
                runner.cancel()  # and again: stop now
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            else:
                await shutdown(worker)
            return ids

    return asyncio.run(main())


async def states(make_backend: MakeBackend, ids: list[str]) -> list[tuple[TaskStatus, int, int]]:
    async with TaskQueue(make_backend()) as queue:
        found = [await queue.backend.get_task(task_id) for task_id in ids]
    return [(t.status, t.attempts, t.lease_expiries) for t in found if t is not None]


@pytest.mark.asyncio
@pytest.mark.parametrize("sync_tasks", [0, 1, 2], ids=["async", "sync", "sync-batch"])
@pytest.mark.parametrize("shutdown", [returns_at_once, gives_up_waiting_for_stop], ids=lambda f: f.__name__)
async def test_a_loop_ending_under_the_worker_gives_its_running_task_back(
    make_backend: MakeBackend, shutdown: Shutdown, sync_tasks: int, tmp_path: Path
) -> None:
    ids = await asyncio.to_thread(run_app, make_backend, shutdown, tmp_path / "started", sync_tasks=sync_tasks)
    # given back at once, not left running until their leases expire; a restart is not an attempt
    assert await states(make_backend, ids) == [(TaskStatus.QUEUED, 0, 0)] * len(ids)


@pytest.mark.asyncio
async def test_run_cancelled_twice_stops_at_once_and_gives_its_task_back(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    ids = await asyncio.to_thread(run_app, make_backend, returns_at_once, tmp_path / "started", via_run=True)
    assert await states(make_backend, ids) == [(TaskStatus.QUEUED, 0, 0)]


async def gives_up_as_the_stop_gives_back(worker: Worker) -> None:
    """The app gives up on stop() while it gives back the running task, and asyncio.run ends.

    The stop's one lease renewal before the give-back (it learns the cancel
    requests) never answers here: the loop's end cancels it. The task was
    marked given back by then, so the teardown skipped it, and it ran again
    only once its lease expired.
    """
    asked = asyncio.Event()
    renew = worker.backend.heartbeat

    async def heartbeat(leases: Any, lease_seconds: float) -> Any:
        if asyncio.current_task() is worker._stop_task:
            asked.set()
            await asyncio.Event().wait()  # until the loop's end cancels it
        return await renew(leases, lease_seconds)

    worker.backend.heartbeat = heartbeat  # type: ignore[method-assign]
    stopping = asyncio.create_task(worker.stop(timeout=0))  # the running task is given back at once
    await asked.wait()
    stopping.cancel()


@pytest.mark.asyncio
async def test_a_loop_ending_while_the_stop_gives_back_its_running_task_still_gives_it_back(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    ids = await asyncio.to_thread(run_app, make_backend, gives_up_as_the_stop_gives_back, tmp_path / "started")
    assert await states(make_backend, ids) == [(TaskStatus.QUEUED, 0, 0)]


def marks_it_started(path: str) -> None:
    """A task with a side effect at its start: it must never start once its worker is being given back."""
    with open(path, "a") as marker:
        marker.write("started\n")


def run_app_with_a_task_waiting(make_backend: MakeBackend, marker: Path) -> list[str]:
    async def main() -> list[str]:
        async with TaskQueue(make_backend()) as queue:
            worker = Worker(queue.backend, max_concurrency=1, prefetch=4, lease_timeout=60.0)
            started = marker.with_name("running-started")
            running = await queue.enqueue(tasks.async_record, str(started), 30.0)
            waiting = await queue.enqueue(marks_it_started, str(marker))
            await worker.start()

            async def both_reserved() -> bool:
                found = [await queue.backend.get_task(task_id) for task_id in (running, waiting)]
                claimed = all(t is not None and t.status == TaskStatus.RUNNING for t in found)
                # and the first started: the claim's answer reached the worker (it holds both)
                return claimed and await asyncio.to_thread(started.exists)

            await wait_until(both_reserved, timeout=15)  # one runs, the other waits for the only slot
            return [running, waiting]  # and the application ends without stopping the worker

    return asyncio.run(main())


@pytest.mark.asyncio
async def test_a_task_waiting_for_a_slot_never_starts_while_the_loop_ends(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    """The slot freed by the cancelled task started the waiting one, which then ran again elsewhere."""
    marker = tmp_path / "started"
    ids = await asyncio.to_thread(run_app_with_a_task_waiting, make_backend, marker)
    assert not marker.exists(), "the waiting task was started during the teardown"
    assert await states(make_backend, ids) == [(TaskStatus.QUEUED, 0, 0)] * 2


def run_app_cancelling_every_task(make_backend: MakeBackend, sync_tasks: int) -> list[str]:
    """A framework's shutdown: cancel every other task, wait for them, then leave (asyncio.run ends after).

    The queue is left open, as an application that relies on the process's
    end does; the worker runs under ``run()``, whose cancellation starts a stop.
    """

    async def main() -> list[str]:
        queue = TaskQueue(make_backend())
        timed = queue.with_options(timeout=30)  # each in a task of its own, waiting for its thread
        ids = await timed.enqueue_many([(tasks.sync_sleepy, (20.0,))] * sync_tasks)
        worker = Worker(queue.backend, max_concurrency=4, lease_timeout=60.0)
        runner = asyncio.create_task(worker.run(handle_signals=False))

        async def slots_busy() -> bool:
            found = [await queue.backend.get_task(task_id) for task_id in ids]
            return sum(t is not None and t.status == TaskStatus.RUNNING for t in found) >= 4

        await wait_until(slots_busy, timeout=15)
        await asyncio.sleep(0.3)  # the calls have begun in their threads
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        assert runner.done()
        return ids

    return asyncio.run(main())


@pytest.mark.asyncio
async def test_a_framework_cancelling_every_task_gets_the_running_tasks_given_back(make_backend: MakeBackend) -> None:
    """The stop's give-back was cut short by the second round of cancellations and the tasks stayed running."""
    ids = await asyncio.to_thread(run_app_cancelling_every_task, make_backend, 6)  # 4 run, 2 wait
    assert await states(make_backend, ids) == [(TaskStatus.QUEUED, 0, 0)] * 6


_NEVER_STOPPED = """
import asyncio, sys
from sitq import TaskQueue, Worker

def inc(x):
    return x + 1

queue = TaskQueue("sqlite:///" + sys.argv[1])

async def main(k):
    worker = Worker(queue.backend)
    await worker.start()  # and never stopped: asyncio.run ends it
    result = await queue.get_result(await queue.enqueue(inc, k), timeout=10)
    assert queue.deserialize_result(result) == k + 1

for k in range(3):
    asyncio.run(main(k))
print("returned", flush=True)
"""


def test_asyncio_run_returns_when_a_worker_was_never_stopped(tmp_path: Path) -> None:
    """The exchange loop swallowed asyncio.run's one cancel when it landed in _idle's clean-up: a hang, 4 runs in 6."""
    import subprocess
    import sys

    for round_ in range(4):
        done = subprocess.run(
            [sys.executable, "-c", _NEVER_STOPPED, str(tmp_path / f"run{round_}.db")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "returned" in done.stdout, done.stderr[-2000:]


@pytest.mark.asyncio
async def test_a_cancel_landing_as_tasks_are_reserved_still_ends_the_heartbeat(tmp_path: Path) -> None:
    """Python 3.11's ``asyncio.wait_for`` returned instead of raising when the cancel and the awaited
    wake-up came in one loop step; the heartbeat went on, and ``asyncio.run`` waited for it forever."""
    async with TaskQueue(SQLiteBackend(tmp_path / "app.db")) as queue:
        worker = Worker(queue.backend, lease_timeout=60.0)
        await worker.start()
        try:
            heartbeat = next(t for t in asyncio.all_tasks() if t.get_name().startswith("sitq-heartbeat"))
            for _ in range(5):
                await asyncio.sleep(0)  # let it reach its wait for reserved tasks (nothing is held)
            worker._reserved_more.set()  # tasks reserved ...
            heartbeat.cancel()  # ... in the very step the loop's end cancels every task
            done, _ = await asyncio.wait({heartbeat}, timeout=5)
            assert done, "the heartbeat swallowed its cancellation"
        finally:
            await worker.stop()


def test_library_code_never_waits_with_asyncio_wait_for() -> None:
    """``asyncio.wait_for`` swallows a cancel in Python 3.11 (above); ``asyncio.timeout`` does not."""
    root = Path(__file__).resolve().parents[2]
    sources = [
        path
        for package in ("sitq", "sitq_core/src", "sitq_sqlite/src", "sitq_postgres/src")
        for path in (root / package).rglob("*.py")
        if "testing" not in path.parts
    ]
    assert sources
    offenders = [str(path.relative_to(root)) for path in sources if "asyncio.wait_for(" in path.read_text()]
    assert offenders == []


class AnswerLost(SQLiteBackend):
    """Once ``lose`` is set, the next report commits but its answer never comes back (the loop ends first)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lose = asyncio.Event()
        self.committed = asyncio.Event()

    async def _lost_answer(self) -> None:
        self.lose.clear()
        self.committed.set()
        await asyncio.Event().wait()  # until the loop's end cancels it

    async def finish_many(self, outcomes: Any) -> list[bool]:
        accepted = await super().finish_many(outcomes)
        if self.lose.is_set() and outcomes:
            await self._lost_answer()
        return accepted

    async def finish_and_reserve(self, outcomes: Any, **options: Any) -> Any:
        answer = await super().finish_and_reserve(outcomes, **options)
        if self.lose.is_set() and outcomes:
            await self._lost_answer()
        return answer


def test_an_outcome_stored_by_a_report_whose_answer_the_loop_end_cut_off_is_not_called_reclaimed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The teardown reported it again, the store refused it (already final), and the worker logged
    "reclaimed by another worker (lease lost); outcome discarded" for an outcome it had stored itself."""
    caplog.set_level("DEBUG", logger="sitq.worker")
    store = AnswerLost(tmp_path / "app.db")

    async def main() -> str:
        async with TaskQueue(store) as queue:
            worker = Worker(store, lease_timeout=60.0)
            await worker.start()
            store.lose.set()
            task_id = await queue.enqueue(tasks.add, 1, 2)
            await asyncio.wait_for(store.committed.wait(), 15)
            return task_id  # and the application ends, the worker's report still waiting for its answer

    task_id = asyncio.run(main())

    async def stored() -> Any:
        async with TaskQueue(SQLiteBackend(tmp_path / "app.db")) as queue:
            result = await queue.get_result(task_id, timeout=0)
            return None if result is None else (result.status, queue.deserialize_result(result))

    assert asyncio.run(stored()) == ("success", 3)
    assert "reclaimed by another worker" not in caplog.text, caplog.text
    assert f"task {task_id}: its outcome was already stored" in caplog.text, caplog.text
