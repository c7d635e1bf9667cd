"""The Backend contract at API level, on a real file and a real :memory: database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq_core.errors import ValidationError
from sitq_core.models import LeaseState, Outcome, Task, TaskStatus, new_id
from sitq_core.testing.clock import FakeClock
from sitq_sqlite import SQLiteBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["file", "memory"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> SQLiteBackend:
    path = tmp_path / "tasks.db" if request.param == "file" else ":memory:"
    backend = SQLiteBackend(path)
    backend.clock = clock
    return backend


@pytest_asyncio.fixture
async def backend(make_backend: SQLiteBackend) -> AsyncIterator[SQLiteBackend]:
    async with make_backend:
        yield make_backend


def task(clock: FakeClock, **changes: object) -> Task:
    fields: dict[str, object] = {"payload": b"payload", "eta": clock.now(), "enqueued_at": clock.now()}
    fields.update(changes)
    return Task(id=new_id(), **fields)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_enqueue_round_trips_every_field(backend: SQLiteBackend, clock: FakeClock) -> None:
    original = task(
        clock,
        payload=bytes(range(256)),
        serializer="msgpack",
        function_name="app:f",
        queue="emails",
        priority=-3,
        eta=clock.now() + timedelta(seconds=5, microseconds=7),
        max_retries=2,
        retry_backoff=1.5,
        timeout=3.25,
        max_lease_expiries=9,
    )
    assert await backend.enqueue(original) == original.id
    assert await backend.get_task(original.id) == original
    assert await backend.get_task("unknown") is None
    assert await backend.get_result(original.id) is None


@pytest.mark.asyncio
async def test_enqueue_keeps_the_state_of_a_task_that_has_run_before(backend: SQLiteBackend, clock: FakeClock) -> None:
    # A never-run task takes a shorter INSERT (its state columns keep their defaults); one carrying
    # state (moved from another store, say) must keep every field, whichever statement stores it.
    carried = task(
        clock,
        attempts=2,
        lease_expiries=1,
        started_at=clock.now() - timedelta(seconds=3),
        worker_id="old-worker",
        error="boom",
        cancel_requested=True,
    )
    fresh = task(clock)
    assert await backend.enqueue(carried) == carried.id
    assert await backend.enqueue(fresh) == fresh.id
    assert await backend.get_task(carried.id) == carried
    stored = await backend.get_task(fresh.id)
    assert stored == fresh
    assert stored is not None and (stored.attempts, stored.error, stored.cancel_requested) == (0, None, False)


@pytest.mark.asyncio
async def test_enqueue_many_is_atomic(backend: SQLiteBackend, clock: FakeClock) -> None:
    first = task(clock)
    await backend.enqueue(first)
    batch = [task(clock), first.with_changes(payload=b"other"), task(clock)]
    with pytest.raises(ValidationError) as info:
        await backend.enqueue_many(batch)
    assert info.value.parameter == "tasks"
    assert (await backend.counts())["queued"] == 1
    assert (await backend.get_task(first.id)) == first  # the stored one is untouched
    twice = task(clock)
    with pytest.raises(ValidationError):
        await backend.enqueue_many([twice, twice])
    assert await backend.enqueue_many([]) == []
    with pytest.raises(ValidationError):
        await backend.enqueue(task(clock, eta=clock.now().replace(tzinfo=None)))
    assert (await backend.counts())["queued"] == 1


@pytest.mark.asyncio
async def test_reserve_order_priority_eta_then_enqueue_order(backend: SQLiteBackend, clock: FakeClock) -> None:
    now = clock.now()
    low = task(clock, priority=0)
    high = task(clock, priority=5)
    early = task(clock, priority=1, eta=now - timedelta(seconds=10))
    late = task(clock, priority=1, eta=now - timedelta(seconds=1))
    same = [task(clock, priority=1, eta=now) for _ in range(3)]
    future = task(clock, priority=9, eta=now + timedelta(seconds=30))
    other_queue = task(clock, priority=7, queue="other")
    await backend.enqueue_many([low, *same, late, high, early, future, other_queue])
    got = await backend.reserve(worker_id="w", limit=10, lease_seconds=300, queues=["default"])
    assert [r.id for r in got] == [high.id, early.id, late.id, *(t.id for t in same), low.id]
    assert (await backend.reserve(worker_id="w", limit=5, lease_seconds=300, queues=["default"])) == []
    got = await backend.reserve(worker_id="w", limit=5, lease_seconds=300)
    assert [r.id for r in got] == [other_queue.id]
    assert await backend.next_eta() == future.eta
    clock.advance(30)
    got = await backend.reserve(worker_id="w", limit=5, lease_seconds=300)
    assert [r.id for r in got] == [future.id]


@pytest.mark.asyncio
async def test_reserve_merges_queues_by_priority(backend: SQLiteBackend, clock: FakeClock) -> None:
    a = [task(clock, queue="a", priority=p) for p in (1, 3)]
    b = [task(clock, queue="b", priority=p) for p in (2, 4)]
    c = task(clock, queue="c", priority=9)
    await backend.enqueue_many([*a, *b, c])
    got = await backend.reserve(worker_id="w", limit=10, lease_seconds=30, queues=["a", "b"])
    assert [r.task.priority for r in got] == [4, 3, 2, 1]
    assert await backend.reserve(worker_id="w", limit=1, lease_seconds=30, queues=[]) == []


@pytest.mark.asyncio
async def test_reserve_records_the_lease(backend: SQLiteBackend, clock: FakeClock) -> None:
    queued = task(clock)
    await backend.enqueue(queued)
    (lease,) = await backend.reserve(worker_id="w1", limit=3, lease_seconds=30)
    assert lease.lease_expires_at == clock.now() + timedelta(seconds=30)
    assert lease.task.attempts == 1 and lease.task.status == TaskStatus.RUNNING
    stored = await backend.get_task(queued.id)
    assert stored is not None
    assert stored.status == TaskStatus.RUNNING
    assert stored.worker_id == "w1" and stored.started_at == clock.now() and stored.attempts == 1
    for bad in ({"limit": 0}, {"lease_seconds": 0}, {"lease_seconds": -1.0}):
        kwargs: dict[str, object] = {"worker_id": "w", "limit": 1, "lease_seconds": 1.0, **bad}
        with pytest.raises(ValidationError):
            await backend.reserve(**kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_one_batch_with_stale_duplicate_and_unreadable_outcomes(backend: SQLiteBackend, clock: FakeClock) -> None:
    """Each outcome is judged on its own lease: a stale one before a valid one for the same task must not
    hide the valid one, a repeat of an accepted lease is refused, a garbage token matches nothing."""
    await backend.enqueue_many([task(clock) for _ in range(3)])
    leases = await backend.reserve(worker_id="w", limit=3, lease_seconds=30)
    done = [Outcome(task_id=x.id, lease_token=x.lease_token, kind="success", value=b"v") for x in leases]
    forged = leases[1].lease_token[:-1] + ("1" if leases[1].lease_token[-1] == "0" else "0")
    stale = Outcome(task_id=leases[1].id, lease_token=forged, kind="failed", error="stale")
    garbage = Outcome(task_id=leases[2].id, lease_token="zz", kind="failed", error="garbage")
    borrowed = Outcome(task_id=leases[2].id, lease_token=leases[0].lease_token, kind="failed", error="other's token")
    accepted = await backend.finish_many([done[0], done[0], stale, garbage, borrowed, done[1]])
    assert accepted == [True, False, False, False, False, True]
    first, second = await backend.get_result(leases[0].id), await backend.get_result(leases[1].id)
    assert first is not None and second is not None and (first.status, second.status) == ("success", "success")
    assert await backend.get_result(leases[2].id) is None
    assert await backend.finish_many([done[0], done[2]]) == [False, True]


@pytest.mark.asyncio
async def test_heartbeat_and_fencing(backend: SQLiteBackend, clock: FakeClock) -> None:
    await backend.enqueue(task(clock))
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=10)
    clock.advance(5)
    states = await backend.heartbeat([(lease.id, lease.lease_token), (lease.id + "x", "t")], 10)
    assert states == {lease.id: LeaseState.HELD, lease.id + "x": LeaseState.LOST}
    clock.advance(12)  # expired: another worker takes it over
    (second,) = await backend.reserve(worker_id="w2", limit=1, lease_seconds=10)
    assert second.id == lease.id and second.lease_token != lease.lease_token
    assert second.task.lease_expiries == 1 and second.task.attempts == 2
    assert await backend.heartbeat([(lease.id, lease.lease_token)], 10) == {lease.id: LeaseState.LOST}
    assert await backend.complete(lease, b"stale") is False
    assert await backend.complete(second, b"fresh") is True
    assert await backend.complete(second, b"again") is False
    result = await backend.get_result(lease.id)
    assert result is not None
    assert result.value == b"fresh" and result.status == "success" and result.attempts == 2
    assert result.finished_at == clock.now() and result.started_at is not None
    assert result.finished_at.tzinfo == UTC


@pytest.mark.asyncio
async def test_finish_many_group_commit_in_order(backend: SQLiteBackend, clock: FakeClock) -> None:
    await backend.enqueue_many([task(clock) for _ in range(4)])
    leases = await backend.reserve(worker_id="w", limit=4, lease_seconds=30)
    outcomes = [
        Outcome(leases[0].id, leases[0].lease_token, "success", value=b"1"),
        Outcome(leases[1].id, leases[1].lease_token, "failed", error="boom", traceback="tb"),
        Outcome(leases[2].id, "stale-token", "success"),
        Outcome(leases[0].id, leases[0].lease_token, "failed", error="late"),
        Outcome(leases[3].id, leases[3].lease_token, "cancelled", error="cancelled"),
    ]
    assert await backend.finish_many(outcomes) == [True, True, False, False, True]
    failed = await backend.get_result(leases[1].id)
    assert failed is not None and failed.error == "boom" and failed.traceback == "tb"
    counts = await backend.counts()
    assert counts == {"queued": 0, "running": 1, "success": 1, "failed": 1, "cancelled": 1}
    with pytest.raises(ValidationError):
        await backend.finish_many([Outcome(leases[2].id, leases[2].lease_token, "bogus")])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_retry_and_release(backend: SQLiteBackend, clock: FakeClock) -> None:
    queued = task(clock, max_retries=3)
    await backend.enqueue(queued)
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    later = clock.now() + timedelta(seconds=60)
    assert await backend.retry(lease, later, "flaky", "tb")
    stored = await backend.get_task(queued.id)
    assert stored is not None
    assert stored.status == TaskStatus.QUEUED and stored.eta == later
    assert stored.error == "flaky" and stored.attempts == 1
    assert await backend.reserve(worker_id="w", limit=1, lease_seconds=30) == []
    assert await backend.next_eta() == later
    clock.advance(60)
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    assert lease.task.attempts == 2
    assert await backend.release(lease)
    stored = await backend.get_task(queued.id)
    assert stored is not None and stored.status == TaskStatus.QUEUED and stored.attempts == 1
    (again,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    assert again.task.attempts == 2
    assert await backend.release(lease) is False  # stale token


@pytest.mark.asyncio
async def test_cancel_queued_and_running(backend: SQLiteBackend, clock: FakeClock) -> None:
    first, second = task(clock), task(clock)
    await backend.enqueue_many([first, second])
    (running,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    queued_id = second.id if running.id == first.id else first.id
    assert await backend.cancel(queued_id) is True
    result = await backend.get_result(queued_id)
    assert result is not None and result.status == "cancelled" and result.error == "cancelled"
    assert await backend.cancel(queued_id) is False
    assert await backend.cancel("unknown") is False
    assert await backend.cancel(running.id) is True
    stored = await backend.get_task(running.id)
    assert stored is not None and stored.cancel_requested and stored.status == TaskStatus.RUNNING
    states = await backend.heartbeat([(running.id, running.lease_token)], 30)
    assert states[running.id] == LeaseState.CANCEL_REQUESTED
    assert await backend.finish_many([Outcome(running.id, running.lease_token, "cancelled", error="cancelled")])
    assert await backend.cancel(running.id) is False


@pytest.mark.asyncio
async def test_requeue(backend: SQLiteBackend, clock: FakeClock) -> None:
    queued = task(clock)
    await backend.enqueue(queued)
    assert await backend.requeue(queued.id) is False  # not final
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    await backend.fail(lease, "broken")
    later = clock.now() + timedelta(seconds=5)
    assert await backend.requeue(queued.id, eta=later) is True
    stored = await backend.get_task(queued.id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.error, stored.eta) == (TaskStatus.QUEUED, 0, None, later)
    assert await backend.get_result(queued.id) is None
    assert await backend.requeue("unknown") is False
    with pytest.raises(ValidationError):
        await backend.requeue(queued.id, eta=later.replace(tzinfo=None))


@pytest.mark.asyncio
async def test_poison_pill(backend: SQLiteBackend, clock: FakeClock) -> None:
    queued = task(clock, max_lease_expiries=2)
    await backend.enqueue(queued)
    (_first,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=10)
    clock.advance(11)
    (second,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=10)
    assert second.task.lease_expiries == 1
    clock.advance(11)
    assert await backend.reserve(worker_id="w", limit=1, lease_seconds=10) == []
    stored = await backend.get_task(queued.id)
    assert stored is not None and stored.status == TaskStatus.FAILED
    assert stored.error == "lease expired after 2 attempts"
    result = await backend.get_result(queued.id)
    assert result is not None and result.status == "failed" and result.error == stored.error
    assert await backend.complete(second, b"late") is False


@pytest.mark.asyncio
async def test_poison_pill_does_not_use_up_the_limit(backend: SQLiteBackend, clock: FakeClock) -> None:
    poison = task(clock, max_lease_expiries=1, priority=5)
    healthy = task(clock)
    await backend.enqueue_many([poison, healthy])
    await backend.reserve(worker_id="w", limit=1, lease_seconds=10)
    clock.advance(11)
    got = await backend.reserve(worker_id="w", limit=1, lease_seconds=10)
    assert [r.id for r in got] == [healthy.id]


@pytest.mark.asyncio
async def test_list_counts_purge(backend: SQLiteBackend, clock: FakeClock) -> None:
    tasks = [task(clock, queue="a" if i % 2 else "b") for i in range(6)]
    await backend.enqueue_many(tasks)
    assert [t.id for t in await backend.list_tasks()] == [t.id for t in tasks]
    assert [t.id for t in await backend.list_tasks(queue="a", limit=2, offset=1)] == [tasks[3].id, tasks[5].id]
    leases = await backend.reserve(worker_id="w", limit=3, lease_seconds=30)
    await backend.complete(leases[0], b"1")
    clock.advance(100)
    await backend.complete(leases[1], b"2")
    assert (await backend.counts(queue="a"))["queued"] == 2  # reserved: tasks 0 (b), 1 (a), 2 (b)
    assert await backend.counts() == {"queued": 3, "running": 1, "success": 2, "failed": 0, "cancelled": 0}
    assert [t.id for t in await backend.list_tasks(status="success")] == [leases[0].id, leases[1].id]
    for kwargs in ({"status": "bogus"}, {"limit": -1}, {"offset": -1}):
        with pytest.raises(ValidationError):
            await backend.list_tasks(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as info:
        await backend.purge(older_than=clock.now().replace(tzinfo=None))
    assert info.value.parameter == "older_than"
    assert await backend.purge(older_than=clock.now() - timedelta(seconds=50)) == 1
    assert await backend.get_result(leases[0].id) is None
    assert await backend.get_task(leases[0].id) is None
    assert await backend.purge() == 1
    assert sum((await backend.counts()).values()) == 4  # queued and running are never purged


@pytest.mark.asyncio
async def test_wait_for_result_in_process(backend: SQLiteBackend, clock: FakeClock) -> None:
    await backend.enqueue(task(clock))
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    assert await backend.wait_for_result(lease.id, 0) is None
    import asyncio

    waiter = asyncio.create_task(backend.wait_for_result(lease.id, 10))
    await asyncio.sleep(0)
    await backend.complete(lease, b"done")
    result = await asyncio.wait_for(waiter, 5)
    assert result is not None and result.value == b"done"


@pytest.mark.asyncio
async def test_wait_for_work_wakes_on_enqueue(backend: SQLiteBackend, clock: FakeClock) -> None:
    import asyncio
    import time

    await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    waiter = asyncio.create_task(backend.wait_for_work(10))
    await asyncio.sleep(0)
    start = time.monotonic()
    await backend.enqueue(task(clock))
    await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - start < 2


@pytest.mark.asyncio
async def test_two_workers_sharing_one_backend_keep_their_own_reserve_marks(
    backend: SQLiteBackend, clock: FakeClock
) -> None:
    import asyncio

    a_reserved, b_done = asyncio.Event(), asyncio.Event()

    async def worker_a() -> None:
        assert await backend.reserve(worker_id="A", limit=1, lease_seconds=30, queues=["a"]) == []
        a_reserved.set()
        await b_done.wait()
        await asyncio.wait_for(backend.wait_for_work(30), 5)  # its work came after its reserve began

    async def worker_b() -> None:
        await a_reserved.wait()
        await backend.enqueue(task(clock, queue="a"))
        assert await backend.reserve(worker_id="B", limit=1, lease_seconds=30, queues=["b"]) == []
        await asyncio.wait_for(backend.wait_for_work(0.05), 5)
        b_done.set()

    await asyncio.gather(asyncio.create_task(worker_a()), asyncio.create_task(worker_b()))


@pytest.mark.parametrize("path", ["one pass", "lane by lane"])
@pytest.mark.asyncio
async def test_many_queues_and_priorities_are_reserved_in_order(
    backend: SQLiteBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """About 100 lanes: read in one pass (over _MAX_LANES) or lane by lane, with the same order and filters."""
    from datetime import timedelta

    import sitq_sqlite.claims as claims

    monkeypatch.setattr(claims, "_SCAN_ROWS_PER_LANE", 10**9 if path == "one pass" else 0)
    now = clock.now()
    tasks = [
        task(clock, queue=f"tenant-{i % 90}", priority=i % 7, eta=now - timedelta(seconds=i % 5)) for i in range(192)
    ]
    later = task(clock, queue="tenant-later", eta=now + timedelta(hours=1))
    await backend.enqueue_many([*tasks, later])
    wanted = {f"tenant-{i}" for i in range(0, 90, 2)}
    position = {t.id: i for i, t in enumerate(tasks)}
    expected = sorted((t for t in tasks if t.queue in wanted), key=lambda t: (-t.priority, t.eta, position[t.id]))
    got = await backend.reserve(worker_id="w", limit=500, lease_seconds=30, queues=sorted(wanted))
    assert [r.id for r in got] == [t.id for t in expected]
    rest = await backend.reserve(worker_id="w", limit=500, lease_seconds=30)
    assert {r.id for r in rest} == {t.id for t in tasks if t.queue not in wanted}  # not the later one
    assert await backend.next_eta() == now + timedelta(seconds=30)  # the leases' expiry, before the later task
    assert await backend.next_eta(["tenant-later", *sorted(wanted)]) == now + timedelta(seconds=30)
    assert await backend.next_eta(["tenant-later"]) == now + timedelta(hours=1)


@pytest.mark.asyncio
async def test_a_first_attempt_given_back_leaves_no_start_behind(backend: SQLiteBackend, clock: FakeClock) -> None:
    queued = task(clock)
    await backend.enqueue(queued)
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    assert await backend.release(lease)
    stored = await backend.get_task(queued.id)
    assert stored is not None and (stored.attempts, stored.started_at, stored.worker_id) == (0, None, None)
    assert await backend.cancel(queued.id)
    result = await backend.get_result(queued.id)
    assert result is not None and (result.status, result.started_at, result.attempts) == ("cancelled", None, 0)


@pytest.mark.asyncio
async def test_an_abandoned_attempt_given_back_keeps_its_start(backend: SQLiteBackend, clock: FakeClock) -> None:
    """A task that ran (its worker gave up waiting for it at shutdown) is given back with the time it started."""
    queued = task(clock)
    await backend.enqueue(queued)
    (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
    began = clock.now() + timedelta(seconds=1)
    assert await backend.finish_many([Outcome(lease.id, lease.lease_token, "release", started_at=began)]) == [True]
    stored = await backend.get_task(queued.id)
    assert stored is not None and stored.status == TaskStatus.QUEUED
    assert (stored.started_at, stored.worker_id) == (began, "w")


@pytest.mark.asyncio
async def test_purge_goes_in_chunks_each_its_own_transaction(
    backend: SQLiteBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge of millions of rows held the write lock for 11-36 s in one transaction: now chunk by chunk."""
    import sitq_sqlite.backend as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "_PURGE_CHUNK_ROWS", 10)
    commits: list[str] = []
    transaction = backend._transaction

    async def counted(operation: str, body: Any) -> Any:
        commits.append(operation)
        return await transaction(operation, body)

    monkeypatch.setattr(backend, "_transaction", counted)
    kept = [task(clock, priority=-1) for _ in range(5)]  # queued, and first in the table (a backlog)
    finished = [task(clock) for _ in range(35)]
    await backend.enqueue_many(kept + finished)
    leases = await backend.reserve(worker_id="w", limit=35, lease_seconds=30)
    assert {lease.id for lease in leases} == {t.id for t in finished}
    assert all(await backend.finish_many([Outcome(lease.id, lease.lease_token, "success") for lease in leases]))
    clock.advance(60)
    assert await backend.purge(older_than=clock.now()) == 35
    assert commits.count("purge") == 4  # 10 + 10 + 10 + 5
    assert (await backend.counts())["queued"] == 5
    assert [await backend.get_result(lease.id) for lease in leases] == [None] * 35


@pytest.mark.asyncio
@pytest.mark.parametrize("call", ["reserve", "heartbeat", "finish_and_reserve"])
async def test_a_lease_counts_from_when_the_write_lock_was_won_not_from_before_the_wait(
    tmp_path: Path, clock: FakeClock, call: str
) -> None:
    """A lease counted from before a long wait for the lock was granted (or renewed) already expired,
    and a second live worker ran the same task beside the first."""
    import asyncio
    import sqlite3

    path = tmp_path / "lock.db"
    a, b = SQLiteBackend(path, busy_timeout=30), SQLiteBackend(path)
    a.clock = b.clock = clock
    async with a, b:
        first = task(clock)
        await a.enqueue(first)
        held = None
        if call == "heartbeat":
            [held] = await a.reserve(worker_id="a", limit=1, lease_seconds=30)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another program's long write
        try:
            if call == "reserve":
                waiting: Any = asyncio.ensure_future(a.reserve(worker_id="a", limit=1, lease_seconds=30))
            elif call == "finish_and_reserve":
                waiting = asyncio.ensure_future(a.finish_and_reserve([], worker_id="a", limit=1, lease_seconds=30))
            else:
                assert held is not None
                waiting = asyncio.ensure_future(a.heartbeat([(held.id, held.lease_token)], 30))
            await asyncio.sleep(0)  # the call has begun and waits for the lock
            clock.advance(60)  # the wait outlasts the lease
        finally:
            holder.execute("COMMIT")
            holder.close()
        outcome = await waiting
        if call == "heartbeat":
            assert outcome == {first.id: LeaseState.HELD}
        else:
            leases = outcome if call == "reserve" else outcome[1]
            assert [r.id for r in leases] == [first.id]
            assert leases[0].lease_expires_at == clock.now() + timedelta(seconds=30)
        assert await b.reserve(worker_id="b", limit=1, lease_seconds=30) == [], "the lease is still a's"


def test_a_file_that_cannot_be_opened_on_a_read_only_mount_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'unable to open database file' alone, for a file that is there and readable, sent people looking elsewhere."""
    import os

    from sitq_sqlite import backend as sqlite_backend

    path = tmp_path / "ro.db"
    path.write_bytes(b"")
    assert sqlite_backend._read_only_hint(str(path)) == ""
    monkeypatch.setattr(os, "access", lambda p, mode, **_: mode != os.W_OK)  # the file and its folder read-only
    hint = sqlite_backend._read_only_hint(str(path))
    assert "the file is read-only for this process (mode 06" in hint
    assert f"its folder {tmp_path} is read-only for this process" in hint
    # a new file in a read-only folder: the folder is named (it was plain "unable to open database file")
    missing = sqlite_backend._read_only_hint(str(tmp_path / "missing.db"))
    assert f"its folder {tmp_path} is read-only for this process: sitq cannot create the file" in missing
    real_statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, at: str) -> None:
            self.f_flag = real_statvfs(at).f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", ReadOnly)  # a read-only mount: that alone is named
    hint = sqlite_backend._read_only_hint(str(path))
    assert "is mounted read-only" in hint and "mode" not in hint and "folder" not in hint
    monkeypatch.undo()
    assert sqlite_backend._read_only_hint(str(tmp_path / "missing.db")) == ""  # writable: nothing to add


@pytest.mark.parametrize("path", ["lane walk", "one pass"])
@pytest.mark.parametrize("named", [False, True], ids=["every queue", "named queues"])
@pytest.mark.asyncio
async def test_deep_lanes_past_the_first_walk_are_reserved_in_order(
    backend: SQLiteBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, path: str, named: bool
) -> None:
    """90 lanes of 4 tasks, reserved 7 at a time: the lane walk (grown 4 -> 16 -> 64 -> 256 lanes, going on
    where it stopped, reading only the lanes whose heads come first) and the one pass agree on the whole order."""
    from datetime import timedelta

    import sitq_sqlite.claims as claims

    monkeypatch.setattr(claims, "_FIRST_LANES", 4)
    monkeypatch.setattr(claims, "_SCAN_ROWS_PER_LANE", 0 if path == "lane walk" else 10**9)
    now = clock.now()
    tasks = [
        task(clock, queue=f"q{i % 30:02}", priority=(i // 30) % 3, eta=now - timedelta(seconds=(i * 7) % 5))
        for i in range(360)
    ]
    later = [task(clock, queue=f"q{i:02}", priority=5, eta=now + timedelta(minutes=i + 1)) for i in range(0, 30, 3)]
    await backend.enqueue_many([*tasks, *later])
    queues = sorted({f"q{i:02}" for i in range(0, 30, 2)} | {"absent"}) if named else None
    position = {t.id: i for i, t in enumerate(tasks)}
    expected = sorted(
        (t for t in tasks if queues is None or t.queue in queues), key=lambda t: (-t.priority, t.eta, position[t.id])
    )
    assert await backend.next_eta(queues) == now - timedelta(seconds=4)
    if path == "lane walk":  # each lane once, in the index's order (named queues: by name, then by priority)
        lanes = await backend._run("lanes", lambda conn: claims._lanes_or_scan(conn, queues))
        assert lanes is not None
        wanted = sorted({(t.queue, t.priority) for t in [*tasks, *later] if queues is None or t.queue in queues})
        assert sorted((queue, priority) for queue, priority, _due, _seq in lanes) == wanted
        assert len(lanes) == len(wanted)
    got: list[str] = []
    while leases := await backend.reserve(worker_id="w", limit=7, lease_seconds=30, queues=queues):
        got += [lease.id for lease in leases]
    assert got == [t.id for t in expected]
    first_later = min(t.eta for t in later if queues is None or t.queue in queues)
    assert await backend.next_eta(queues) == min(first_later, now + timedelta(seconds=30))


@pytest.mark.parametrize("path", ["lane walk", "one pass"])
@pytest.mark.asyncio
async def test_one_lane_holding_the_first_tasks_is_read_on_by_the_merge(
    backend: SQLiteBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Among 80 lanes, one holds the 50 earliest tasks (a tenant's burst): a reserve of 40 takes them in order,
    the merge reading that lane on in reads that double, and the next reserve the rest in order."""
    from datetime import timedelta

    import sitq_sqlite.claims as claims

    monkeypatch.setattr(claims, "_SCAN_ROWS_PER_LANE", 0 if path == "lane walk" else 10**9)
    now = clock.now()
    burst = [task(clock, queue="burst", eta=now - timedelta(hours=1, seconds=-i)) for i in range(50)]
    others = [task(clock, queue=f"t{i:02}", eta=now - timedelta(minutes=i % 7)) for i in range(79)]
    await backend.enqueue_many([*others, *burst])
    first = await backend.reserve(worker_id="w", limit=40, lease_seconds=30)
    assert [lease.id for lease in first] == [t.id for t in burst[:40]]
    position = {t.id: i for i, t in enumerate(others)}
    rest = [*burst[40:], *sorted(others, key=lambda t: (t.eta, position[t.id]))]
    second = await backend.reserve(worker_id="w", limit=200, lease_seconds=30)
    assert [lease.id for lease in second] == [t.id for t in rest]
