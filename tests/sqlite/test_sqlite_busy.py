"""SQLITE_BUSY is retried inside the backend; only a lock held past busy_timeout surfaces."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from sitq import TaskQueue
from sitq_core.errors import BackendError, ConnectionError
from sitq_core.models import Outcome, Task, new_id
from sitq_sqlite import SQLiteBackend


@pytest.mark.asyncio
async def test_locked_database_is_retried_until_the_lock_goes(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SQLiteBackend(path, busy_timeout=10) as backend:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        task = Task(id=new_id(), payload=b"x")
        pending = asyncio.create_task(backend.enqueue(task))
        done, _ = await asyncio.wait({pending}, timeout=0.1)
        assert not done, "the enqueue must wait for the lock, not fail"
        blocker.execute("COMMIT")
        blocker.close()
        assert await asyncio.wait_for(pending, 10) == task.id
        assert await backend.get_task(task.id) is not None


@pytest.mark.asyncio
async def test_lock_held_past_busy_timeout_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    async with SQLiteBackend(path, busy_timeout=0.2) as backend:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BackendError) as info:
                await backend.enqueue(Task(id=new_id(), payload=b"x"))
            assert "busy_timeout" in str(info.value) and info.value.backend_type == "sqlite"
            # a checkpoint waiting for a reader holds the write lock too: the message names the causes
            assert "write transaction, a VACUUM, or a wal_checkpoint(FULL/RESTART/TRUNCATE)" in str(info.value)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (await backend.counts())["queued"] == 0
        await backend.enqueue(Task(id=new_id(), payload=b"x"))  # works again


@pytest.mark.asyncio
async def test_writes_queued_behind_a_locked_one_share_its_busy_timeout(tmp_path: Path) -> None:
    """Each queued job started its own busy_timeout when the thread reached it: the fourth failed after 4x."""
    path = tmp_path / "queued.db"
    async with SQLiteBackend(path, busy_timeout=1.0) as backend:
        await backend.counts()  # connected, schema made
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        began = loop.time()
        ended: list[float] = []

        async def write() -> None:
            with pytest.raises(BackendError, match="busy_timeout"):
                await backend.enqueue_many([Task(id=new_id(), payload=b"x") for _ in range(20)])
            ended.append(loop.time() - began)

        try:
            await asyncio.gather(*(write() for _ in range(4)))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert max(ended) < 2.5, f"the writes waited {ended} s, as if each had its own 1 s busy_timeout"
        assert (await backend.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_a_write_queued_behind_slow_work_of_its_own_process_still_waits_out_a_short_lock(
    tmp_path: Path,
) -> None:
    """Counting busy_timeout from the call left a write queued behind 1.5 s of local work no retry at all."""
    import threading
    import time

    path = tmp_path / "slow-local.db"
    async with SQLiteBackend(path, busy_timeout=1.0) as backend:
        await backend.enqueue(Task(id=new_id(), payload=b"x"))
        stop = threading.Event()

        def other_process() -> None:  # takes the write lock for 30 ms at a time
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                time.sleep(0.03)
                conn.execute("COMMIT")
                time.sleep(0.005)
            conn.close()

        writer = threading.Thread(target=other_process, daemon=True)
        writer.start()
        try:
            slow = asyncio.ensure_future(backend._run("slow", lambda conn: time.sleep(1.5)))  # a long local job
            await asyncio.sleep(0.01)
            await backend.enqueue_many([Task(id=new_id(), payload=b"y") for _ in range(5)])  # queued behind it
            await slow
        finally:
            stop.set()
            writer.join(10)
        assert (await backend.counts())["queued"] == 6


class _Interrupt(BaseException):
    """Stands in for KeyboardInterrupt arriving while a large batch is being serialised."""


class _InterruptsPickling:
    def __reduce__(self) -> tuple[object, ...]:
        raise _Interrupt


def _add(a: object) -> object:
    return a


@pytest.mark.asyncio
async def test_interrupted_large_batch_releases_the_write_lock(tmp_path: Path) -> None:
    """A streamed batch holds the write lock while it is fed; an interrupt mid-way must roll back and free it."""
    from sitq import TaskQueue

    async with TaskQueue(SQLiteBackend(tmp_path / "feed.db", busy_timeout=2)) as queue:
        calls = [(_add, (n,)) for n in range(300)] + [(_add, (_InterruptsPickling(),))] + [(_add, (1,))] * 50
        with pytest.raises(_Interrupt):
            await queue.enqueue_many(calls)
        other = sqlite3.connect(tmp_path / "feed.db", isolation_level=None, timeout=2)
        try:
            other.execute("BEGIN IMMEDIATE")  # would fail with "database is locked" if the lock were still held
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await queue.counts())["queued"] == 0
        assert len(await queue.enqueue_many(calls[:300])) == 300


@pytest.mark.asyncio
async def test_large_batch_survives_a_busy_commit(tmp_path: Path) -> None:
    """With a rollback journal, COMMIT waits for readers: the retried transaction must replay the fed
    chunks and commit, not wait for chunks that were already handed over."""
    import threading

    path = tmp_path / "journal.db"
    async with SQLiteBackend(path, journal_mode="DELETE", busy_timeout=10) as backend:
        await backend.enqueue(Task(id=new_id(), payload=b"x"))
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM tasks").fetchone()  # a SHARED lock: COMMIT gets busy
        release = threading.Timer(0.2, lambda: reader.execute("COMMIT"))
        release.start()
        try:
            tasks = [Task(id=new_id(), payload=b"y") for _ in range(50)]
            assert await asyncio.wait_for(backend.enqueue_many(tasks), timeout=8) == [t.id for t in tasks]
        finally:
            release.join()
            reader.close()
        assert (await backend.counts())["queued"] == 51


@pytest.mark.asyncio
async def test_unreadable_lease_tokens_match_nothing_and_spoil_nothing(tmp_path: Path) -> None:
    from sitq_core.models import Outcome

    async with SQLiteBackend(tmp_path / "tokens.db") as backend:
        await backend.enqueue_many([Task(id=new_id(), payload=b"x") for _ in range(2)])
        good, other = await backend.reserve(worker_id="w", limit=2, lease_seconds=30)
        bad_tokens = ["a" * 32 + "f" * 20, "a" * 32 + "0x1", "a" * 32 + " 1", "a" * 32 + "-1", "", "z"]
        outcomes = [Outcome(task_id=other.id, lease_token=t, kind="success", value=b"v") for t in bad_tokens]
        outcomes.append(Outcome(task_id=good.id, lease_token=good.lease_token, kind="success", value=b"v"))
        assert await backend.finish_many(outcomes) == [False] * len(bad_tokens) + [True]
        assert await backend.get_result(good.id) is not None and await backend.get_result(other.id) is None


@pytest.mark.parametrize("journal_mode", ["DELETE", "TRUNCATE"])
def test_a_first_enqueue_waits_out_a_writer_in_rollback_journal_mode(tmp_path: Path, journal_mode: str) -> None:
    """A new per-thread connection's setup PRAGMAs get SQLITE_BUSY while another process writes; that
    must be waited out like any busy statement, not reach the caller as 'database is locked'."""
    import threading

    from sitq import SyncTaskQueue

    import sitq_test_tasks as tasks

    path = tmp_path / "journal.db"
    with SyncTaskQueue(SQLiteBackend(path, journal_mode=journal_mode)) as queue:
        queue.counts()  # the file and its tables exist
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        writer.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
        release = threading.Timer(0.2, lambda: writer.execute("COMMIT"))
        release.start()
        try:
            task_id = queue.enqueue(tasks.add, 1)  # this thread's first enqueue opens its own connection
        finally:
            release.join()
            writer.close()
        assert queue.get_task(task_id) is not None


@pytest.mark.asyncio
async def test_a_lock_held_through_the_first_connect_names_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("BEGIN IMMEDIATE")  # a long VACUUM or migration elsewhere, before sitq made its tables
    try:
        backend = SQLiteBackend(path, busy_timeout=0.2)
        with pytest.raises(ConnectionError, match=r"busy_timeout=0\.2s") as info:
            await backend.connect()
        assert "locked" in str(info.value)
        await backend.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.asyncio
async def test_get_result_waits_through_a_lock_held_past_busy_timeout(tmp_path: Path) -> None:
    """api.md: get_result returns None at its timeout "also when the store itself stalls"; never the busy error."""
    path = tmp_path / "locked-reads.db"
    backend = SQLiteBackend(path, journal_mode="DELETE", busy_timeout=0.2)  # a writer's lock blocks readers too
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(print)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # a maintenance script, the sqlite3 shell
        try:
            assert await queue.get_result(task_id, timeout=0.6) is None  # before: BackendError after 0.2 s
            waiting = asyncio.create_task(queue.get_result(task_id))  # timeout=None: waits on through the lock
            done, _ = await asyncio.wait({waiting}, timeout=0.6)
            assert not done, f"get_result(timeout=None) ended while the store was locked: {waiting}"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        (lease,) = await backend.reserve(worker_id="w", limit=1, lease_seconds=30)
        assert await backend.finish_many([Outcome(lease.id, lease.lease_token, "success", value=b"v")]) == [True]
        result = await asyncio.wait_for(waiting, 10)
    assert result is not None and result.value == b"v"


@pytest.mark.asyncio
async def test_a_reserve_that_finds_nothing_does_not_wait_for_another_writer(tmp_path: Path) -> None:
    """An idle worker's poll took the write lock: it queued behind every producer's commit (and its fsync)."""
    path = tmp_path / "idle.db"
    async with SQLiteBackend(path, busy_timeout=0.3) as backend:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # a producer in the middle of its commit
        try:
            claimed = await asyncio.wait_for(backend.reserve(worker_id="w", limit=4, lease_seconds=30), 5)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert claimed == []


@pytest.mark.asyncio
async def test_a_reserve_with_work_due_still_waits_for_the_lock_and_claims(tmp_path: Path) -> None:
    path = tmp_path / "due.db"
    async with SQLiteBackend(path, busy_timeout=10) as backend:
        task = Task(id=new_id(), payload=b"x")
        await backend.enqueue(task)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        pending = asyncio.create_task(backend.reserve(worker_id="w", limit=4, lease_seconds=30))
        done, _ = await asyncio.wait({pending}, timeout=0.1)
        assert not done, "a claim must wait for the lock, not give up"
        blocker.execute("COMMIT")
        blocker.close()
        claimed = await asyncio.wait_for(pending, 10)
        assert [item.task.id for item in claimed] == [task.id]


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [2, 200])  # claimed on the caller's thread / on the connection thread
async def test_claims_and_renewals_leave_the_configured_durability_for_everything_else(
    tmp_path: Path, limit: int
) -> None:
    """Claims and renewals commit without an fsync (their loss only frees tasks); enqueues and outcomes keep FULL."""
    path = tmp_path / "sync.db"
    async with SQLiteBackend(path, synchronous="FULL") as backend:
        await backend.enqueue_many([Task(id=new_id(), payload=b"x") for _ in range(3)])
        claimed = await backend.reserve(worker_id="w", limit=limit, lease_seconds=30)
        assert len(claimed) == min(limit, 3)
        await backend.heartbeat([(item.task.id, item.lease_token) for item in claimed], 30)
        full = 2  # PRAGMA synchronous reads FULL as 2
        assert await backend._run("check", lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == full
        assert (
            await backend._inline_or_run(
                "check", lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0], write=False
            )
            == full
        )
        outcome = Outcome(claimed[0].task.id, claimed[0].lease_token, "success", value=b"v")
        assert await backend.finish_many([outcome]) == [True]
    with sqlite3.connect(path) as conn:  # every commit is in the file, whatever its durability
        assert conn.execute("SELECT count(*) FROM tasks WHERE status = 'running'").fetchone()[0] == len(claimed) - 1
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 1
