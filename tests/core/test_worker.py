"""Worker behaviour against a real SQLite file: execution, failures, retries, timeouts, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq import BackendError, ConnectionError, SQLiteBackend, TaskQueue, ValidationError, Worker, hookimpl
from sitq_core.models import TaskStatus
from sitq_core.plugins import get_plugin_manager

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "w.db")) as q:
        yield q


async def run_one(queue: TaskQueue, func: Any, *args: Any, worker: Worker | None = None, **kwargs: Any) -> Any:
    own = worker is None
    worker = worker or Worker(queue.backend, max_concurrency=2)
    if own:
        await worker.start()
    try:
        result = await queue.get_result(await queue.enqueue(func, *args, **kwargs), timeout=15)
    finally:
        if own:
            await worker.stop()
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 1001}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"lease_timeout": 0}, "lease_timeout"),
        ({"lease_timeout": float("inf")}, "lease_timeout"),
        ({"lease_timeout": 1e12}, "lease_timeout"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"prefetch": -1}, "prefetch"),
        ({"batch_window": -0.001}, "batch_window"),
        ({"batch_window": 2}, "batch_window"),
        ({"batch_window": "5ms"}, "batch_window"),
        ({"batch_window": float("nan")}, "batch_window"),
        ({"queues": []}, "queues"),
        ({"queues": 5}, "queues"),
        ({"queues": {"a": 1}}, "queues"),
        ({"worker_id": 5}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "web-1\x00"}, "worker_id"),  # no store can hold it: the worker would never run a task
        ({"worker_id": "web-\ud800"}, "worker_id"),
    ],
)
def test_worker_validates_arguments(tmp_path: Path, kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValidationError) as info:
        Worker(SQLiteBackend(tmp_path / "v.db"), **kwargs)
    assert info.value.parameter == parameter
    with pytest.raises(ValidationError):
        Worker(None)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_sync_async_and_async_callable_objects(queue: TaskQueue) -> None:
    worker = Worker(queue.backend, max_concurrency=3)
    await worker.start()
    sync_result = await run_one(queue, tasks.add, 1, 2, worker=worker)
    async_result = await run_one(queue, tasks.async_add, 3, b=4, worker=worker)
    object_result = await run_one(queue, tasks.AsyncCallable(), 21, worker=worker)
    lambda_result = await run_one(queue, lambda x: x + 1, 9, worker=worker)
    await worker.stop()
    assert [queue.deserialize_result(r) for r in (sync_result, async_result, object_result, lambda_result)] == [
        3,
        7,
        42,
        10,
    ]


@pytest.mark.asyncio
async def test_start_as_background_task(queue: TaskQueue) -> None:
    worker = Worker(queue.backend)
    starter = asyncio.create_task(worker.start())
    result = await queue.get_result(await queue.enqueue(tasks.add, 5), timeout=10)
    await starter
    await worker.stop()
    assert result is not None and result.status == "success"


@pytest.mark.asyncio
@pytest.mark.parametrize("entry", ["start", "run"])
async def test_a_stop_while_start_connects_wins(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "racing.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
    backend = SQLiteBackend(path)  # not connected yet: start() has to wait for connect()
    worker = Worker(backend, poll_interval=0.05)
    starter = asyncio.create_task(worker.start() if entry == "start" else worker.run(handle_signals=False))
    await asyncio.sleep(0)  # start() is now inside backend.connect()
    await worker.stop()
    await asyncio.wait_for(starter, 10)
    assert not worker.running
    await worker.stop()  # a second stop is harmless
    task = await backend.get_task(task_id)
    assert task is not None and task.status == "queued"  # nothing was reserved
    await backend.close()


@pytest.mark.asyncio
async def test_stop_right_after_create_task_start_wins(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "quick.db")
    worker = Worker(backend, poll_interval=0.05)
    starter = asyncio.create_task(worker.start())  # not begun yet when stop() is called
    await worker.stop()
    await asyncio.wait_for(starter, 10)
    assert not worker.running
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sitq-")]
    await backend.close()


@pytest.mark.asyncio
async def test_concurrent_starts_start_one_worker(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "twice.db")
    worker = Worker(backend, poll_interval=0.05)
    await asyncio.gather(worker.start(), worker.start())
    loops = [t for t in asyncio.all_tasks() if t.get_name().startswith("sitq-exchange")]
    assert len(loops) == 1
    await worker.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sitq-")]
    await backend.close()


@pytest.mark.asyncio
async def test_a_heartbeat_answer_for_an_ended_attempt_leaves_the_next_attempt_alone(queue: TaskQueue) -> None:
    # Each retry's outcome and the next attempt's claim share one commit; heartbeats (every 10 ms) that
    # were sent for the attempt just ended come back "lost" and must not end the new attempt's lease.
    task_id = await queue.with_options(max_retries=150, retry_backoff=0.0).enqueue(tasks.async_boom, "kaput")
    worker = Worker(queue.backend, max_concurrency=1, poll_interval=0.05, lease_timeout=0.03)
    await worker.start()
    result = await queue.get_result(task_id, timeout=60)
    await worker.stop()
    task = await queue.get_task(task_id)
    assert result is not None and (result.status, result.error, result.attempts) == ("failed", "kaput", 151)
    assert task is not None and task.lease_expiries == 0


@pytest.mark.asyncio
async def test_failure_recorded_and_worker_goes_on(queue: TaskQueue) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    failed = await run_one(queue, tasks.boom, "kaput", worker=worker)
    after = await run_one(queue, tasks.add, 1, worker=worker)
    await worker.stop()
    assert failed.status == "failed" and failed.error == "kaput"
    assert "ValueError: kaput" in failed.traceback and "def boom" not in failed.error
    assert after.status == "success"


@pytest.mark.asyncio
async def test_stop_drains_and_keeps_a_borrowed_backend_open(queue: TaskQueue, tmp_path: Path) -> None:
    worker = Worker(queue.backend, max_concurrency=2)
    await worker.start()
    log = tmp_path / "started.log"
    ids = [await queue.enqueue(tasks.record, str(log), n, 0.2) for n in range(2)]
    # started, not merely reserved: a task still loading when stop() comes is given back, not run
    await wait_until(lambda: asyncio.sleep(0, log.exists() and log.read_text().count("start") == 2))
    await worker.stop()
    for task_id in ids:
        result = await queue.get_result(task_id, timeout=0)
        assert result is not None and result.status == "success"
    assert (await queue.counts())["success"] == 2  # the backend is still usable


@pytest.mark.asyncio
async def test_a_stop_the_caller_gave_up_on_goes_on_and_a_later_stop_waits_for_it(
    queue: TaskQueue, tmp_path: Path
) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    log = tmp_path / "record.log"
    task_id = await queue.enqueue(tasks.record, str(log), 1, 0.5)
    await wait_until(lambda: asyncio.sleep(0, log.exists()))  # started, not merely reserved
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.stop(), 0.05)  # a lifespan timeout, a cancelled shutdown
    await asyncio.wait_for(worker.stop(), 10)  # before: it waited forever for the first stop's end
    assert not worker.running
    result = await queue.get_result(task_id, timeout=0)
    assert result is not None and result.status == "success", "the stop still drained the running task"


@pytest.mark.asyncio
@pytest.mark.parametrize("stopper", [tasks.stop_own_worker, tasks.stop_own_worker_from_thread])
async def test_a_task_awaiting_its_own_workers_stop_ends_and_the_worker_stops(
    queue: TaskQueue, stopper: Callable[[], Any]
) -> None:
    """stop() waited for the task that called it: both hung for good, the worker reserved nothing, said nothing."""
    worker = Worker(queue.backend, max_concurrency=2)
    tasks.STOPPABLE[:] = [worker, asyncio.get_running_loop()]
    await worker.start()
    try:
        task_id = await queue.enqueue(stopper)
        result = await queue.get_result(task_id, timeout=10)
        assert result is not None and result.status == "success"
        assert queue.deserialize_result(result) == "stop asked"

        async def stopped() -> bool:
            return not worker.running

        await wait_until(stopped, timeout=10)
        later = await queue.enqueue(tasks.add, 1, 2)
        assert await queue.get_result(later, timeout=0.3) is None  # a stopped worker runs nothing more
        await asyncio.wait_for(worker.stop(), 5)  # a later stop() returns at once
    finally:
        tasks.STOPPABLE.clear()
        await asyncio.wait_for(worker.stop(), 10)


@pytest.mark.parametrize("timeout", ["x", -1, float("nan"), True])
@pytest.mark.asyncio
async def test_stop_refuses_a_bad_timeout_and_keeps_working(queue: TaskQueue, timeout: Any) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    with pytest.raises(ValidationError) as caught:
        await worker.stop(timeout=timeout)
    assert caught.value.parameter == "timeout"
    task_id = await queue.enqueue(tasks.add, 1, 2)
    result = await queue.get_result(task_id, timeout=10)
    assert result is not None and result.status == "success", "the worker goes on after the refused stop"
    await asyncio.wait_for(worker.stop(timeout=0), 10)
    assert not worker.running


async def _running(queue: TaskQueue, n: int) -> bool:
    return (await queue.counts())["running"] >= n


@pytest.mark.asyncio
async def test_retries_then_success(queue: TaskQueue, tmp_path: Path) -> None:
    view = queue.with_options(max_retries=3, retry_backoff=0.01)
    worker = Worker(queue.backend)
    await worker.start()
    task_id = await view.enqueue(tasks.flaky, str(tmp_path / "count"), 2)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "success" and result.attempts == 3
    assert queue.deserialize_result(result) == "ok after 3"


@pytest.mark.asyncio
async def test_retries_exhausted_ends_failed_with_traceback(queue: TaskQueue, tmp_path: Path) -> None:
    view = queue.with_options(max_retries=2, retry_backoff=0.01)
    worker = Worker(queue.backend)
    await worker.start()
    task_id = await view.enqueue(tasks.flaky, str(tmp_path / "count"), 100)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "failed" and result.attempts == 3
    assert result.error == "flaky failure 3" and "RuntimeError: flaky failure 3" in (result.traceback or "")


@pytest.mark.asyncio
async def test_a_lease_expiry_uses_up_a_retry_and_the_backoff_follows_the_attempt(queue: TaskQueue) -> None:
    """As workers.md says: max_retries and the backoff count attempts, and an expired lease is one of them."""
    task_id = await queue.with_options(max_retries=2, retry_backoff=1000).enqueue(tasks.boom, "after a crash")
    # the first attempt's worker dies: its lease (a millisecond here) is never renewed
    [first] = await queue.backend.reserve(worker_id="dead", limit=1, lease_seconds=0.001)
    assert first.id == task_id and first.attempt == 1
    worker = Worker(queue.backend)
    await worker.start()
    try:

        async def retried() -> bool:
            task = await queue.get_task(task_id)
            return task is not None and task.status == TaskStatus.QUEUED and task.attempts == 2

        await wait_until(retried)
    finally:
        await worker.stop()
    task = await queue.get_task(task_id)
    assert task is not None and task.lease_expiries == 1 and task.error == "after a crash"
    # the retry after attempt 2 waits retry_backoff * 2**(2-1) = 2000 s, not the 1000 s of a "first retry"
    assert task.eta - queue.backend.now() > timedelta(seconds=1500)


@pytest.mark.asyncio
async def test_exception_type_can_opt_out_of_retries(queue: TaskQueue) -> None:
    view = queue.with_options(max_retries=5, retry_backoff=0.01)
    worker = Worker(queue.backend)
    await worker.start()
    result = await queue.get_result(await view.enqueue(tasks.permanent), timeout=10)
    await worker.stop()
    assert result is not None and result.status == "failed" and result.attempts == 1


@pytest.mark.asyncio
async def test_async_timeout_cancels_the_task(queue: TaskQueue) -> None:
    result = await run_one_with(queue.with_options(timeout=0.1), queue, tasks.sleepy, 30)
    assert result.status == "failed" and "timed out after 0.1 s" in (result.error or "")
    # the traceback's last line says so too (it was a bare "TimeoutError" from inside asyncio)
    assert result.traceback.splitlines()[-1] == "TimeoutError: task timed out after 0.1 s"


@pytest.mark.asyncio
async def test_sync_timeout_is_reported(queue: TaskQueue) -> None:
    result = await run_one_with(queue.with_options(timeout=0.1), queue, tasks.sync_sleepy, 0.5)
    assert result.status == "failed" and "timed out" in (result.error or "")
    assert result.traceback.splitlines()[-1] == "TimeoutError: task timed out after 0.1 s"


async def run_one_with(view: Any, queue: TaskQueue, func: Any, *args: Any) -> Any:
    worker = Worker(queue.backend)
    await worker.start()
    result = await queue.get_result(await view.enqueue(func, *args), timeout=15)
    await worker.stop()
    assert result is not None
    return result


@pytest.mark.asyncio
async def test_an_async_task_that_swallows_its_timeout_still_times_out(queue: TaskQueue) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    task_id = await queue.with_options(timeout=0.2).enqueue(tasks.stubborn, 0.1)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and (result.status, result.error) == ("failed", "task timed out after 0.2 s")


@pytest.mark.asyncio
async def test_an_async_task_that_swallows_its_cancel_still_ends_cancelled(queue: TaskQueue) -> None:
    worker = Worker(queue.backend, lease_timeout=0.3)  # cancel requests arrive with renewals, every 0.1 s
    await worker.start()
    task_id = await queue.enqueue(tasks.stubborn, 0.1)
    await wait_until(lambda: _running(queue, 1))
    assert await queue.cancel(task_id)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "cancelled"


@pytest.mark.asyncio
async def test_cancel_a_running_async_task(queue: TaskQueue) -> None:
    worker = Worker(queue.backend, lease_timeout=0.3)
    await worker.start()
    task_id = await queue.enqueue(tasks.sleepy, 30)
    await wait_until(lambda: _running(queue, 1))
    assert await queue.cancel(task_id) is True
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "cancelled"


@pytest.mark.asyncio
async def test_cancel_a_running_coroutine_that_a_sync_wrapper_returned(queue: TaskQueue) -> None:
    """A naive sync decorator over ``async def``: the worker awaits its coroutine on the loop, yet a cancel
    treated it as an uninterruptible thread (decided by the wrapper's signature) and it ran to its end."""
    worker = Worker(queue.backend, max_concurrency=2, lease_timeout=0.3)
    await worker.start()
    try:
        task_id = await queue.enqueue(tasks.naive_sleepy, 6)
        await wait_until(lambda: _running(queue, 1))
        await asyncio.sleep(0.1)  # its thread has handed back the coroutine: it is awaited on the loop
        asked = time.monotonic()
        assert await queue.cancel(task_id) is True
        result = await queue.get_result(task_id, timeout=10)
        took = time.monotonic() - asked
    finally:
        await worker.stop()
    assert result is not None and result.status == "cancelled"
    assert took < 3, f"cancelled only after {took:.2f} s: it ran to its end"


@pytest.mark.asyncio
async def test_a_coroutine_a_sync_wrapper_returned_times_out_as_an_async_task(queue: TaskQueue) -> None:
    """The timeout path already awaited it as async: the cancel path must agree (above)."""
    began = time.monotonic()
    result = await run_one_with(queue.with_options(timeout=0.3), queue, tasks.naive_sleepy, 6)
    assert result.status == "failed" and result.error == "task timed out after 0.3 s"
    assert time.monotonic() - began < 3


@pytest.mark.asyncio
async def test_a_cancel_during_a_sync_call_drops_the_coroutine_it_returns(queue: TaskQueue) -> None:
    """The thread runs to its end (it cannot be interrupted); the coroutine it hands back is not run then."""
    tasks.GATE.clear()
    tasks.GATE_REACHED.clear()
    worker = Worker(queue.backend, max_concurrency=2, lease_timeout=0.3)  # heartbeats every 0.1 s
    await worker.start()
    try:
        task_id = await queue.enqueue(tasks.gate_then_sleepy, 6)
        await wait_until(lambda: asyncio.sleep(0, tasks.GATE_REACHED.is_set()))
        assert await queue.cancel(task_id) is True
        await asyncio.sleep(0.5)  # several heartbeats: the worker knows of the request while the thread runs
        assert await queue.get_result(task_id, timeout=0) is None, "a thread cannot be interrupted"
        tasks.GATE.set()
        opened = time.monotonic()
        result = await queue.get_result(task_id, timeout=10)
        took = time.monotonic() - opened
    finally:
        tasks.GATE.set()
        await worker.stop()
        tasks.GATE.clear()
    assert result is not None and result.status == "cancelled"
    assert took < 3, f"its coroutine ran for {took:.2f} s after the cancel"


@pytest.mark.asyncio
async def test_cancelling_a_running_task_takes_effect_long_before_the_next_lease_renewal(queue: TaskQueue) -> None:
    """A cancel reached a running task only with the next renewal: ten seconds at the default lease."""
    result = await _cancel_a_long_task(queue)
    assert result is not None and result.status == "cancelled"


async def _cancel_a_long_task(queue: TaskQueue, before_cancel: Callable[[str], Awaitable[None]] | None = None) -> Any:
    """Cancel a 60 s task once it runs on a worker whose leases renew every 30 s; its result (15 s at most)."""
    worker = Worker(queue.backend, lease_timeout=90.0)
    await worker.start()
    try:
        task_id = await queue.enqueue(tasks.sleepy, 60)
        await wait_until(lambda: _running(queue, 1))
        if before_cancel is not None:
            await before_cancel(task_id)
        assert await queue.cancel(task_id) is True
        return await queue.get_result(task_id, timeout=15)
    finally:
        await worker.stop()


@pytest.mark.asyncio
async def test_a_task_cancelled_while_it_ran_is_not_retried_when_that_attempt_fails(
    queue: TaskQueue, tmp_path: Path
) -> None:
    """Its retries ran anyway: the cancel stayed recorded on a queued task that every reserve handed out."""
    log = tmp_path / "starts.log"
    tasks.GATE.clear()
    worker = Worker(queue.backend)
    await worker.start()
    try:
        task_id = await queue.with_options(max_retries=3, retry_backoff=0).enqueue(
            tasks.record_then_fail_at_gate, str(log)
        )
        await wait_until(lambda: asyncio.sleep(0, log.exists()))
        assert await queue.cancel(task_id) is True
        tasks.GATE.set()  # the attempt fails at once, before the worker's next cancel check
        result = await queue.get_result(task_id, timeout=10)
    finally:
        tasks.GATE.set()
        await worker.stop()
        tasks.GATE.clear()
    assert result is not None and result.status == "cancelled", result
    assert log.read_text().count("start") == 1, "no attempt may start after the cancel"


@pytest.mark.asyncio
async def test_cancel_checks_between_renewals_read_and_do_not_renew_the_lease(queue: TaskQueue) -> None:
    """Each check renewed every lease held: a write per task twice a second (index churn on PostgreSQL)."""
    path = queue.backend.path  # type: ignore[attr-defined]

    async def lease_untouched(task_id: str) -> None:
        def due() -> int:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return int(db.execute("SELECT due FROM tasks WHERE id = ?", (task_id,)).fetchone()[0])

        first = due()
        await asyncio.sleep(1.6)  # the scenario itself: three cancel checks' time passes
        assert due() == first, "a cancel check between renewals must not write the lease"

    result = await _cancel_a_long_task(queue, lease_untouched)
    assert result is not None and result.status == "cancelled"


@pytest.mark.asyncio
async def test_corrupted_payload_fails_that_task_only(queue: TaskQueue) -> None:
    import sqlite3

    bad = await queue.enqueue(tasks.add, 1)
    path = queue.backend.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE tasks SET payload = ? WHERE id = ?", (b"\x80garbage", bad))
    good = await queue.enqueue(tasks.add, 2)
    worker = Worker(queue.backend)
    await worker.start()
    bad_result = await queue.get_result(bad, timeout=10)
    good_result = await queue.get_result(good, timeout=10)
    await worker.stop()
    assert bad_result is not None and bad_result.status == "failed"
    assert "cannot load task" in (bad_result.error or "") and "deserialise" in (bad_result.error or "")
    assert good_result is not None and good_result.status == "success"


@pytest.mark.asyncio
async def test_unimportable_function_fails_clearly(tmp_path: Path) -> None:
    from sitq import MsgpackSerializer

    backend = SQLiteBackend(tmp_path / "m.db")
    async with backend:
        queue = TaskQueue(backend, serializer="msgpack")
        task_id = await queue.enqueue(tasks.add, 1)
        serializer = MsgpackSerializer()
        payload = serializer.dumps(["vanished_module_xyz:add", [1], {}])
        import sqlite3

        with sqlite3.connect(backend.path) as db:
            db.execute("UPDATE tasks SET payload = ? WHERE id = ?", (payload, task_id))
        worker = Worker(backend, serializer="msgpack")
        await worker.start()
        result = await queue.get_result(task_id, timeout=10)
        follow = await queue.get_result(await queue.enqueue(tasks.add, 2), timeout=10)
        await worker.stop()
    assert result is not None and result.status == "failed"
    assert "cannot import task function 'vanished_module_xyz:add'" in (result.error or "")
    assert follow is not None and follow.status == "success"


@pytest.mark.asyncio
async def test_msgpack_worker_refuses_pickled_tasks(queue: TaskQueue) -> None:
    worker = Worker(queue.backend, serializer="msgpack")
    await worker.start()
    result = await queue.get_result(await queue.enqueue(tasks.add, 1), timeout=10)
    await worker.stop()
    assert result is not None and result.status == "failed"
    assert "accepts only 'msgpack'" in (result.error or "")


@pytest.mark.asyncio
async def test_named_queues(queue: TaskQueue) -> None:
    other = await queue.with_options(queue_name="other").enqueue(tasks.add, 1)
    mine = await queue.with_options(queue_name="mine").enqueue(tasks.add, 2)
    worker = Worker(queue.backend, queues=["mine"])
    await worker.start()
    assert await queue.get_result(mine, timeout=10) is not None
    await worker.stop()
    task = await queue.get_task(other)
    assert task is not None and task.status == TaskStatus.QUEUED


@pytest.mark.asyncio
async def test_a_comma_in_a_queues_string_is_refused_not_served_as_one_name(queue: TaskQueue) -> None:
    """Worker(queues="mail,reports") served one queue named 'mail,reports' and never picked up work, unsaid."""
    mail = await queue.with_options(queue_name="mail").enqueue(tasks.add, 1)
    with pytest.raises(ValidationError) as info:
        Worker(queue.backend, queues="mail,reports")
    assert info.value.parameter == "queues" and info.value.value == "mail,reports"
    assert "['mail', 'reports']" in str(info.value) and "['mail,reports']" in str(info.value)
    with pytest.raises(ValidationError) as empty:
        Worker(queue.backend, queues="")
    assert "got ''" in str(empty.value)  # what was passed, not the list it was turned into
    worker = Worker(queue.backend, queues=["mail,reports", "mail"])  # a list: each name verbatim
    await worker.start()
    assert await queue.get_result(mail, timeout=10) is not None
    await worker.stop()


@pytest.mark.asyncio
async def test_a_callable_whose_hash_raises_runs_and_the_worker_goes_on(queue: TaskQueue) -> None:
    """The worker's per-function memo let a RuntimeError from __hash__ kill its loading task: the task was held
    (its lease renewed) and never ran, and nothing said why but 'Task exception was never retrieved'."""
    worker = Worker(queue.backend)
    await worker.start()
    try:
        for func, expected in ((tasks.HashRaises(), 8), (tasks.add, 4)):
            task_id = await queue.enqueue(func, 4)
            result = await queue.get_result(task_id, timeout=10)
            assert result is not None, func
            assert (result.status, queue.deserialize_result(result)) == ("success", expected), result.error
    finally:
        await worker.stop()


@pytest.mark.asyncio
async def test_a_timeout_covers_the_sync_part_and_the_coroutine_it_returns_together(queue: TaskQueue) -> None:
    """The coroutine a sync callable handed back got the whole timeout again after its thread part: 0.7 s in the
    thread and 0.7 s awaited passed a 1 s timeout (workers.md: the timeout counts from when the thread starts)."""
    worker = Worker(queue.backend)
    await worker.start()
    try:
        over = await queue.with_options(timeout=1.0).enqueue(tasks.slow_then_sleepy, 0.7, 0.7)
        within_it = await queue.with_options(timeout=5.0).enqueue(tasks.slow_then_sleepy, 0.1, 0.1)
        late = await queue.get_result(over, timeout=20)
        done = await queue.get_result(within_it, timeout=20)
    finally:
        await worker.stop()
    assert late is not None and late.status == "failed" and "timed out" in (late.error or ""), late
    assert done is not None and done.status == "success", done


@pytest.mark.asyncio
async def test_concurrency_is_bounded(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "log"
    ids = await queue.enqueue_many([(tasks.record, (str(log), n, 0.05)) for n in range(8)])
    worker = Worker(queue.backend, max_concurrency=3)
    await worker.start()
    for task_id in ids:
        assert await queue.get_result(task_id, timeout=15) is not None
    await worker.stop()
    depth = peak = 0
    for line in log.read_text().splitlines():
        depth += 1 if line.startswith("start") else -1
        peak = max(peak, depth)
    assert 1 < peak <= 3


class Recorder:
    """A lifecycle observer plugin that records what it saw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def sitq_task_enqueued(self, task: Any) -> None:
        self.events.append(("enqueued", task.id))

    @hookimpl
    def sitq_task_started(self, task: Any, attempt: int, worker_id: str) -> None:
        self.events.append(("started", attempt))

    @hookimpl
    def sitq_task_succeeded(self, task: Any, result: Any, duration: float) -> None:
        self.events.append(("succeeded", result.status))

    @hookimpl
    def sitq_task_failed(self, task: Any, error: Any, will_retry: bool) -> None:
        self.events.append(("failed", will_retry))

    @hookimpl
    def sitq_task_retried(self, task: Any, attempt: int, eta: Any) -> None:
        self.events.append(("retried", attempt))

    @hookimpl
    def sitq_task_cancelled(self, task: Any, duration: float) -> None:
        self.events.append(("cancelled", task.id))


@pytest.fixture
def recorder() -> Any:
    plugin = Recorder()
    manager = get_plugin_manager()
    manager.register_plugin(plugin, "recorder")
    yield plugin
    manager.unregister_plugin("recorder")


async def _lifecycle(queue: TaskQueue, tmp_path: Path) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    ok = await queue.enqueue(tasks.add, 1)
    await queue.get_result(ok, timeout=10)
    flaky = await queue.with_options(max_retries=1, retry_backoff=0.01).enqueue(tasks.flaky, str(tmp_path / "c"), 5)
    await queue.get_result(flaky, timeout=10)
    await worker.stop()


@pytest.mark.asyncio
async def test_hook_sitq_task_enqueued(queue: TaskQueue, recorder: Recorder) -> None:
    task_id = await queue.enqueue(tasks.add, 1)
    assert ("enqueued", task_id) in recorder.events


@pytest.mark.asyncio
async def test_hook_sitq_task_started(queue: TaskQueue, recorder: Recorder, tmp_path: Path) -> None:
    await _lifecycle(queue, tmp_path)
    assert [e for e in recorder.events if e[0] == "started"] == [("started", 1), ("started", 1), ("started", 2)]


@pytest.mark.asyncio
async def test_hook_sitq_task_succeeded(queue: TaskQueue, recorder: Recorder, tmp_path: Path) -> None:
    await _lifecycle(queue, tmp_path)
    assert [e for e in recorder.events if e[0] == "succeeded"] == [("succeeded", "success")]


@pytest.mark.asyncio
async def test_hook_sitq_task_failed(queue: TaskQueue, recorder: Recorder, tmp_path: Path) -> None:
    await _lifecycle(queue, tmp_path)
    assert [e for e in recorder.events if e[0] == "failed"] == [("failed", True), ("failed", False)]


@pytest.mark.asyncio
async def test_hook_sitq_task_cancelled(queue: TaskQueue, recorder: Recorder) -> None:
    """A cancelled task came to observers as a final failure (a metrics plugin counted it as failed)."""
    worker = Worker(queue.backend)
    await worker.start()
    try:
        task_id = await queue.enqueue(tasks.sleepy, 30.0)
        await wait_until(lambda: _is_running(queue, task_id))
        assert await queue.cancel(task_id)
        result = await queue.get_result(task_id, timeout=10)
    finally:
        await worker.stop()
    assert result is not None and result.status == "cancelled"
    assert ("cancelled", task_id) in recorder.events
    assert [e for e in recorder.events if e[0] == "failed"] == []


async def _is_running(queue: TaskQueue, task_id: str) -> bool:
    task = await queue.get_task(task_id)
    return task is not None and task.status == TaskStatus.RUNNING


@pytest.mark.asyncio
@pytest.mark.parametrize("raised", [asyncio.CancelledError, tasks.Unusual])
async def test_an_observer_raising_a_base_exception_neither_stops_nor_silences_the_worker(
    queue: TaskQueue, raised: type[BaseException]
) -> None:
    """Such an error ended the worker's exchange loop: the process lived on and no task ran again."""

    class Observer:
        @hookimpl
        def sitq_task_succeeded(self, task: Any, result: Any, duration: float) -> None:
            raise raised("observer went wrong")

    manager = get_plugin_manager()
    manager.register_plugin(Observer(), "base-raiser")
    try:
        worker = Worker(queue.backend)
        await worker.start()
        try:
            values = [await queue.get_result(await queue.enqueue(tasks.add, n), timeout=10) for n in range(3)]
        finally:
            await worker.stop()
    finally:
        manager.unregister_plugin("base-raiser")
    assert [r.status if r else None for r in values] == ["success"] * 3


@pytest.mark.asyncio
async def test_observers_see_a_timeout_as_a_timeout_error_that_says_so(queue: TaskQueue) -> None:
    errors: list[Any] = []

    class Observer:
        @hookimpl
        def sitq_task_failed(self, task: Any, error: Any, will_retry: bool) -> None:
            errors.append(error)

    manager = get_plugin_manager()
    manager.register_plugin(Observer(), "timeouts")
    try:
        worker = Worker(queue.backend)
        await worker.start()
        try:
            task_id = await queue.with_options(timeout=0.1).enqueue(tasks.sleepy, 30.0)
            result = await queue.get_result(task_id, timeout=10)
        finally:
            await worker.stop()
    finally:
        manager.unregister_plugin("timeouts")
    assert result is not None and result.status == "failed" and result.error == "task timed out after 0.1 s"
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    assert str(errors[0]) == "task timed out after 0.1 s"


@pytest.mark.asyncio
async def test_hook_sitq_task_retried(queue: TaskQueue, recorder: Recorder, tmp_path: Path) -> None:
    await _lifecycle(queue, tmp_path)
    assert [e for e in recorder.events if e[0] == "retried"] == [("retried", 1)]


@pytest.mark.asyncio
async def test_mixed_batch_reports_every_outcome(queue: TaskQueue) -> None:
    """Consecutive sync tasks share a thread hop; each still gets its own outcome."""
    calls: list[Any] = []
    for n in range(60):
        if n % 7 == 3:
            calls.append((tasks.boom, (f"bad {n}",)))
        elif n % 5 == 0:
            calls.append((tasks.async_add, (n,)))
        else:
            calls.append((tasks.add, (n, 1)))
    ids = await queue.enqueue_many(calls)
    worker = Worker(queue.backend)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=15) for task_id in ids]
    await worker.stop()
    for n, result in enumerate(results):
        assert result is not None
        if n % 7 == 3:
            assert (result.status, result.error) == ("failed", f"bad {n}")
        elif n % 5 == 0:
            assert queue.deserialize_result(result) == n
        else:
            assert queue.deserialize_result(result) == n + 1
    assert worker.processed == 60 and worker.failed == len([n for n in range(60) if n % 7 == 3])


@pytest.mark.asyncio
async def test_unserialisable_return_value_fails_without_retry(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "ret.db"), serializer="msgpack") as queue:
        worker = Worker(queue.backend)
        await worker.start()
        task_id = await queue.with_options(max_retries=3).enqueue(tasks.make_object)
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
    assert result is not None and result.status == "failed" and result.attempts == 1
    assert (result.error or "").startswith("cannot serialise the return value")
    assert "(context:" not in (result.error or "")  # sitq's own error's message, not its str() with context


class _LyingBackend(SQLiteBackend):
    """Answers finish_and_reserve with the wrong number of verdicts: a backend bug."""

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        _accepted, reserved = await super().finish_and_reserve(outcomes, **kwargs)
        return [], reserved


@pytest.mark.asyncio
async def test_internal_error_stops_run_with_a_worker_error(tmp_path: Path) -> None:
    from sitq import WorkerError

    backend = _LyingBackend(tmp_path / "lying.db")
    async with TaskQueue(backend) as queue:
        await queue.enqueue_many([(tasks.add, (n,)) for n in range(5)])
        worker = Worker(backend, shutdown_timeout=5)
        with pytest.raises(WorkerError, match="internal error"):
            await asyncio.wait_for(worker.run(handle_signals=False), timeout=30)
        assert not worker.running


@pytest.mark.asyncio
async def test_stop_timeout_releases_unfinished_tasks_for_others(queue: TaskQueue) -> None:
    worker = Worker(queue.backend, max_concurrency=2)
    await worker.start()
    task_id = await queue.enqueue(tasks.sleepy, 30)
    await wait_until(lambda: _running(queue, 1))
    await worker.stop(timeout=0.1)
    task = await queue.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED and task.attempts == 0
    other = Worker(queue.backend, lease_timeout=0.3)  # renewals (which carry cancel requests) every 0.1 s
    await other.start()
    assert await queue.cancel(task_id)  # now running on the other worker, or still queued
    result = await queue.get_result(task_id, timeout=10)
    await other.stop(timeout=1)
    assert result is not None and result.status == "cancelled"


@pytest.mark.asyncio
async def test_a_task_given_back_still_running_at_the_stop_timeout_is_named_in_the_log(
    queue: TaskQueue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its next run shows the same attempt number, so the warning is where the repeat is visible."""
    marker = tmp_path / "started"
    worker = Worker(queue.backend, max_concurrency=2)
    await worker.start()
    task_id = await queue.enqueue(tasks.async_record, str(marker), 30.0)
    await wait_until(lambda: asyncio.to_thread(marker.exists))
    with caplog.at_level(logging.WARNING, logger="sitq.worker"):
        await worker.stop(timeout=0.1)
    warnings = [r.getMessage() for r in caplog.records if "still running at shutdown" in r.getMessage()]
    assert len(warnings) == 1 and task_id in warnings[0] and "same attempt number" in warnings[0]


@pytest.mark.asyncio
@pytest.mark.parametrize("window", [None, 0, 0.02])
async def test_a_trickle_of_tasks_all_finish_under_any_batch_window(queue: TaskQueue, window: float | None) -> None:
    """Paced commits (pacing.py) delay claims and finishes a little; they must never lose or strand one."""
    worker = Worker(queue.backend, batch_window=window)
    await worker.start()
    try:
        ids = []
        for n in range(40):
            ids.append(await queue.enqueue(tasks.add, n, 1))
            if n % 8 == 0:
                await asyncio.sleep(0.001)  # let the worker catch up, so later enqueues find it drained
        results = [await queue.get_result(task_id, timeout=15) for task_id in ids]
    finally:
        await worker.stop()
    assert [queue.deserialize_result(r) for r in results if r is not None] == [n + 1 for n in range(40)]


def test_retry_delay_doubles_and_is_capped_at_a_day_for_any_attempt() -> None:
    from sitq_core.worker import retry_delay

    assert [retry_delay(1.0, attempt) for attempt in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(0, 5) == 0.0
    assert retry_delay(1.0, 5000) == 86_400.0  # no float overflow for huge max_retries
    assert retry_delay(float("nan"), 1) == 0.0  # a backoff stored as NaN: no wait, not a ValueError
    assert retry_delay(float("inf"), 1) == 86_400.0


def test_retry_delay_follows_the_formula_for_a_tiny_backoff() -> None:
    """The exponent was capped at 64: a backoff under ~5e-15 s never grew, and 1,100 retries ran in 4 s."""
    from sitq_core.worker import retry_delay

    assert retry_delay(1e-300, 998) == 1e-300 * 2.0**997
    assert retry_delay(1e-300, 1000) > 1.0
    assert retry_delay(1e-300, 1020) == 86_400.0
    assert retry_delay(5e-324, 1090) == math.ldexp(5e-324, 1089)  # the smallest float still doubles exactly
    assert retry_delay(5e-324, 1200) == 86_400.0
    assert retry_delay(1e6, 1) == 86_400.0  # a backoff above a day waits a day


def test_the_pause_after_store_failures_stays_finite_however_long_the_store_fails() -> None:
    """At 1024 failures in a row 0.05 * 2**failures overflowed a float, and the worker stopped for good."""
    from sitq_core.worker import store_retry_delay

    assert [store_retry_delay(n, 1.0) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    for failures in (1023, 1024, 10**6):
        assert store_retry_delay(failures, 1.0) == 1.0 and store_retry_delay(failures, 0.01) == 0.05


@pytest.mark.asyncio
async def test_an_unstorable_error_message_fails_only_its_own_task(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    calls: list[Any] = [(tasks.record, (str(log), n), {}) for n in range(20)]
    calls.insert(10, (tasks.fails_with_odd_text, ("bad\udcffbyte and a \x00 NUL",), {}))
    ids = await queue.enqueue_many(calls)
    worker = Worker(queue.backend, max_concurrency=4)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=15) for task_id in ids]
    await worker.stop()
    statuses = [r.status if r else None for r in results]
    assert statuses == ["success"] * 10 + ["failed"] + ["success"] * 10
    assert results[10] is not None and "bad\\udcffbyte and a \\x00 NUL" in (results[10].error or "")
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 20, "no task may run twice because of another task's error text"


@pytest.mark.asyncio
async def test_odd_exceptions_fail_their_task_and_the_worker_goes_on(queue: TaskQueue) -> None:
    ids = [
        await queue.enqueue(tasks.raises_unprintable),
        await queue.enqueue(tasks.raises_cancelled_itself),
        await queue.enqueue(tasks.raises_keyboard_interrupt),
        await queue.enqueue(tasks.async_raises_keyboard_interrupt),
        await queue.enqueue(tasks.async_raises_base_exception),
        await queue.enqueue(tasks.fails_with_odd_text, "   "),  # a blank message: the error is never blank
        await queue.enqueue(tasks.add, 1, 2),
    ]
    worker = Worker(queue.backend, max_concurrency=1)
    await worker.start()
    results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
    await worker.stop()
    assert [r.status if r else None for r in results] == ["failed"] * 6 + ["success"]
    errors = [r.error or "" for r in results[:6] if r is not None]
    assert "UnprintableError" in errors[0] and "CancelledError" in errors[1]
    assert "KeyboardInterrupt" in errors[2] and "KeyboardInterrupt" in errors[3] and errors[4] == "unusual"
    assert errors[5] == "ValueError"


@pytest.mark.asyncio
async def test_a_base_exception_of_the_task_is_recorded_and_observed_as_raised(queue: TaskQueue) -> None:
    """It was recorded as 'the task raised Unusual' and observers got sitq's carrier exception instead."""
    seen: list[BaseException | str] = []

    class Observer:
        @hookimpl
        def sitq_task_failed(self, task: Any, error: Any, will_retry: bool) -> None:
            seen.append(error)

    manager = get_plugin_manager()
    manager.register_plugin(Observer(), "base-errors")
    try:
        ids = [
            await queue.enqueue(tasks.raises_base_exception, "sync went wrong"),
            await queue.enqueue(tasks.raises_base_exception, "second in a batch"),  # may share a thread hop
            await queue.enqueue(tasks.async_raises_base_exception),
        ]
        worker = Worker(queue.backend, max_concurrency=1)
        await worker.start()
        results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
        await worker.stop()
    finally:
        manager.unregister_plugin("base-errors")
    assert [r.error if r else None for r in results] == ["sync went wrong", "second in a batch", "unusual"]
    assert all(r is not None and "tasks.Unusual: " in (r.traceback or "") for r in results)
    assert [type(e).__name__ for e in seen] == ["Unusual"] * 3
    assert [str(e) for e in seen] == ["sync went wrong", "second in a batch", "unusual"]


@pytest.mark.asyncio
async def test_a_sync_timeout_counts_from_when_the_task_starts(queue: TaskQueue, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    worker = Worker(queue.backend, max_concurrency=1, prefetch=0)
    slow = await queue.with_options(timeout=0.3).enqueue(tasks.sync_sleepy, 1.5)  # keeps its thread after timing out
    quick = await queue.with_options(timeout=1.0).enqueue(tasks.record, str(log), 1)
    await worker.start()
    slow_result = await queue.get_result(slow, timeout=10)
    quick_result = await queue.get_result(quick, timeout=10)
    await worker.stop()
    assert slow_result is not None and "timed out" in (slow_result.error or "")
    assert quick_result is not None and quick_result.status == "success", quick_result
    assert log.read_text().count("start 1") == 1


class RefusesOneOutcome(SQLiteBackend):
    """A real SQLite store that refuses any batch holding one particular outcome (a stand-in for a store's limit)."""

    @staticmethod
    def _check(outcomes: Any) -> None:
        if any("REFUSE-ME" in (outcome.error or "") for outcome in outcomes):
            raise BackendError("the store refused a row of this batch", operation="finish", backend_type="test")

    async def finish_many(self, outcomes: Any) -> list[bool]:
        self._check(outcomes)
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self._check(outcomes)
        return await super().finish_and_reserve(outcomes, **kwargs)


@pytest.mark.asyncio
async def test_an_outcome_the_store_refuses_holds_back_no_other(tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    async with TaskQueue(RefusesOneOutcome(tmp_path / "refuses.db")) as queue:
        calls: list[Any] = [(tasks.record, (str(log), n), {}) for n in range(20)]
        ids = await queue.enqueue_many(calls[:7])
        poison = await queue.with_options(max_lease_expiries=1).enqueue(tasks.fails_with_odd_text, "REFUSE-ME")
        ids += await queue.enqueue_many(calls[7:])
        worker = Worker(queue.backend, max_concurrency=4, poll_interval=0.2, lease_timeout=1.0)
        await worker.start()
        results = [await queue.get_result(task_id, timeout=20) for task_id in ids]
        refused = await queue.get_result(poison, timeout=20)
        await worker.stop()
    assert [r.status if r else None for r in results] == ["success"] * 20
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert len(starts) == 20, "every other task ran once"
    # the refused outcome is given up; its lease expires and the task ends failed by the lease rules
    assert refused is not None and refused.status == "failed" and "lease expired" in (refused.error or "")


@pytest.mark.asyncio
async def test_a_sync_task_stuck_after_its_timeout_does_not_hold_up_the_next(queue: TaskQueue, tmp_path: Path) -> None:
    tasks.GATE.clear()
    log = tmp_path / "ran.log"
    worker = Worker(queue.backend, max_concurrency=1, prefetch=0)
    try:
        stuck = await queue.with_options(timeout=0.2).enqueue(tasks.wait_for_gate, 30.0)
        after = await queue.with_options(timeout=5).enqueue(tasks.record, str(log), 1)
        await worker.start()
        stuck_result = await queue.get_result(stuck, timeout=10)
        after_result = await queue.get_result(after, timeout=10)  # while the first still blocks its thread
        assert not tasks.GATE.is_set()
        assert stuck_result is not None and "timed out" in (stuck_result.error or "")
        assert after_result is not None and after_result.status == "success"
    finally:
        tasks.GATE.set()
        await worker.stop()


class FlakyStore(SQLiteBackend):
    """A real SQLite backend whose store can be made unreachable for a while (an outage)."""

    down = False
    calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise BackendError("store unreachable (simulated outage)", operation="test", backend_type="sqlite")

    async def finish_many(self, outcomes: Any) -> Any:
        self._check()
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().finish_and_reserve(outcomes, **kwargs)

    async def reserve(self, **kwargs: Any) -> Any:
        self._check()
        return await super().reserve(**kwargs)

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        self._check()
        return await super().heartbeat(leases, lease_seconds)


@pytest.mark.asyncio
async def test_an_outage_shorter_than_the_lease_loses_no_outcome(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "outage.db")
    async with TaskQueue(store) as queue:
        ids = [await queue.enqueue(tasks.sleepy, 0.2 + 0.1 * i) for i in range(4)]
        worker = Worker(store, max_concurrency=4, lease_timeout=5)
        await worker.start()
        await wait_until(lambda: _running(queue, 4))
        store.down = True  # every task finishes while the store cannot be reached
        await asyncio.sleep(1.0)
        store.down = False
        results = [await queue.get_result(task_id, timeout=4) for task_id in ids]
        await worker.stop()
        assert [r.status if r else None for r in results] == ["success"] * 4
        assert [r.attempts for r in results if r] == [1] * 4  # stored once: nothing ran again


@pytest.mark.asyncio
async def test_a_task_reserved_ahead_and_cancelled_while_it_waits_never_runs(queue: TaskQueue) -> None:
    first = await queue.enqueue(tasks.sleepy, 1.5)
    ahead = await queue.enqueue(tasks.async_add, 1)
    worker = Worker(queue.backend, max_concurrency=1, prefetch=1, lease_timeout=30)  # renewals every 10 s
    await worker.start()
    await wait_until(lambda: _running(queue, 2))  # the second one is held, waiting for the slot
    assert await queue.cancel(ahead)
    result = await queue.get_result(ahead, timeout=10)
    first_result = await queue.get_result(first, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "cancelled"
    assert first_result is not None and first_result.finished_at is not None and result.finished_at is not None
    assert result.finished_at < first_result.finished_at  # dropped while it waited, not run afterwards


async def cancels_itself() -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(1)


class _MessageRaises(Exception):
    def __init__(self, raised: type[BaseException]) -> None:
        super().__init__()
        self.raised = raised

    def __str__(self) -> str:
        raise self.raised()


def fails_with_a_message_that_raises(raised_name: str) -> None:
    raise _MessageRaises(
        {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}.get(raised_name, asyncio.CancelledError)
    )


class _PicklingRaises:
    def __init__(self, raised_name: str) -> None:
        self.raised_name = raised_name

    def __reduce__(self) -> Any:
        raise {"KeyboardInterrupt": KeyboardInterrupt}.get(self.raised_name, asyncio.CancelledError)()


def returns_a_value_whose_pickling_raises(raised_name: str) -> _PicklingRaises:
    return _PicklingRaises(raised_name)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("func", "arg"),
    [
        (cancels_itself, None),
        (fails_with_a_message_that_raises, "SystemExit"),
        (fails_with_a_message_that_raises, "KeyboardInterrupt"),
        (fails_with_a_message_that_raises, "CancelledError"),
        (returns_a_value_whose_pickling_raises, "KeyboardInterrupt"),
        (returns_a_value_whose_pickling_raises, "CancelledError"),
    ],
)
async def test_odd_base_exceptions_from_a_task_fail_that_task_and_free_its_slot(
    queue: TaskQueue, func: Any, arg: str | None
) -> None:
    """They used to end the worker's process, hang it, or keep the task running and its only slot taken."""
    worker = Worker(queue.backend, max_concurrency=1, lease_timeout=1.0)
    await worker.start()
    try:
        odd = await queue.get_result(await queue.enqueue(func, *(() if arg is None else (arg,))), timeout=10)
        after = await queue.get_result(await queue.enqueue(tasks.add, 1), timeout=10)
    finally:
        await asyncio.wait_for(worker.stop(), 10)
    assert odd is not None and odd.status == "failed", "the odd task never ended"
    assert after is not None and after.status == "success", "the worker's slot stayed taken"


@pytest.mark.asyncio
async def test_a_task_still_running_here_when_its_lease_ran_out_is_not_started_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held elsewhere longer than the lease: heartbeats fail, the lease runs out, and this worker's own
    reserve takes the task back. Before: it started it a second time beside the first run."""
    path = tmp_path / "stalled.db"
    backend = SQLiteBackend(path, busy_timeout=0.2)
    marks = tmp_path / "starts.txt"
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=4, lease_timeout=0.6, poll_interval=0.1)
        await worker.start()
        task_id = await queue.enqueue(tasks.async_record, str(marks), 3.0)
        await wait_until(lambda: asyncio.sleep(0, marks.exists()))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # maintenance holds the write lock past the lease
        await asyncio.sleep(1.5)
        blocker.execute("COMMIT")
        blocker.close()
        result = await queue.get_result(task_id, timeout=15)
        await worker.stop()
    assert result is not None and result.status == "success"
    assert marks.read_text().split() == ["start"], "the task started twice"
    assert "reclaimed by another worker" not in caplog.text


@pytest.mark.asyncio
async def test_start_during_a_stop_its_caller_gave_up_on_waits_and_starts_afresh(
    queue: TaskQueue, tmp_path: Path
) -> None:
    worker = Worker(queue.backend, poll_interval=0.05)
    await worker.start()
    log = tmp_path / "record.log"
    await queue.enqueue(tasks.record, str(log), 1, 0.4)
    await wait_until(lambda: asyncio.sleep(0, log.exists()))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.stop(), 0.05)
    await asyncio.wait_for(worker.start(), 10)  # before: returned at once, and the stop then ended the worker
    task_id = await queue.enqueue(tasks.add, 2, 3)
    result = await queue.get_result(task_id, timeout=10)
    assert result is not None and result.status == "success", "the worker started again after the stop"
    assert worker.running
    await asyncio.wait_for(worker.stop(), 10)
    assert not worker.running


@pytest.mark.asyncio
async def test_a_later_stop_with_a_timeout_tightens_a_stop_in_progress(queue: TaskQueue, tmp_path: Path) -> None:
    worker = Worker(queue.backend, poll_interval=0.05)
    await worker.start()
    marks = tmp_path / "starts.txt"
    task_id = await queue.enqueue(tasks.async_record, str(marks), 30)
    await wait_until(lambda: asyncio.sleep(0, marks.exists()))  # started, not merely reserved
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.stop(), 0.2)  # graceful: would wait the 30 s task out
    await asyncio.wait_for(worker.stop(timeout=0), 10)  # before: its timeout was ignored
    assert not worker.running
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.status == TaskStatus.QUEUED, "the abandoned task was given back"


@pytest.mark.asyncio
async def test_one_hung_task_with_retries_does_not_stop_a_one_slot_worker(queue: TaskQueue) -> None:
    """Each retry of a hung sync task timed out into a thread of its own; when those held slots, one hung task
    with retries took every slot of the worker (and the tasks it had reserved meanwhile stayed leased)."""
    tasks.GATE.clear()
    worker = Worker(queue.backend, max_concurrency=1, poll_interval=0.05)
    await worker.start()
    try:
        view = queue.with_options(timeout=0.1, max_retries=2, retry_backoff=0.01)
        hung = await view.enqueue(tasks.wait_for_gate, 30.0)
        failed = await queue.get_result(hung, timeout=10)
        assert failed is not None and failed.attempts == 3 and "timed out" in (failed.error or "")
        quick = await queue.get_result(await queue.enqueue(tasks.add, 2, 3), timeout=10)
        assert quick is not None and quick.status == "success", "the hung task's retries took the only slot"
    finally:
        tasks.GATE.set()
        await worker.stop()


@pytest.mark.asyncio
async def test_hung_sync_threads_beyond_max_concurrency_hold_their_slots(queue: TaskQueue, tmp_path: Path) -> None:
    """One hung call does not stop a one-slot worker; a second one holds the slot, so hung calls cannot pile up
    threads without bound (before: one more thread per timeout, 103 threads for max_concurrency=2)."""
    tasks.GATE.clear()
    log = tmp_path / "hung.log"
    worker = Worker(queue.backend, max_concurrency=1, prefetch=0, poll_interval=0.05)
    try:
        view = queue.with_options(timeout=0.1, max_retries=0)
        first, second, third = [await view.enqueue(tasks.record_then_wait_for_gate, str(log), n) for n in (1, 2, 3)]
        await worker.start()
        for hung in (first, second):
            result = await queue.get_result(hung, timeout=10)
            assert result is not None and "timed out" in (result.error or "")
        await asyncio.sleep(0.5)  # time enough for the third to start, were the slot free
        assert "start 3" not in log.read_text(), "a third thread started while two hung calls ran on"
        stored = await queue.get_task(third)
        assert stored is not None and stored.status == "queued", "reserved for a slot held by a hung call"
        tasks.GATE.set()  # the hung calls return: the slot is free again
        result = await queue.get_result(third, timeout=10)
        assert result is not None and result.status == "success"
    finally:
        tasks.GATE.set()
        await worker.stop()


@pytest.mark.asyncio
async def test_failures_and_retries_reach_the_log(queue: TaskQueue, caplog: pytest.LogCaptureFixture) -> None:
    """An operator sees a task's final failure at WARNING (and its retries at INFO) without querying the store."""
    caplog.set_level("INFO", logger="sitq.worker")
    worker = Worker(queue.backend, poll_interval=0.05)
    await worker.start()
    task_id = await queue.with_options(max_retries=1, retry_backoff=0.01).enqueue(tasks.boom, "disk on fire")
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and result.status == "failed"
    final = [r for r in caplog.records if r.levelname == "WARNING" and task_id in r.getMessage()]
    assert final and "failed after 2 attempt(s): ValueError: disk on fire" in final[0].getMessage()
    assert "sitq_test_tasks" in final[0].getMessage()  # the function, to know what failed
    retried = [r for r in caplog.records if r.levelname == "INFO" and "retrying" in r.getMessage()]
    assert retried and task_id in retried[0].getMessage()


@pytest.mark.asyncio
async def test_a_store_that_keeps_failing_logs_one_traceback_not_one_a_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged file or a lost table failed every call: a traceback a second, about 5 million log lines a day."""
    store = FlakyStore(tmp_path / "broken.db")
    async with TaskQueue(store) as queue:
        await queue.enqueue(tasks.add, 1)
        store.down = True
        worker = Worker(store, poll_interval=0.05)  # retries every 0.05 s while the store fails
        await worker.start()

        async def failed_often() -> bool:
            return sum("backend call failed" in r.getMessage() for r in caplog.records) >= 1 and _calls(store) >= 10

        store.calls = 0
        await wait_until(failed_often)
        store.down = False
        await worker.stop()
    tracebacks = [r for r in caplog.records if r.exc_info and "backend call failed" in r.getMessage()]
    assert len(tracebacks) == 1, f"{len(tracebacks)} tracebacks for one failing store"


def _calls(store: FlakyStore) -> int:
    return store.calls


class CutOnce(SQLiteBackend):
    """A store whose next ``cuts`` reserves fail as a connection the server closed (then it works again)."""

    cuts = 0

    async def reserve(self, **kwargs: Any) -> Any:
        if self.cuts:
            self.cuts -= 1
            raise ConnectionError("the connection was closed (by the server: shutdown)", backend_type="test")
        return await super().reserve(**kwargs)


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [1, 50])
async def test_a_lost_connection_that_the_retry_overcomes_is_a_warning_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cuts: int
) -> None:
    """A session ended by the server (pg_terminate_backend) logged an ERROR traceback although the retry ran on."""
    caplog.set_level("INFO", logger="sitq.worker")
    store = CutOnce(tmp_path / "cut.db")
    async with TaskQueue(store) as queue:
        store.cuts = cuts
        worker = Worker(store, poll_interval=0.01)
        await worker.start()
        result = await queue.get_result(await queue.enqueue(tasks.add, 1, 2), timeout=30)
        await worker.stop()
    assert result is not None and result.status == "success"
    failed = [r for r in caplog.records if "backend call failed" in r.getMessage()]
    assert failed[0].levelname == "WARNING" and not failed[0].exc_info
    assert "the connection was closed" in failed[0].getMessage()
    tracebacks = [r for r in failed if r.exc_info]
    # one that persists is still an error, with its traceback once
    assert [r.levelname for r in tracebacks] == ([] if cuts == 1 else ["ERROR"])


@pytest.mark.asyncio
async def test_heartbeats_that_keep_failing_log_one_traceback_not_one_a_renewal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk under a long task logged a traceback every renewal (585 lines in 30 s)."""
    store = FlakyStore(tmp_path / "renewals.db")
    async with TaskQueue(store) as queue:
        worker = Worker(store, lease_timeout=0.15)  # a renewal every 0.05 s
        await worker.start()
        task_id = await queue.enqueue(tasks.sleepy, 30.0)

        async def running() -> bool:
            task = await queue.get_task(task_id)
            return task is not None and task.status == TaskStatus.RUNNING

        await wait_until(running)
        store.down, store.calls = True, 0
        await wait_until(lambda: _failed_calls(store, 10))
        store.down = False
        await worker.stop(timeout=0)
    failed = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, f"{len(failed)} lines for one failing store"


async def _failed_calls(store: FlakyStore, count: int) -> bool:
    return store.calls >= count


class StallsRenewals(SQLiteBackend):
    """Heartbeats fail (a store out of reach for renewals), and a reserve that takes back this worker's own
    expired task waits until the task has just ended before it answers."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.out_of_reach = True
        self.task_ended = asyncio.Event()

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        if self.out_of_reach:
            raise BackendError("store unreachable (simulated)", operation="heartbeat", backend_type="sqlite")
        return await super().heartbeat(leases, lease_seconds)

    async def reserve(self, **options: Any) -> Any:
        got = await super().reserve(**options)
        if self.out_of_reach and any(lease.attempt > 1 for lease in got):
            await self.task_ended.wait()  # the task returns while this reserve is in flight
            self.out_of_reach = False
        return got


@pytest.mark.asyncio
async def test_a_task_taken_back_just_as_it_ended_reports_once_under_the_new_lease(tmp_path: Path) -> None:
    """Its outcome, queued with the old lease, was refused ('reclaimed by another worker'), and the task ran again."""
    store = StallsRenewals(tmp_path / "taken-back.db")
    marks = tmp_path / "starts.txt"
    async with TaskQueue(store) as queue:
        task_id = await queue.enqueue(tasks.async_record, str(marks), 1.6)
        worker = Worker(store, max_concurrency=2, lease_timeout=1.0, poll_interval=0.1)
        await worker.start()
        await wait_until(lambda: asyncio.sleep(0, marks.exists()))

        async def ended() -> bool:
            found = await queue.get_task(task_id)
            if found is not None and found.attempts > 1 and not store.task_ended.is_set():
                await asyncio.sleep(1.7)  # the first run (1.6 s) has returned by now
                store.task_ended.set()
            return found is not None and found.status == "success"

        await wait_until(ended, timeout=15)
        await worker.stop()
    assert marks.read_text().split() == ["start"], "the task ran twice"


class TakenByAnother(SQLiteBackend):
    """The first renewal finds the task taken by another worker (a lock outlasted the lease)."""

    stolen = False

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        if leases and not self.stolen:
            self.stolen = True
            with sqlite3.connect(self.path) as other:  # the other worker's claim: a new token, a long lease
                other.execute("UPDATE tasks SET lease_token = 'other', due = due + 600000000 WHERE status = 'running'")
        return await super().heartbeat(leases, lease_seconds)


class TakenByAnotherBeforeItsReport(SQLiteBackend):
    """The report of the first outcome finds the task taken by another worker (renewals all went through)."""

    stolen = False

    async def finish_many(self, outcomes: Any) -> list[bool]:
        if outcomes and not self.stolen:
            self.stolen = True
            with sqlite3.connect(self.path) as other:
                other.execute("UPDATE tasks SET lease_token = 'other', due = due + 600000000 WHERE status = 'running'")
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **options: Any) -> Any:
        if outcomes and not self.stolen:
            self.stolen = True
            with sqlite3.connect(self.path) as other:
                other.execute("UPDATE tasks SET lease_token = 'other', due = due + 600000000 WHERE status = 'running'")
        return await super().finish_and_reserve(outcomes, **options)


@contextlib.asynccontextmanager
async def a_finished_run_refused(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    lease_timeout: float = 0.3,
    hold: float = 0.5,
    store_class: type[SQLiteBackend] = TakenByAnother,
) -> AsyncIterator[tuple[TaskQueue, str]]:
    """A task that ran here once, whose outcome was refused because another worker took its lease meanwhile.

    The worker keeps that outcome for two lease periods (``lease_timeout``); the task runs ``hold`` seconds,
    longer than the first renewal (a third of the lease), which finds the task taken.
    """
    store = store_class(tmp_path / "late.db")
    async with TaskQueue(store) as queue:
        task_id = await queue.enqueue(tasks.record, str(tmp_path / "runs.txt"), 1, hold)
        worker = Worker(store, lease_timeout=lease_timeout)
        await worker.start()
        try:
            await wait_until(lambda: asyncio.sleep(0, "(lease lost)" in caplog.text))
            yield queue, task_id
        finally:
            await worker.stop()


def starts(tmp_path: Path) -> int:
    return (tmp_path / "runs.txt").read_text().split().count("start")


@pytest.mark.asyncio
@pytest.mark.parametrize("store_class", [TakenByAnother, TakenByAnotherBeforeItsReport])
async def test_a_task_that_finished_after_losing_its_lease_is_not_run_again_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, store_class: type[SQLiteBackend]
) -> None:
    """Taken back after it ended here, it ran a second time in the same worker, its finished run thrown away.

    Its outcome goes in after all, so the worker must not have said it was discarded (it did, then said it went in).
    """
    async with a_finished_run_refused(tmp_path, caplog, store_class=store_class) as (queue, task_id):
        with sqlite3.connect(queue.backend.path) as other:  # the other worker gives it back (a suspect there)
            other.execute(  # as a release of its claim of the expired lease: one lease expiry more
                "UPDATE tasks SET status = 'queued', due = 0, lease_token = NULL, worker_id = NULL, "
                "lease_expiries = lease_expiries + 1 WHERE id = ?",
                (task_id,),
            )
        queue.backend.notify_work()
        result = await queue.get_result(task_id, timeout=10)
    assert result is not None and result.status == "success" and queue.deserialize_result(result) == 1
    assert starts(tmp_path) == 1, "the task ran again in the worker that had finished it"
    assert "its outcome goes in under the new lease" in caplog.text
    assert "outcome discarded" not in caplog.text, "it said the outcome was discarded, then stored it"
    assert f"task {task_id} was reclaimed by another worker (lease lost); its outcome is kept" in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and task_id in r.getMessage()]
    lost = [message for message in warned if "lost" in message]
    assert len(lost) == 1, f"one documented warning for the lost lease (delivery.md), got {warned}"


@pytest.mark.asyncio
async def test_a_requeue_after_a_lost_lease_runs_the_task_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The outcome kept from the attempt whose lease was lost answered a user's requeue, and the task never ran."""
    async with a_finished_run_refused(tmp_path, caplog) as (queue, task_id):
        with sqlite3.connect(queue.backend.path) as other:  # the other worker ends it failed
            other.execute(
                "UPDATE tasks SET status = 'failed', due = NULL, lease_token = NULL, error = 'x' WHERE id = ?",
                (task_id,),
            )
        assert await queue.requeue(task_id)  # an operator runs it again
        result = await queue.get_result(task_id, timeout=10)
    assert result is not None and result.status == "success"
    assert starts(tmp_path) == 2, "the requeued task did not run"


@pytest.mark.asyncio
async def test_a_requeued_run_whose_worker_died_is_not_answered_by_an_outcome_from_before_the_requeue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A requeue resets attempts and lease expiries: once the requeued run's worker died, the worker that had kept
    the outcome of the first run took the task back and reported that outcome, and the requeued task never ran."""
    async with a_finished_run_refused(tmp_path, caplog, lease_timeout=3.0, hold=2.0) as (queue, task_id):
        with sqlite3.connect(queue.backend.path) as other:  # the other worker's attempt is cancelled
            other.execute(
                "UPDATE tasks SET status = 'cancelled', due = NULL, lease_token = NULL, error = 'cancelled' "
                "WHERE id = ?",
                (task_id,),
            )
        # an operator runs it again (due in a minute, so that the worker here cannot take it before the third)
        assert await queue.requeue(task_id, eta=datetime.now(UTC) + timedelta(minutes=1))
        with sqlite3.connect(queue.backend.path) as other:  # a third worker starts the requeued run and dies
            other.execute(
                "UPDATE tasks SET status = 'running', attempts = 1, lease_token = 'third', worker_id = 'third', "
                "due = 0 WHERE id = ?",
                (task_id,),
            )
        queue.backend.notify_work()
        result = await queue.get_result(task_id, timeout=10)
        assert result is not None and result.status == "success"
        assert result.attempts == 2 and result.started_at is not None
        assert "its outcome goes in under the new lease" not in caplog.text
    assert starts(tmp_path) == 2, "the requeued task did not run again"


def test_run_leaves_no_swallowing_handler_when_the_loop_held_the_signal_before(tmp_path: Path) -> None:
    """run() put back asyncio's internal no-op for a signal the loop already handled: later signals vanished."""
    before = signal.getsignal(signal.SIGTERM)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)  # an application's own handler (aiohttp's run_app)
        async with TaskQueue(SQLiteBackend(tmp_path / "signals.db")) as queue:
            worker = Worker(queue.backend)
            running = asyncio.create_task(worker.run())
            await queue.get_result(await queue.enqueue(tasks.add, 1), timeout=10)
            await worker.stop()
            await running
        loop.remove_signal_handler(signal.SIGTERM)

    try:
        asyncio.run(main())
        assert getattr(signal.getsignal(signal.SIGTERM), "__name__", "") != "_sighandler_noop"
    finally:
        signal.signal(signal.SIGTERM, before)


APP_SIGNAL_HANDLER = """
import asyncio, os, signal, sys
from sitq import Worker

async def main():
    loop = asyncio.get_running_loop()
    app_stops = []
    loop.add_signal_handler(signal.SIGTERM, app_stops.append, "app")  # aiohttp's run_app does this
    worker = Worker("sqlite:///" + sys.argv[1])
    run = asyncio.create_task(worker.run())
    while not worker.running:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 60)
    await asyncio.sleep(0)  # the chained call is scheduled with call_soon
    print("during run:", app_stops)
    os.kill(os.getpid(), signal.SIGTERM)  # the app's next stop request, after run() returned
    for _ in range(500):
        if len(app_stops) == 2:
            break
        await asyncio.sleep(0.01)
    print("after run:", app_stops)

asyncio.run(main())
"""


def test_run_chains_and_puts_back_a_handler_the_app_added_on_the_loop(tmp_path: Path) -> None:
    """run() swallowed the app's loop.add_signal_handler(SIGTERM, ...) while it ran and left the default after:
    the app never heard the first SIGTERM, and its next one killed the process (exit 143, no cleanup)."""
    done = subprocess.run(
        [sys.executable, "-c", APP_SIGNAL_HANDLER, str(tmp_path / "app.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "during run: ['app']" in done.stdout, done.stdout
    assert "after run: ['app', 'app']" in done.stdout, done.stdout


@pytest.mark.asyncio
@pytest.mark.parametrize("gone", ["module", "function"])
@pytest.mark.parametrize("serializer", ["cloudpickle", "msgpack"])
async def test_a_task_whose_module_is_missing_on_the_worker_is_retried_per_max_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str, serializer: str
) -> None:
    """A rolling deploy: the task reached a worker without its code. It failed for good, max_retries aside."""
    import importlib
    import sys

    module = tmp_path / "deploy_skew_tasks.py"
    module.write_text("def job():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    job = importlib.import_module("deploy_skew_tasks").job
    async with TaskQueue(SQLiteBackend(tmp_path / "skew.db"), serializer=serializer) as queue:
        task_id = await queue.with_options(max_retries=2, retry_backoff=0.01).enqueue(job)
        once = await queue.with_options(max_retries=0).enqueue(job)
        # the worker's side of the deploy: the module, or the function in it, is not there
        monkeypatch.delitem(sys.modules, "deploy_skew_tasks")
        if gone == "module":
            module.unlink()
        else:
            module.write_text("def other():\n    return 2\n")
        importlib.invalidate_caches()
        worker = Worker(queue.backend)
        await worker.start()
        try:
            result = await queue.get_result(task_id, timeout=20)
            single = await queue.get_result(once, timeout=20)
        finally:
            await worker.stop()
    assert result is not None and result.status == "failed", result
    assert result.attempts == 3, "a function missing on this worker follows max_retries like any failure"
    if gone == "module":
        assert "importable" in (result.error or ""), result.error
    assert single is not None and single.status == "failed" and single.attempts == 1


class _BrokenOnLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise_attribute_error, ())


def _raise_attribute_error() -> None:
    raise AttributeError("'Config' object has no attribute 'url'")  # the payload's own bug


@pytest.mark.asyncio
async def test_a_payload_whose_own_code_fails_to_load_is_not_retried(queue: TaskQueue) -> None:
    """An AttributeError raised by the payload itself fails the same way on every worker: no retries spent."""
    task_id = await queue.with_options(max_retries=3, retry_backoff=0.01).enqueue(tasks.add, _BrokenOnLoad(), 1)
    worker = Worker(queue.backend)
    await worker.start()
    try:
        result = await queue.get_result(task_id, timeout=20)
    finally:
        await worker.stop()
    assert result is not None and result.status == "failed" and result.attempts == 1, result
    assert "AttributeError" in (result.error or ""), result.error


class _RenewalsFail(SQLiteBackend):
    """A store whose lease renewals fail while ``failing`` is set (a disk that stopped taking writes)."""

    failing = False

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        if self.failing:
            raise BackendError("simulated: the disk is full", operation="heartbeat", backend_type="sqlite")
        return await super().heartbeat(leases, lease_seconds)


@pytest.mark.asyncio
async def test_tasks_reserved_ahead_whose_leases_ran_out_are_not_started_here_too(tmp_path: Path) -> None:
    """With renewals failing past the lease, the tasks waiting for a slot were free for anyone, and still ran here."""
    log = tmp_path / "ran.log"
    backend = _RenewalsFail(tmp_path / "renewals.db")
    async with TaskQueue(backend) as queue:
        blocker = await queue.enqueue(tasks.record, str(log), 0, 2.5)  # holds the only slot past the lease
        waiting = [await queue.enqueue(tasks.record, str(log), n) for n in range(1, 4)]
        worker = Worker(backend, max_concurrency=1, prefetch=10, lease_timeout=1.0)
        backend.failing = True
        await worker.start()
        try:
            first = await queue.get_result(blocker, timeout=20)
            backend.failing = False
            results = [await queue.get_result(task_id, timeout=30) for task_id in waiting]
        finally:
            await worker.stop()
    assert first is not None
    assert all(r is not None and r.status == "success" for r in results), results
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    ran = sorted(int(line.split()[1]) for line in starts)
    assert ran.count(1) == ran.count(2) == ran.count(3) == 1, f"a waiting task started twice: {starts}"


def test_outcomes_given_up_on_are_logged_once_a_minute_not_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once given up, every later outcome was given up at once with a traceback: five a second on a full disk."""
    import time

    worker = Worker(SQLiteBackend(tmp_path / "quiet.db"))
    failing_since = time.monotonic()
    with caplog.at_level("ERROR", logger="sitq.worker"):
        for _ in range(50):
            try:
                raise BackendError("database or disk is full", operation="finish", backend_type="sqlite")
            except BackendError:
                worker._log_gave_up(["t"], failing_since)
    records = [r for r in caplog.records if "gave up reporting" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None, [r.getMessage() for r in records]
    worker._failing_logged["gave up"] -= 61  # a minute on: the ones given up meanwhile are counted in one line
    worker._log_gave_up(["t"], failing_since)
    later = [r for r in caplog.records if "gave up reporting" in r.getMessage()]
    assert len(later) == 2 and "gave up reporting 50 outcome(s)" in later[1].getMessage(), later[1].getMessage()


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.asyncio
async def test_a_running_task_with_a_cancel_requested_given_back_at_stop_counts_as_cancelled(
    queue: TaskQueue, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Given back by stop(timeout=0), it ended cancelled in the store (a release of a task whose cancel was
    requested) but counted in none of processed/succeeded/failed."""
    marks = tmp_path / "starts.txt"
    worker = Worker(queue.backend)
    await worker.start()
    tasks.GATE.clear()
    try:
        if kind == "async":  # stopped before the worker's own check for cancel requests has seen this one
            task_id = await queue.enqueue(tasks.async_record, str(marks), 60)
        else:  # seen or not, a thread cannot be interrupted: it runs on until the stop gives it back
            task_id = await queue.enqueue(tasks.record_then_wait_for_gate, str(marks), 1)
        await wait_until(lambda: asyncio.sleep(0, marks.exists()))
        assert await queue.cancel(task_id)
        with caplog.at_level(logging.WARNING, logger="sitq.worker"):
            await worker.stop(timeout=0)
    finally:
        tasks.GATE.set()  # never leave a pool thread blocked
    result = await queue.get_result(task_id, timeout=5)
    assert result is not None and result.status == "cancelled"
    assert (worker.processed, worker.succeeded, worker.failed) == (1, 0, 1)
    # the stop's warning must not tell the operator that a task ending cancelled runs again
    again = [r.getMessage() for r in caplog.records if "they run again" in r.getMessage()]
    assert not any(task_id in message for message in again), again


class RenewalsRefusedAtFirst(SQLiteBackend):
    """The first renewals fail as a PostgreSQL pool at its role's connection limit failed them."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.renewed = asyncio.Event()

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        if self.failures:
            self.failures -= 1
            raise BackendError(
                'PostgreSQL heartbeat failed: TooManyConnectionsError: too many connections for role "app"',
                operation="heartbeat",
                backend_type="sqlite",
            )
        states = await super().heartbeat(leases, lease_seconds)
        self.renewed.set()
        return states


@pytest.mark.asyncio
async def test_a_failed_renewal_is_retried_well_within_the_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed renewal was retried only at the next renewal, a third of the lease later: three failures in a
    row let the lease of a task running on a live worker expire."""
    store = RenewalsRefusedAtFirst(tmp_path / "refused.db", failures=3)
    tasks.GATE.clear()
    async with TaskQueue(store) as queue:
        worker = Worker(store, lease_timeout=0.9)  # renewals every 0.3 s
        await worker.start()
        try:
            task_id = await queue.enqueue(tasks.wait_for_gate)
            await wait_until(lambda: asyncio.sleep(0, store.renewed.is_set()), timeout=20)
            tasks.GATE.set()
            result = await queue.get_result(task_id, timeout=20)
        finally:
            tasks.GATE.set()
            await worker.stop()
        task = await queue.get_task(task_id)
    assert result is not None and result.status == "success", result
    assert task is not None and task.attempts == 1 and task.lease_expiries == 0, task
    failed = [r for r in caplog.records if "heartbeat failed; retrying in" in r.getMessage()]
    assert failed, caplog.text
    delay = float(failed[0].getMessage().split("retrying in ")[1].split("s")[0])
    assert delay <= 0.9 / 10, failed[0].getMessage()


@pytest.mark.asyncio
async def test_renewals_failing_between_working_cancel_checks_log_one_traceback_and_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancel checks between renewals only read, and a read that worked reset the count of failed renewals:
    on a full disk every failed renewal logged a traceback, 0.75 s apart for as long as it lasted (30 s lease)."""
    store = RenewalsRefusedAtFirst(tmp_path / "full.db", failures=6)
    tasks.GATE.clear()
    async with TaskQueue(store) as queue:
        worker = Worker(store, lease_timeout=6.0)  # renewals every 2 s, retried after 0.15 s, 0.3 s, then 0.6 s
        await worker.start()
        try:
            task_id = await queue.enqueue(tasks.wait_for_gate)
            await wait_until(lambda: asyncio.sleep(0, store.renewed.is_set()), timeout=30)
        finally:
            tasks.GATE.set()
            await worker.stop()
        result = await queue.get_result(task_id, timeout=20)
    assert result is not None and result.status == "success", result
    failed = [r for r in caplog.records if "heartbeat failed; retrying in" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, [r.getMessage() for r in failed]
    assert "heartbeats still failing" not in caplog.text or "(6 in a row" in caplog.text


class ReserveFailsOnceStopping(SQLiteBackend):
    """A reserve that is in flight as the stop begins, then fails (a write lock held past busy_timeout)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.in_flight = asyncio.Event()
        self.stop_began = asyncio.Event()

    async def reserve(self, **kwargs: Any) -> Any:
        if self.stop_began.is_set() or self.in_flight.is_set():
            return await super().reserve(**kwargs)
        self.in_flight.set()
        await self.stop_began.wait()
        raise BackendError("SQLite database stayed locked during reserve", operation="reserve", backend_type="sqlite")


@pytest.mark.asyncio
async def test_a_reserve_that_fails_as_the_worker_stops_is_one_line_not_a_retry_with_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while a reserve waited on a locked file logged 'ERROR backend call failed; retrying in 0.10s' and a
    40-line traceback, though the worker was stopping and retried nothing: it read as a fault during a deploy."""
    store = ReserveFailsOnceStopping(tmp_path / "stopping.db")
    worker = Worker(store, poll_interval=0.05)
    await worker.start()
    await wait_until(lambda: asyncio.sleep(0, store.in_flight.is_set()), timeout=20)
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0)
    store.stop_began.set()
    await asyncio.wait_for(stopping, 20)
    await store.close()
    assert not [r for r in caplog.records if r.exc_info or "retrying" in r.getMessage()], caplog.text
    line = [r for r in caplog.records if "the reserve in flight as it stopped failed" in r.getMessage()]
    assert len(line) == 1 and "stayed locked" in line[0].getMessage() and line[0].levelno == logging.WARNING


@pytest.mark.asyncio
async def test_the_start_line_shows_each_queue_name_as_it_is(
    queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """Names were joined with commas: 'queues=mail,a,b, sp ' could not tell the names 'a,b' and ' sp ' apart."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    worker = Worker(queue.backend, queues=["mail", "a,b", " sp "])
    await worker.start()
    await worker.stop()
    started = next(r.getMessage() for r in caplog.records if "started on" in r.getMessage())
    assert "queues=['mail', 'a,b', ' sp ']" in started, started


class _BadRepr:
    """A value whose repr raises: an argument check must still give its ValidationError."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize("option", ["max_concurrency", "prefetch", "batch_window", "poll_interval", "queues"])
def test_an_argument_whose_repr_raises_still_gets_a_validation_error(tmp_path: Path, option: str) -> None:
    with pytest.raises(ValidationError) as info:
        Worker(SQLiteBackend(tmp_path / "t.db"), **{option: _BadRepr()})
    assert info.value.parameter == option
    assert "<_BadRepr object (repr failed: RuntimeError: no repr)>" in str(info.value)
