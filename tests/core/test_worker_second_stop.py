"""A second stop request (a second SIGINT/SIGTERM, a second ``stop()``) while the first drains.

The running task must be given back before the stop ends: another worker
takes it at once, under the same attempt number, and no lease renewal lands
after the give-back. The second request used to give it back from a task of
its own, which the stop did not wait for: the stop closed the store and
ended first, so the task stayed ``running`` with its lease just renewed, and
ran again only when that lease expired (3 of 10 ``sitq worker`` runs; three
such restarts ended a healthy task ``failed``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

from sitq import TaskQueue, Worker
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

# makes the second request and returns once the stop has ended; what it leaves going is awaited at the end
SecondRequest = Callable[[Worker, "asyncio.Task[None]"], Awaitable["asyncio.Task[None] | None"]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store's URL: the worker opens (and closes) its own backend on it, as ``sitq worker`` does."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    require_postgres()
    schema = f"second_stop_{uuid.uuid4().hex[:8]}"
    yield f"{DSN}?schema={schema}"
    drop_schema(schema)


async def second_signal(worker: Worker, runner: asyncio.Task[None]) -> None:
    """``run()`` drains on a first SIGINT and stops at once on a second one (``sitq worker``)."""
    os.kill(os.getpid(), signal.SIGINT)
    await wait_until(lambda: asyncio.sleep(0, _draining(worker)))
    os.kill(os.getpid(), signal.SIGINT)
    await runner
    return None


async def second_stop_call(worker: Worker, runner: asyncio.Task[None]) -> asyncio.Task[None]:
    """A second ``stop()`` whose timeout has passed stops at once, as a second signal does."""
    first = asyncio.create_task(worker.stop(timeout=30))
    await wait_until(lambda: asyncio.sleep(0, _draining(worker)))
    second = asyncio.create_task(worker.stop(timeout=0))
    await first  # returns when the stop has ended (the second call may still be on its way out)
    await runner
    return second


def _draining(worker: Worker) -> bool:
    return worker._stopping is not None and worker._stopping.is_set()


def hold_heartbeats_made_outside_the_stop(worker: Worker, held: asyncio.Event) -> asyncio.Event:
    """From the returned event's setting on, hold every lease renewal that the stop is not waiting for.

    Each is held until ``held`` is set (after the test has looked at the
    store): a give-back started beside the stop, not awaited by it, then
    surely comes after the stop's end, as it did now and then on its own.
    The stop's own calls pass (holding them would only wait out its budget).
    """
    armed = asyncio.Event()
    renew = worker.backend.heartbeat

    async def heartbeat(leases: Any, lease_seconds: float) -> Any:
        if armed.is_set() and asyncio.current_task() is not worker._stop_task:
            await held.wait()
        return await renew(leases, lease_seconds)

    worker.backend.heartbeat = heartbeat  # type: ignore[method-assign]
    return armed


@pytest.mark.asyncio
@pytest.mark.parametrize("second_request", [second_signal, second_stop_call], ids=lambda f: f.__name__)
async def test_a_second_stop_request_gives_the_running_task_back_before_the_stop_ends(
    store_url: str, second_request: SecondRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sitq.worker")
    marker = tmp_path / "started"
    async with TaskQueue(store_url) as queue:
        task_id = await queue.enqueue(tasks.async_record, str(marker), 30.0)
        worker = Worker(store_url, lease_timeout=60.0, shutdown_timeout=30.0)
        runner = asyncio.create_task(worker.run())
        await wait_until(lambda: asyncio.to_thread(marker.exists), timeout=15)
        let_go = asyncio.Event()
        hold_heartbeats_made_outside_the_stop(worker, let_go).set()
        leftover: asyncio.Task[None] | None = None
        try:
            leftover = await second_request(worker, runner)
            # the stop has ended: the task is back in the queue, not running on a renewed lease
            task = await queue.get_task(task_id)
            assert task is not None
            assert (task.status, task.attempts, task.lease_expiries) == (TaskStatus.QUEUED, 0, 0)
            taken = await queue.backend.reserve(worker_id="another", limit=1, lease_seconds=60.0)
            assert [(t.id, t.task.attempts) for t in taken] == [(task_id, 1)]  # at once, the same attempt
        finally:
            let_go.set()
            if leftover is not None:
                await leftover
    messages = [r.getMessage() for r in caplog.records if r.name == "sitq.worker"]
    releasing = next(i for i, m in enumerate(messages) if "still running at shutdown; releasing them" in m)
    stopped = next(i for i, m in enumerate(messages) if " stopped (processed=" in m)
    assert releasing < stopped, messages  # told as it happens: the give-back belongs to the stop
