"""PostgresBackend specifics beyond the kit: the one-statement finish of a batch, and the LISTEN wake-ups."""

from __future__ import annotations

import asyncio
import logging
import re
import select
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sitq import BackendError, ConnectionError, SyncTaskQueue, TaskQueue, ValidationError, Worker
from sitq_core.models import Outcome, Task, TaskStatus, new_id
from sitq_postgres import PostgresBackend
from sitq_postgres import backend as pg_backend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


def task() -> Task:
    return Task(id=new_id(), payload=b"p")


@pytest.mark.asyncio
async def test_batch_of_final_outcomes_is_fenced_per_task(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.enqueue_many([task() for _ in range(3)])
        a, b, c = await backend.reserve(worker_id="w", limit=3, lease_seconds=30)
        accepted = await backend.finish_many(
            [
                Outcome(a.id, a.lease_token, "success", value=b"A"),
                Outcome(b.id, "not-the-token", "success", value=b"B"),  # stale: changes nothing
                Outcome(c.id, c.lease_token, "failed", error="bad", traceback="tb"),
            ]
        )
        assert accepted == [True, False, True]
        result_a, result_c = await backend.get_result(a.id), await backend.get_result(c.id)
        assert result_a is not None and result_a.value == b"A" and result_a.attempts == 1
        assert result_c is not None and (result_c.status, result_c.error, result_c.traceback) == ("failed", "bad", "tb")
        assert await backend.get_result(b.id) is None
        stored_b = await backend.get_task(b.id)
        assert stored_b is not None and stored_b.status == TaskStatus.RUNNING
        # the same batch again: every lease has ended or was never valid
        assert await backend.finish_many(
            [Outcome(a.id, a.lease_token, "success"), Outcome(c.id, c.lease_token, "success")]
        ) == [
            False,
            False,
        ]


@pytest.mark.asyncio
async def test_result_waiter_wakes_on_another_instances_finish(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_RESULT_RECHECK_FIRST", 60.0)  # only the NOTIFY can wake the waiter in time
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as producer,
        PostgresBackend(pg_dsn, schema=pg_schema) as worker,
    ):
        stored = task()
        await producer.enqueue(stored)
        waiting = asyncio.create_task(producer.wait_for_result(stored.id, timeout=30))
        (lease,) = await worker.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert not waiting.done()
        assert await worker.complete(lease, b"done")  # no notify_results: the NOTIFY must carry it
        result = await asyncio.wait_for(waiting, 10)
        assert result is not None and result.value == b"done"


@pytest.mark.asyncio
async def test_the_latest_eta_comes_back_aware_and_workers_keep_running(pg_dsn: str, pg_schema: str) -> None:
    latest = datetime.max.replace(tzinfo=UTC)  # asyncpg stores it as 'infinity'
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        far = await queue.enqueue(tasks.add, 1, 2, eta=latest)
        stored = await queue.get_task(far)
        assert stored is not None and stored.eta == latest and stored.eta.tzinfo is not None
        assert await queue.backend.next_eta() == latest
        worker = Worker(queue.backend)
        await worker.start()
        now_id = await queue.enqueue(tasks.add, 2, 3)
        result = await queue.get_result(now_id, timeout=15)
        assert worker.running
        await worker.stop()
        assert result is not None and result.status == "success"


def test_a_backend_used_from_two_event_loops_closes_cleanly(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)

    async def first_loop() -> None:
        worker = Worker(backend)
        await worker.start()
        await worker.stop()

    async def second_loop() -> str:
        async with TaskQueue(backend) as queue:  # closes the pools of both loops; the first loop is gone
            return await queue.enqueue(tasks.add, 1, 1)

    asyncio.run(first_loop())
    assert asyncio.run(second_loop())


def test_an_async_generator_cleaning_up_with_the_queue_at_loop_end_still_can(pg_dsn: str, pg_schema: str) -> None:
    """A user's async generator cleaning up with the queue as asyncio.run ends: its calls go through."""
    import gc
    import warnings

    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    outcomes: list[str] = []

    async def stream(queue: TaskQueue) -> Any:
        try:
            yield 1
        finally:  # run by asyncio.run's shutdown_asyncgens, beside the backend's own guard
            try:
                for _ in range(5):
                    await queue.enqueue(tasks.add, 1, 1)
                    await asyncio.sleep(0.005)  # a pause between two calls: the pool must still be there
                outcomes.append("ok")
            except BaseException as exc:
                outcomes.append(repr(exc))

    async def main() -> None:
        queue = TaskQueue(backend)
        await queue.enqueue(tasks.add, 0, 0)  # the pool (and the guard) exist
        for _ in range(3):
            generator = stream(queue)
            await anext(generator)
            kept.append(generator)  # left suspended: the loop closes it as it ends

    kept: list[Any] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            asyncio.run(main())
            kept.clear()
            gc.collect()
        asyncio.run(backend.close())
        gc.collect()
    assert outcomes == ["ok"] * 6, outcomes
    scheduled_late = [str(w.message) for w in caught if "after loop.shutdown_asyncgens" in str(w.message)]
    assert not scheduled_late, "connections are leased by a class, not an async generator: " + str(scheduled_late)


@pytest.mark.asyncio
async def test_an_error_text_with_nul_fails_only_its_own_task(pg_dsn: str, pg_schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        ids = await queue.enqueue_many(
            [(tasks.add, (n,), {}) for n in range(5)]
            + [(tasks.fails_with_odd_text, ("a \x00 NUL and bad\udcffbyte",), {})]
            + [(tasks.add, (n,), {}) for n in range(5)]
        )
        worker = Worker(queue.backend, max_concurrency=4)
        await worker.start()
        results = [await queue.get_result(task_id, timeout=15) for task_id in ids]
        await worker.stop()
        assert [r.status if r else None for r in results] == ["success"] * 5 + ["failed"] + ["success"] * 5
        assert all(r is not None and r.attempts == 1 for r in results)


@pytest.mark.asyncio
async def test_heartbeats_and_finishes_of_many_tasks_do_not_deadlock(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema, max_connections=10)) as queue:
        ids = await queue.enqueue_many([(tasks.sleepy, (n % 11 * 0.03,), {}) for n in range(5000)])
        worker = Worker(queue.backend, max_concurrency=200, lease_timeout=0.6)  # heartbeats every 0.2 s
        await worker.start()
        try:
            await queue.get_result(ids[-1], timeout=60)

            async def all_done() -> bool:
                return (await queue.counts())["success"] == len(ids)

            deadline = asyncio.get_running_loop().time() + 60
            while not await all_done():
                assert asyncio.get_running_loop().time() < deadline, await queue.counts()
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
    assert "deadlock" not in caplog.text.lower()


@pytest.mark.asyncio
async def test_a_result_waiter_rereads_when_the_listening_connection_is_lost(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_RESULT_RECHECK_FIRST", 60.0)  # no safety-net re-read during the test
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as producer,
        PostgresBackend(pg_dsn, schema=pg_schema) as worker,
    ):
        stored = task()
        await producer.enqueue(stored)
        waiting = asyncio.create_task(producer.wait_for_result(stored.id, timeout=30))
        loop = asyncio.get_running_loop()

        async def listening() -> bool:
            return loop in producer._listeners

        await wait_until(listening)
        pid = producer._listeners[loop].get_server_pid()
        (lease,) = await worker.reserve(worker_id="w", limit=1, lease_seconds=30)
        admin = await asyncpg.connect(pg_dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # The notice of this finish may reach no listener; the waiter must still see the result.
        assert await worker.complete(lease, b"done")
        result = await asyncio.wait_for(waiting, 10)
        assert result is not None and result.value == b"done"


WORK = ("sitq", "work")


@pytest.mark.asyncio
async def test_work_announced_while_reserve_ran_ends_the_next_wait_at_once(pg_dsn: str, pg_schema: str) -> None:
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as consumer,
        PostgresBackend(pg_dsn, schema=pg_schema) as producer,
    ):
        await consumer.wait_for_work(0)  # starts listening
        assert await consumer.reserve(worker_id="w", limit=1, lease_seconds=30) == []
        before = consumer.notifier.count(WORK)
        await producer.enqueue(task())  # its NOTIFY arrives before the consumer waits

        async def announced() -> bool:
            return consumer.notifier.count(WORK) != before

        await wait_until(announced)
        await asyncio.wait_for(consumer.wait_for_work(30), 5)
        assert len(await consumer.reserve(worker_id="w", limit=1, lease_seconds=30)) == 1


@pytest.mark.asyncio
async def test_result_notices_do_not_end_an_idle_workers_wait(pg_dsn: str, pg_schema: str) -> None:
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as consumer,
        PostgresBackend(pg_dsn, schema=pg_schema) as finisher,
    ):
        await finisher.enqueue(Task(id=new_id(), payload=b"p", queue="other"))
        (lease,) = await finisher.reserve(worker_id="f", limit=1, lease_seconds=30)
        await consumer.wait_for_work(0)  # starts listening
        assert await consumer.reserve(worker_id="w", limit=1, lease_seconds=30, queues=["idle"]) == []
        assert await finisher.complete(lease, b"v")  # a result notice, no work notice, after the reserve
        assert await consumer.wait_for_result(lease.id, 10) is not None  # the notice has arrived
        waiting = asyncio.create_task(consumer.wait_for_work(30))
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done, "a result notice ended an idle worker's wait for work"
        waiting.cancel()


@pytest.mark.asyncio
async def test_two_workers_sharing_one_backend_keep_their_own_reserve_marks(pg_dsn: str, pg_schema: str) -> None:
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as shared,
        PostgresBackend(pg_dsn, schema=pg_schema) as producer,
    ):
        await shared.wait_for_work(0)  # starts listening
        a_reserved, b_done = asyncio.Event(), asyncio.Event()

        async def worker_a() -> None:
            assert await shared.reserve(worker_id="A", limit=1, lease_seconds=30, queues=["a"]) == []
            a_reserved.set()
            await b_done.wait()
            await asyncio.wait_for(shared.wait_for_work(30), 5)  # its work was announced after its reserve

        async def worker_b() -> None:
            await a_reserved.wait()
            before = shared.notifier.count(WORK)
            await producer.enqueue(Task(id=new_id(), payload=b"p", queue="a"))

            async def announced() -> bool:
                return shared.notifier.count(WORK) != before

            await wait_until(announced)
            assert await shared.reserve(worker_id="B", limit=1, lease_seconds=30, queues=["b"]) == []
            await asyncio.wait_for(shared.wait_for_work(0.05), 5)
            b_done.set()

        await asyncio.gather(asyncio.create_task(worker_a()), asyncio.create_task(worker_b()))


@pytest.mark.asyncio
async def test_work_that_committed_is_not_reported_failed_when_its_connection_dies_after(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await backend.enqueue(task())

        async def committed_then_cut(conn: asyncpg.Connection) -> str:
            await conn.execute(f'UPDATE "{pg_schema}".tasks SET priority = 7')
            killer = await asyncpg.connect(pg_dsn)
            try:  # the server drops this connection after the transaction committed
                await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            finally:
                await killer.close()
            return "committed"

        assert await backend._call("test", committed_then_cut, transaction=False) == "committed"
        [stored] = await backend.list_tasks()
        assert stored.priority == 7


class CutAfterCommit(PostgresBackend):
    """The first enqueue commits, then its connection is lost before the answer arrives."""

    cut = True

    async def _call(self, operation: str, body: Any, *, transaction: bool = True) -> Any:
        result = await super()._call(operation, body, transaction=transaction)
        if operation == "enqueue" and self.cut:
            self.cut = False
            lost = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
            raise BackendError("PostgreSQL enqueue failed", operation=operation, backend_type="postgres", cause=lost)
        return result


@pytest.mark.asyncio
async def test_an_enqueue_whose_answer_was_lost_is_settled_by_its_ids(pg_dsn: str, pg_schema: str) -> None:
    async with CutAfterCommit(pg_dsn, schema=pg_schema) as backend:
        first = task()
        assert await backend.enqueue(first) == first.id  # stored once, not an error, not a duplicate
        assert [t.id for t in await backend.list_tasks()] == [first.id]
        taken = task()
        await backend.enqueue(taken)
        with pytest.raises(ValidationError):  # a real duplicate is still refused
            await backend.enqueue(taken)


class LosesTwoConnections(PostgresBackend):
    """A wave of killed sessions: the first two enqueue attempts lose their connection before running."""

    losses = 2

    async def _call(self, operation: str, body: Any, *, transaction: bool = True) -> Any:
        if operation == "enqueue" and self.losses:
            self.losses -= 1
            try:
                await body(_CutConnection())  # the statement is on its way when the connection dies
            except asyncpg.exceptions.ConnectionDoesNotExistError as lost:
                raise BackendError(
                    "PostgreSQL enqueue failed", operation=operation, backend_type="postgres", cause=lost
                ) from lost
        return await super()._call(operation, body, transaction=transaction)


class _CutConnection:
    """A pooled connection the server killed: the statement sent on it never gets an answer."""

    async def execute(self, *_args: Any) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")


@pytest.mark.asyncio
async def test_an_enqueue_survives_two_lost_connections_in_a_row(pg_dsn: str, pg_schema: str) -> None:
    async with LosesTwoConnections(pg_dsn, schema=pg_schema) as backend:
        first = task()
        assert await backend.enqueue(first) == first.id
        assert backend.losses == 0 and [t.id for t in await backend.list_tasks()] == [first.id]


def _refused(operation: str) -> ConnectionError:
    """What a call gets while the server refuses connections (nothing was sent)."""
    return ConnectionError(
        f"PostgreSQL {operation} failed: the server is out of reach",
        operation=operation,
        backend_type="postgres",
        cause=ConnectionRefusedError(111, "Connection refused"),
    )


class LostThenOutOfReach(CutAfterCommit):
    """The first enqueue commits and loses its answer; then the server is out of reach for ``outage`` calls."""

    outage = 6

    async def _call(self, operation: str, body: Any, *, transaction: bool = True) -> Any:
        if operation == "enqueue" and not self.cut and self.outage:
            self.outage -= 1
            raise _refused(operation)
        return await super()._call(operation, body, transaction=transaction)


@pytest.mark.asyncio
async def test_an_enqueue_whose_answer_was_lost_is_settled_after_an_outage(pg_dsn: str, pg_schema: str) -> None:
    """Three quick tries ran out during a short outage: the caller got ConnectionError for a stored task."""
    async with LostThenOutOfReach(pg_dsn, schema=pg_schema) as backend:
        first = task()
        assert await backend.enqueue(first) == first.id
        assert backend.outage == 0 and [t.id for t in await backend.list_tasks()] == [first.id]


class OutOfReach(PostgresBackend):
    """No connection can be had: the enqueue's statement is never sent."""

    async def _call(self, operation: str, body: Any, *, transaction: bool = True) -> Any:
        if operation == "enqueue":
            raise _refused(operation)
        return await super()._call(operation, body, transaction=transaction)


@pytest.mark.asyncio
async def test_an_enqueue_that_was_never_sent_fails_at_once_without_a_doubt(pg_dsn: str, pg_schema: str) -> None:
    """An outage at the pool was taken for a lost answer: 10 s of retries, then 'it may be stored'."""
    async with OutOfReach(pg_dsn, schema=pg_schema) as backend:
        began = time.monotonic()
        with pytest.raises(ConnectionError) as error:
            await backend.enqueue(task())
        assert time.monotonic() - began < 2 and "could not find out" not in str(error.value)


@pytest.mark.asyncio
async def test_an_enqueue_that_cannot_be_settled_says_it_may_be_stored_and_names_its_ids(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_ENQUEUE_SETTLE_MIN", 0.3)
    async with LostThenOutOfReach(pg_dsn, schema=pg_schema) as backend:
        backend.outage = 10**6  # the server does not come back
        backend.connect_timeout = 0.3
        first = task()
        with pytest.raises(ConnectionError, match="could not find out whether it was stored") as error:
            await backend.enqueue(first)
        assert error.value.context["task_ids"] == [first.id] and first.id in str(error.value)
        backend.outage = 0
        assert [t.id for t in await backend.list_tasks()] == [first.id]  # it was: the caller can check


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [0, 0.3])
async def test_get_result_keeps_its_timeout_while_the_store_stalls(pg_dsn: str, pg_schema: str, timeout: float) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
        assert await queue.get_result(task_id, timeout=0) is None
        locker = await asyncpg.connect(pg_dsn)
        transaction = locker.transaction()
        await transaction.start()
        try:  # a migration or VACUUM FULL elsewhere: every read of these tables waits
            await locker.execute(f'LOCK TABLE "{pg_schema}".tasks, "{pg_schema}".results IN ACCESS EXCLUSIVE MODE')
            answer = await asyncio.wait_for(queue.get_result(task_id, timeout=timeout), 20)
            assert answer is None  # returned while the lock is still held
        finally:
            await transaction.rollback()
            await locker.close()


class CountedReads(PostgresBackend):
    """Counts the queries that read results."""

    reads = 0

    async def _call(self, operation: str, body: Any, *, transaction: bool = True) -> Any:
        if operation == "get_result":
            self.reads += 1
        return await super()._call(operation, body, transaction=transaction)


@pytest.mark.asyncio
async def test_many_waiters_read_their_results_together(pg_dsn: str, pg_schema: str) -> None:
    backend = CountedReads(pg_dsn, schema=pg_schema, max_connections=2)
    async with TaskQueue(backend) as queue:
        ids = await queue.enqueue_many([(tasks.add, (i,)) for i in range(1500)])
        done = ids[:10]
        reserved = await backend.reserve(worker_id="w", limit=10, lease_seconds=30)
        await backend.finish_many(
            [Outcome(r.id, r.lease_token, "success", value=b"v", finished_at=datetime.now(UTC)) for r in reserved]
        )
        results = await asyncio.gather(*(queue.get_result(task_id, timeout=0) for task_id in ids))
        assert [r is not None for r in results] == [task_id in done for task_id in ids]
        assert backend.reads <= 3  # 1,500 waiters: two chunks of ids, not 1,500 queries


def skewed_backend(dsn: str, *, schema: str, skew: float) -> PostgresBackend:
    """A PostgresBackend on a machine whose clock runs ``skew`` seconds fast (both of its clock readings)."""
    machine = type(
        "SkewedBackend",
        (PostgresBackend,),
        {
            "clock": staticmethod(lambda: datetime.now(UTC) + timedelta(seconds=skew)),
            "wall_clock": staticmethod(lambda: time.time() + skew),
        },
    )
    return machine(dsn, schema=schema)  # type: ignore[no-any-return]


@pytest.mark.parametrize("skew", [20.0, -20.0])
@pytest.mark.asyncio
async def test_a_worker_with_a_skewed_clock_never_takes_a_live_lease(pg_dsn: str, pg_schema: str, skew: float) -> None:
    async with (
        PostgresBackend(pg_dsn, schema=pg_schema) as honest,
        skewed_backend(pg_dsn, schema=pg_schema, skew=skew) as skewed,
    ):
        assert abs((skewed.now() - datetime.now(UTC)).total_seconds()) < 1, "now() follows the server's clock"
        held = task()
        await honest.enqueue(held)
        [lease] = await honest.reserve(worker_id="honest", limit=1, lease_seconds=10)
        # before: the fast machine saw this 10 s lease as expired 10 s ago and took the task over
        assert await skewed.reserve(worker_id="skewed", limit=1, lease_seconds=10) == []
        assert await honest.finish_many([Outcome(lease.id, lease.lease_token, "success", value=b"v")]) == [True]
        result = await skewed.get_result(held.id)
        assert result is not None and result.attempts == 1
        assert abs((result.finished_at - datetime.now(UTC)).total_seconds()) < 1


@pytest.mark.asyncio
async def test_a_close_clock_is_left_exact(pg_dsn: str, pg_schema: str) -> None:
    """On a synchronised machine now() is clock() itself, so a test's fake clock keeps exact times."""
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        fixed = datetime(2030, 1, 1, tzinfo=UTC)
        backend.clock = lambda: fixed  # type: ignore[method-assign]
        assert backend.now() == fixed


@pytest.mark.asyncio
async def test_a_fake_clock_is_left_exact_whatever_the_servers_offset(pg_dsn: str, pg_schema: str) -> None:
    """The conformance kit drives backend.clock; a server 0.3 s off (a VM, a remote database) must not shift it."""
    machine = skewed_backend(pg_dsn, schema=pg_schema, skew=0.3)
    async with machine as backend:
        assert backend._clock_offset != timedelta(0)
        fixed = datetime(2030, 1, 1, tzinfo=UTC)
        backend.clock = lambda: fixed  # type: ignore[method-assign]
        assert backend.now() == fixed


@pytest.mark.asyncio
async def test_a_first_attempt_given_back_leaves_no_start_behind(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        queued = task()
        await backend.enqueue(queued)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert await backend.release(lease)
        stored = await backend.get_task(queued.id)
        assert stored is not None and (stored.attempts, stored.started_at, stored.worker_id) == (0, None, None)
        assert await backend.cancel(queued.id)
        result = await backend.get_result(queued.id)
        assert result is not None and (result.status, result.started_at, result.attempts) == ("cancelled", None, 0)


@pytest.mark.asyncio
async def test_an_abandoned_attempt_given_back_keeps_its_start(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        queued = task()
        await backend.enqueue(queued)
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        began = datetime.now(UTC).replace(microsecond=0)
        assert await backend.finish_many([Outcome(lease.id, lease.lease_token, "release", started_at=began)]) == [True]
        stored = await backend.get_task(queued.id)
        assert stored is not None and stored.status == TaskStatus.QUEUED
        assert (stored.started_at, stored.worker_id) == (began, "w")


@pytest.mark.asyncio
async def test_a_burst_of_first_calls_opens_one_pool(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web server's first requests after a deploy: each used to open a pool of its own (150 calls took 97
    server connections and 53 failed with "too many clients")."""
    opened: list[object] = []
    create_pool = asyncpg.create_pool

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return create_pool(*args, **kwargs)

    monkeypatch.setattr(pg_backend.asyncpg, "create_pool", counted)
    queue = TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema, max_connections=4))  # never connect()ed
    try:
        ids = await asyncio.gather(*(queue.enqueue(tasks.add, n) for n in range(60)))
        assert len(set(ids)) == 60 and (await queue.counts())["queued"] == 60
    finally:
        await queue.close()
    assert len(opened) == 1, f"{len(opened)} pools were opened for one event loop"


@pytest.mark.asyncio
async def test_a_fast_producers_first_enqueue_is_due_at_once(pg_dsn: str, pg_schema: str) -> None:
    """The queue connects (and so reads the server's clock) before it stamps its first task: that task was due
    30 s late when its times were read from the fast local clock before any connect."""
    queue = TaskQueue(skewed_backend(pg_dsn, schema=pg_schema, skew=30.0))  # never connect()ed
    try:
        first = await queue.enqueue(tasks.add, 1)
        async with PostgresBackend(pg_dsn, schema=pg_schema) as honest:
            leases = await honest.reserve(worker_id="honest", limit=5, lease_seconds=10)
        assert [lease.id for lease in leases] == [first]
    finally:
        await queue.close()


def test_a_fast_machines_sync_queue_stamps_its_first_task_by_the_server(pg_dsn: str, pg_schema: str) -> None:
    queue = SyncTaskQueue(skewed_backend(pg_dsn, schema=pg_schema, skew=30.0))  # never connected: on first use
    try:
        first = queue.enqueue(tasks.add, 1)
        stored = queue.get_task(first)
    finally:
        queue.close()
    assert stored is not None
    assert abs((stored.enqueued_at - datetime.now(UTC)).total_seconds()) < 5, "stamped by the fast local clock"


FOREIGN_TABLES = {
    "an app's meta and results": [
        "CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO {s}.meta VALUES ('owner', 'billing')",
        "CREATE TABLE {s}.results (id serial PRIMARY KEY, score int)",
    ],
    "an app's tasks": ["CREATE TABLE {s}.tasks (id serial PRIMARY KEY, title text)"],
    "an app's meta with its own version": [
        "CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO {s}.meta VALUES ('schema_version', 'app-v7')",
    ],
}


@pytest.mark.asyncio
@pytest.mark.parametrize("setup", list(FOREIGN_TABLES), ids=list(FOREIGN_TABLES))
async def test_a_schema_holding_an_apps_own_tables_is_refused_untouched(
    pg_dsn: str, pg_schema: str, setup: str
) -> None:
    """sitq wrote its version into an application's meta table, then could never store an outcome."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        for statement in FOREIGN_TABLES[setup]:
            await conn.execute(statement.format(s=f'"{pg_schema}"'))
        before = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
            pg_schema,
        )
        meta_before = await _meta_rows(conn, pg_schema)
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        with pytest.raises(ConnectionError, match="that sitq did not create; give sitq a schema of its own"):
            await backend.enqueue(Task(id="x" * 32, payload=b"p"))
        await backend.close()
        after = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
            pg_schema,
        )
        assert after == before and await _meta_rows(conn, pg_schema) == meta_before
    finally:
        await conn.close()


async def _meta_rows(conn: Any, schema: str) -> list[Any]:
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'meta')",
        schema,
    )
    return list(await conn.fetch(f'SELECT * FROM "{schema}".meta ORDER BY 1')) if exists else []


@pytest.mark.asyncio
async def test_a_schema_sitq_made_is_still_opened(pg_dsn: str, pg_schema: str) -> None:
    first = PostgresBackend(pg_dsn, schema=pg_schema)
    await first.enqueue(Task(id="a" * 32, payload=b"p"))
    await first.close()
    again = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        assert (await again.counts())["queued"] == 1
    finally:
        await again.close()


async def _sitq_schema_changed(pg_dsn: str, schema: str, statements: list[str]) -> Any:
    """Make sitq's tables in ``schema`` (empty), then change them with ``statements``; returns an admin connection."""
    async with PostgresBackend(pg_dsn, schema=schema) as backend:
        await backend.counts()
    admin = await asyncpg.connect(pg_dsn)
    for statement in statements:
        await admin.execute(statement.format(s=f'"{schema}"'))
    return admin


async def _columns(conn: Any, schema: str) -> list[Any]:
    return list(
        await conn.fetch(
            "SELECT table_name, column_name, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = $1 ORDER BY 1, 2",
            schema,
        )
    )


@pytest.mark.asyncio
async def test_columns_added_to_sitqs_tables_that_an_insert_may_leave_out_are_accepted(
    pg_dsn: str, pg_schema: str
) -> None:
    """As on SQLite (docs/how-to/postgres-backend.md): sitq names every column it reads and writes."""
    from sitq_core.backend import reading_only

    admin = await _sitq_schema_changed(
        pg_dsn,
        pg_schema,
        [
            "ALTER TABLE {s}.tasks ADD COLUMN app_note text",
            "ALTER TABLE {s}.tasks ADD COLUMN app_owner text NOT NULL DEFAULT 'ops'",
            "ALTER TABLE {s}.tasks ADD COLUMN app_n bigint GENERATED ALWAYS AS IDENTITY",
            "ALTER TABLE {s}.tasks ADD COLUMN app_id_length int GENERATED ALWAYS AS (length(id)) STORED",
            "CREATE DOMAIN {s}.app_tier AS text DEFAULT 'basic'",
            "ALTER TABLE {s}.tasks ADD COLUMN app_tier {s}.app_tier NOT NULL",  # the domain's default fills it
            "ALTER TABLE {s}.results ADD COLUMN app_reviewed boolean NOT NULL DEFAULT false",
        ],
    )
    try:
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        async with TaskQueue(backend) as queue:
            worker = Worker(backend, max_concurrency=4)
            await worker.start()
            try:
                ids = [await queue.enqueue(tasks.add, 1, 2)]
                ids += await queue.enqueue_many([(tasks.add, (i, i)) for i in range(20)])
                for task_id in ids:
                    assert await queue.get_result(task_id, timeout=10) is not None
            finally:
                await worker.stop()
            assert (await queue.counts())["success"] == len(ids)
        reader = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with reading_only():
                assert (await reader.counts())["success"] == len(ids)
        finally:
            await reader.close()
        owners = await admin.fetch(f'SELECT DISTINCT app_owner, app_tier FROM "{pg_schema}".tasks')
        assert [tuple(row) for row in owners] == [("ops", "basic")]
    finally:
        await admin.close()


CHANGED_TABLES = {
    "a required column": (
        [
            "ALTER TABLE {s}.tasks ADD COLUMN tenant text NOT NULL DEFAULT 'x'",
            "ALTER TABLE {s}.tasks ALTER COLUMN tenant DROP DEFAULT",
        ],
        "table tasks has column(s) sitq does not know that every insert would have to fill: tenant "
        "(NOT NULL without a DEFAULT",
    ),
    "a required column of results": (
        ["ALTER TABLE {s}.results ADD COLUMN reviewer text NOT NULL"],
        "table results has column(s) sitq does not know that every insert would have to fill: reviewer "
        "(NOT NULL without a DEFAULT",
    ),
    "a default of NULL": (  # a domain keeps it as written (a plain column drops it)
        [
            "CREATE DOMAIN {s}.tenant_name AS text",
            "ALTER TABLE {s}.tasks ADD COLUMN tenant {s}.tenant_name NOT NULL DEFAULT NULL",
        ],
        "table tasks has column(s) sitq does not know that every insert would have to fill: tenant "
        "(NOT NULL without a DEFAULT",
    ),
    "a dropped column": (
        ["ALTER TABLE {s}.tasks DROP COLUMN priority"],
        "table tasks lacks column(s) sitq needs: priority",
    ),
    "a dropped column of the old check": (
        ["ALTER TABLE {s}.tasks DROP COLUMN lease_token"],
        "table tasks lacks column(s) sitq needs: lease_token",
    ),
    "a renamed column": (
        ["ALTER TABLE {s}.results RENAME COLUMN traceback TO tb"],
        "table results lacks column(s) sitq needs: traceback (it has column(s) sitq does not know: tb)",
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("reading", [False, True], ids=["writing", "reading-only"])
@pytest.mark.parametrize("change", list(CHANGED_TABLES), ids=list(CHANGED_TABLES))
async def test_a_sitq_table_changed_so_sitq_cannot_use_it_is_refused_naming_table_and_columns(
    pg_dsn: str, pg_schema: str, change: str, reading: bool
) -> None:
    """A NOT NULL column without a default was accepted at connect, then every enqueue failed with
    NotNullViolationError; a dropped column either passed (priority) or was 'not made by sitq' (lease_token).
    Refused now at connect with SQLite's words, and nothing in the schema changed."""
    from sitq_core.backend import reading_only

    statements, said = CHANGED_TABLES[change]
    admin = await _sitq_schema_changed(pg_dsn, pg_schema, statements)
    try:
        before = (await _columns(admin, pg_schema), await _meta_rows(admin, pg_schema))
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with pytest.raises(ConnectionError) as info:
                if reading:
                    with reading_only():
                        await backend.counts()
                else:
                    await backend.enqueue(task())
        finally:
            await backend.close()
        message = str(info.value)
        assert f"PostgreSQL schema {pg_schema!r} holds sitq's tables, changed so that sitq cannot use them: " in message
        assert said in message and "nothing in this one was changed" in message
        assert "did not create" not in message and "not made by sitq" not in message
        assert (await _columns(admin, pg_schema), await _meta_rows(admin, pg_schema)) == before
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_a_fresh_schema_has_exactly_the_columns_sitq_checks(pg_dsn: str, pg_schema: str) -> None:
    """The column lists the connect check compares with are those the DDL makes, and every earlier schema
    version keeps its own (a schema is checked against its version's columns before it is migrated)."""
    from sitq_postgres import schema as pg_schema_module

    admin = await _sitq_schema_changed(pg_dsn, pg_schema, [])
    try:
        made: dict[str, list[str]] = {}
        for row in await _columns(admin, pg_schema):
            made.setdefault(row[0], []).append(row[1])
    finally:
        await admin.close()
    assert made == {table: sorted(columns) for table, columns in pg_schema_module.COLUMNS.items()}
    assert set(pg_schema_module.EARLIER_COLUMNS) == set(range(1, pg_schema_module.SCHEMA_VERSION))


@pytest.mark.asyncio
async def test_a_schema_is_checked_against_the_columns_of_its_own_version(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: a version 2 adds app_v2_flag to tasks. A version-1 schema is not refused for lacking it (its
    migration would add it), yet it is still checked against the columns of version 1."""
    from sitq_postgres import schema as pg_schema_module

    admin = await _sitq_schema_changed(pg_dsn, pg_schema, [])
    current = dict(pg_schema_module.COLUMNS)
    monkeypatch.setattr(pg_schema_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(pg_schema_module, "COLUMNS", {**current, "tasks": (*current["tasks"], "app_v2_flag")})
    monkeypatch.setattr(pg_schema_module, "EARLIER_COLUMNS", {1: current})
    try:
        async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
            assert (await backend.counts())["queued"] == 0
        await admin.execute(f'ALTER TABLE "{pg_schema}".tasks DROP COLUMN lease_token')
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        try:
            with pytest.raises(ConnectionError, match=r"table tasks lacks column\(s\) sitq needs: lease_token; put"):
                await backend.counts()
        finally:
            await backend.close()
    finally:
        await admin.close()


@pytest.mark.parametrize("schema", ["pg_jobs", "information_schema", "Jobs", "1jobs", "j" * 42, "", 5])
def test_a_schema_name_postgresql_would_refuse_is_a_validation_error_when_the_backend_is_made(schema: Any) -> None:
    """pg_h3 used to pass, then fail at the first call as a ConnectionError ('unacceptable schema name')."""
    with pytest.raises(ValidationError) as info:
        PostgresBackend("postgresql://postgres@127.0.0.1/test", schema=schema)
    assert info.value.parameter == "schema"


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["reserve", "heartbeat"])
async def test_a_lease_counts_from_when_the_call_got_its_connection(pg_dsn: str, pg_schema: str, call: str) -> None:
    """A lease counted from before a wait for a pooled connection was granted already expired."""
    from sitq_core.testing.clock import FakeClock

    clock = FakeClock()
    a = PostgresBackend(pg_dsn, schema=pg_schema, max_connections=1)
    b = PostgresBackend(pg_dsn, schema=pg_schema)
    a.clock = b.clock = clock
    try:
        first = Task(id=new_id(), payload=b"p", eta=clock.now(), enqueued_at=clock.now())
        await a.enqueue(first)
        held = None
        if call == "heartbeat":
            [held] = await a.reserve(worker_id="a", limit=1, lease_seconds=30)
        pool = await a._pool()
        busy = await pool.acquire()  # the pool's only connection is in use elsewhere
        try:
            if call == "reserve":
                waiting: Any = asyncio.ensure_future(a.reserve(worker_id="a", limit=1, lease_seconds=30))
            else:
                assert held is not None
                waiting = asyncio.ensure_future(a.heartbeat([(held.id, held.lease_token)], 30))
            await asyncio.sleep(0)  # the call has begun and waits for a connection
            clock.advance(60)  # the wait outlasts the lease
        finally:
            await pool.release(busy)
        outcome = await waiting
        if call == "heartbeat":
            assert outcome == {first.id: pg_backend.LeaseState.HELD}
        else:
            assert [r.id for r in outcome] == [first.id]
            assert outcome[0].lease_expires_at == clock.now() + timedelta(seconds=30)
        assert await b.reserve(worker_id="b", limit=1, lease_seconds=30) == [], "the lease is still a's"
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_a_cancelled_calls_connection_that_cannot_be_dropped_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """'Task exception was never retrieved ... sitq-postgres-give-back ... connection has been released back to
    the pool' was printed when the give-back failed and asyncpg had already taken the connection back."""
    import gc

    class Pool:
        async def release(self, conn: object, timeout: float) -> None:
            raise asyncpg.InterfaceError("the release timed out")

    class Conn:
        def terminate(self) -> None:
            raise asyncpg.InterfaceError("cannot call Connection.terminate(): connection has been released back")

    giving_back = pg_backend._give_back_later(Pool(), Conn(), pg_backend._Releases())  # type: ignore[arg-type]
    await asyncio.wait({giving_back})
    assert giving_back not in pg_backend._giving_back
    del giving_back  # a task whose error nobody took says so when it goes
    gc.collect()
    assert "never retrieved" not in caplog.text


@pytest.mark.asyncio
async def test_connections_the_server_cuts_surface_as_connection_errors(pg_dsn: str, pg_schema: str) -> None:
    """asyncpg's 'cannot switch to state' on a connection the server ended came out as a plain BackendError."""
    name = f"sitq_cut_{new_id()[-8:]}"
    admin = await asyncpg.connect(pg_dsn)
    wrong: list[str] = []
    try:
        dsn = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={name}"
        async with TaskQueue(PostgresBackend(dsn, schema=pg_schema, min_connections=4)) as q:
            for round_ in range(20):
                await asyncio.gather(*(q.counts() for _ in range(4)), return_exceptions=True)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name
                )
                await asyncio.sleep(0.002 * (round_ % 5))  # the cut lands at another moment of the next call
                try:
                    await q.counts()
                except ConnectionError:
                    pass  # what a caller that retries catches
                except BackendError as exc:
                    wrong.append(str(exc))
    finally:
        await admin.close()
    assert wrong == []


@pytest.mark.asyncio
async def test_a_transaction_whose_connection_the_server_cuts_is_a_connection_error(
    pg_dsn: str, pg_schema: str
) -> None:
    """'cannot call Transaction.__aexit__(): the underlying connection is closed' came out as a BackendError."""
    name = f"sitq_cutx_{new_id()[-8:]}"
    admin = await asyncpg.connect(pg_dsn)
    wrong: list[str] = []
    cuts = 0
    try:
        dsn = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={name}"
        async with TaskQueue(PostgresBackend(dsn, schema=pg_schema)) as q:
            task_id = await q.enqueue(tasks.add, 1)
            stop = asyncio.Event()

            async def cut_often() -> None:
                while not stop.is_set():
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name
                    )
                    await asyncio.sleep(0.01)

            killer = asyncio.create_task(cut_often())
            deadline = time.monotonic() + 4
            try:
                while time.monotonic() < deadline:
                    for call in (lambda: q.cancel(task_id), lambda: q.requeue(task_id), q.purge):
                        try:
                            await call()
                        except ConnectionError:
                            cuts += 1  # what a caller that retries catches
                        except BackendError as exc:
                            wrong.append(str(exc))
            finally:
                stop.set()
                await killer
    finally:
        await admin.close()
    assert cuts > 0, "no call was cut: the test did not test anything"
    assert wrong == []


@pytest.mark.asyncio
async def test_a_poison_pill_ended_in_reserve_reaches_the_failed_hook(pg_dsn: str, pg_schema: str) -> None:
    from sitq import hookimpl
    from sitq_core.plugins import get_plugin_manager

    seen: list[tuple[str, str, bool]] = []

    class Endings:
        @hookimpl
        def sitq_task_failed(self, task: Task, error: Any, will_retry: bool) -> None:
            seen.append((task.id, str(error), will_retry))

    get_plugin_manager().register_plugin(Endings(), "pg-endings")
    try:
        from sitq_core.testing.clock import FakeClock

        clock = FakeClock()
        backend = PostgresBackend(pg_dsn, schema=pg_schema)
        backend.clock = clock
        async with backend:
            pill = Task(id=new_id(), payload=b"p", max_lease_expiries=1, eta=clock.now(), enqueued_at=clock.now())
            await backend.enqueue(pill)
            await backend.reserve(worker_id="dies", limit=1, lease_seconds=30)  # its worker is killed
            clock.advance(31)
            assert await backend.reserve(worker_id="next", limit=1, lease_seconds=30) == []
        assert seen == [(pill.id, "lease expired after 1 attempts", False)]
    finally:
        get_plugin_manager().unregister_plugin("pg-endings")


@pytest.mark.asyncio
@pytest.mark.parametrize("make", ["TaskQueue", "sitq.connect"])
async def test_a_queue_dropped_unclosed_gives_its_server_connections_back(
    pg_dsn: str, pg_schema: str, make: str
) -> None:
    """Each TaskQueue(url) made per request and forgotten held a server connection until its loop ended
    (and each sitq.connect(url) did for good)."""
    import gc
    import warnings

    import sitq

    name = f"sitq_drop_{new_id()[-8:]}"
    url = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name={name}&schema={pg_schema}"
    admin = await asyncpg.connect(pg_dsn)

    async def sessions() -> int:
        return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            for i in range(12):
                queue = TaskQueue(url) if make == "TaskQueue" else sitq.connect(url)
                await queue.enqueue(tasks.add, i)  # connected, then forgotten
                del queue
                gc.collect()
        await wait_until(lambda: sessions_below(sessions, 3), timeout=10)
    finally:
        await admin.close()


async def sessions_below(count: Any, limit: int) -> bool:
    return bool(await count() < limit)


@pytest.mark.asyncio
async def test_a_call_too_big_for_a_field_names_args_and_stores_nothing(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_backend, "_FIELD_LIMIT", 50_000)  # as if 1 GiB: the same path, a small value
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        with pytest.raises(ValidationError) as caught:
            await queue.enqueue(len, b"x" * 100_000)
        assert caught.value.parameter == "args"
        assert "more than a PostgreSQL database can store in one row" in str(caught.value)
        with pytest.raises(ValidationError) as many:
            await queue.enqueue_many([(len, ("small",)), (len, (b"x" * 100_000,))])
        assert many.value.parameter == "calls"
        assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_close_lets_calls_already_under_way_finish(pg_dsn: str, pg_schema: str) -> None:
    """Enqueues in flight when close() came failed with 'pool is closing' (SQLite finished them all)."""
    queue = TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema, max_connections=2))
    await queue.connect()
    enqueues = [asyncio.ensure_future(queue.enqueue(tasks.add, n, 1)) for n in range(20)]
    await asyncio.sleep(0)  # every one is under way (most wait for one of the two connections)
    await queue.close()
    outcomes = await asyncio.gather(*enqueues, return_exceptions=True)
    assert all(isinstance(outcome, str) for outcome in outcomes), outcomes
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as again:
        assert (await again.counts())["queued"] == 20


@pytest.mark.asyncio
async def test_gathered_waiters_share_their_safety_re_reads(pg_dsn: str, pg_schema: str) -> None:
    """Gathered waiters on an unfinished task re-read together, not each on its own jittered schedule.

    Each waiter drew its own +-10% jitter for its 1 s / 2 s / 4 s / 5 s safety-net re-reads, so they
    drifted out of the shared read of a loop turn: 1,000 gathered waiters made ~1,700 reads in 12 s.
    """
    backend = CountedReads(pg_dsn, schema=pg_schema)
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(tasks.add, 1, 2)  # no worker: it stays queued
        await queue.get_result(task_id, timeout=0)  # the listener is up
        backend.reads = 0
        results = await asyncio.gather(*(queue.get_result(task_id, timeout=2.5) for _ in range(100)))
        assert results == [None] * 100
        # a first read, the re-read after about a second, the last ones at the deadlines (each waiter's
        # own, spread over the few ms the waiters took to start: a few turns); each maybe split in two by
        # a read already under way as the rest of the waiters join. 75 when each re-read on its own.
        assert backend.reads <= 20, f"{backend.reads} result reads for 100 gathered waiters in 2.5 s"


@pytest.mark.asyncio
@pytest.mark.parametrize("reading", [False, True], ids=["writing", "reading-only"])
async def test_a_schema_written_by_a_newer_sitq_is_refused(pg_dsn: str, pg_schema: str, reading: bool) -> None:
    from sitq_core.backend import reading_only

    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        await queue.counts()  # the schema is made
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"UPDATE {pg_schema}.meta SET value = '99' WHERE key = 'schema_version'")
    finally:
        await admin.close()
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    with pytest.raises(ConnectionError, match="schema version 99, newer than this"):
        if reading:
            with reading_only():
                await backend.connect()
        else:
            await backend.connect()
    await backend.close()


def _guide_sql(section: str) -> list[str]:
    """The statements of the ```sql blocks of one section of the PostgreSQL guide."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "postgres-backend.md").read_text()
    text = guide.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sql\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    return [statement.strip() for block in blocks for statement in block.split(";") if statement.strip()]


@pytest.mark.asyncio
async def test_the_guides_vacuum_and_session_statements_run_on_sitqs_tables(pg_dsn: str, pg_schema: str) -> None:
    """The guide's maintenance SQL, as written but for the schema's name, runs on the tables sitq made."""
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as q:
        await q.enqueue(tasks.add, 1, 2)
        await q.purge()
    statements = _guide_sql("Table growth and VACUUM") + _guide_sql("Telling sitq's sessions apart")
    assert len(statements) == 6
    conn = await asyncpg.connect(pg_dsn)
    try:
        for statement in statements:  # one at a time: VACUUM and REINDEX CONCURRENTLY refuse a transaction
            await conn.execute(statement.replace("sitq.", f'"{pg_schema}".'))
        options = await conn.fetchval(
            "SELECT reloptions FROM pg_class WHERE oid = $1::regclass", f'"{pg_schema}".tasks'
        )
    finally:
        await conn.close()
    assert "autovacuum_vacuum_scale_factor=0.01" in options


@pytest.mark.asyncio
async def test_a_statement_refused_on_a_connection_ended_while_idle_runs_again_at_once(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer whose sessions were terminated logged "enqueue lost its connection (cannot switch to state 12;
    another operation (2) is in progress); trying again": the server's goodbye had come in while the pooled
    connection lay idle, and asyncpg refused the next statement before sending it. Nothing reached the server,
    so it runs again on another connection, without the warning and the pause for a statement of unknown fate."""
    caplog.set_level(logging.INFO, logger="sitq.postgres")
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with PostgresBackend(pg_dsn, schema=pg_schema, min_connections=1, max_connections=1) as backend:
            await backend.enqueue(task())
            # the moment depends on the order of reads in the loop's turns: on a loaded machine the end of the
            # socket is sometimes read first (the pool then simply opens another connection, as it should),
            # so the setup is tried again until the refused-before-sending case has happened once
            for _ in range(20):
                pool = await backend._pool()
                async with pool.acquire() as conn:
                    pid = conn.get_server_pid()
                    sock = conn._con._transport.get_extra_info("socket")
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                if sock.fileno() == -1:  # the loop read the session's end while the admin's answer came: as above
                    continue
                # the loop does not run: the goodbye, and then the end of the socket, arrive before it reads them
                assert select.select([sock], [], [], 10)[0], "the server did not end the session"
                time.sleep(0.1)  # noqa: ASYNC251
                # Two turns of the loop: in the first the goodbye is read (asyncpg's protocol is left waiting
                # for the end of an operation); the enqueue runs in the second, before the socket's end is read.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                stored = task()
                await backend.enqueue(stored)
                assert await backend.get_task(stored.id) is not None
                if "the statement was not sent" in caplog.text:
                    break
    finally:
        await admin.close()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "cannot switch to state" not in caplog.text
    assert "the statement was not sent" in caplog.text
