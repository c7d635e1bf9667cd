"""Big values (payloads, results, tracebacks) are not kept in SQLite's memory after they are written.

Python's sqlite3 caches each prepared statement with the parameters bound last
(``sqlite3_reset`` keeps bindings, and blobs and strings are bound as copies), so
every cached multi-row INSERT or finish statement of another size could keep a
batch of big values alive: a worker returning 5 MB results grew to gigabytes.
The tests read SQLite's own allocator counter (``sqlite3_memory_used``), so they
see exactly what the library holds, unlike RSS, which the C allocator keeps anyway.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend
from sitq_core.models import Outcome, Task

BIG = 256 * 1024  # over the size at which a row is written by itself
# What a few cached one-row statements may keep (one big row each, per connection), plus page caches and
# noise; the old multi-row statements kept each batch size's last batch: tens of MB in every test here.
KEPT_AT_MOST = 6 * 1024 * 1024


def _sqlite_memory_used() -> Callable[[], int] | None:
    """``sqlite3_memory_used`` of the SQLite library the sqlite3 module runs on, when it can be reached."""
    try:
        function = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used  # finds it in a linked libsqlite3 too
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int64
    function.argtypes = []
    probe = sqlite3.connect(":memory:")
    before = function()
    probe.execute("SELECT length(?)", (b"p" * 1_000_000,)).fetchone()  # the statement keeps the copy bound
    counted = function() - before
    probe.close()
    return function if counted >= 1_000_000 else None  # a build without memory statistics counts nothing


memory_used = _sqlite_memory_used()
pytestmark = pytest.mark.skipif(memory_used is None, reason="sqlite3_memory_used is not reachable through ctypes")


def kept() -> int:
    assert memory_used is not None
    return memory_used()


@pytest_asyncio.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(tmp_path / "big.db", synchronous="NORMAL", cache_size_kib=256)
    await backend.connect()
    await backend.enqueue(Task(id="warm-up", payload=b"x", function_name="f"))
    yield backend
    await backend.close()


def tasks(prefix: str, count: int, size: int = BIG) -> list[Task]:
    """Tasks as ``TaskQueue.enqueue_many`` makes them: one time for the batch."""
    now = datetime.now(UTC)
    return [
        Task(id=f"{prefix}-{i}", payload=bytes([i % 251]) * size, function_name="f", eta=now, enqueued_at=now)
        for i in range(count)
    ]


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@pytest.mark.asyncio
async def test_enqueue_batches_of_every_size_do_not_keep_their_payloads(backend: SQLiteBackend) -> None:
    before = kept()
    for size in range(1, 13):  # one transaction each (inline, multi-row VALUES)
        await backend.enqueue_many(tasks(f"small{size}", size))
    small = kept() - before
    for size in range(17, 25):  # pipelined through the connection thread (VALUES pairs with shared columns)
        await backend.enqueue_many(tasks(f"large{size}", size))
    large = kept() - before - small
    for size in range(2, 10):  # concurrent enqueues share one transaction (group commit)
        await asyncio.gather(*(backend.enqueue(task) for task in tasks(f"group{size}", size)))
    grouped = kept() - before - small - large
    assert max(small, large, grouped) < KEPT_AT_MOST, (
        f"SQLite kept {mb(small)} after small batches, {mb(large)} after large ones, {mb(grouped)} after grouped ones"
    )
    assert (await backend.counts())["queued"] == 1 + sum(range(1, 13)) + sum(range(17, 25)) + sum(range(2, 10))


@pytest.mark.asyncio
async def test_finishing_batches_of_every_size_does_not_keep_their_values(backend: SQLiteBackend) -> None:
    await backend.enqueue_many(tasks("t", sum(range(1, 25)), size=10))
    before = kept()
    for size in range(1, 13):
        leases = await backend.reserve(worker_id="w", limit=size, lease_seconds=60)
        outcomes = [Outcome(x.id, x.lease_token, "success", value=bytes([size]) * BIG) for x in leases]
        assert await backend.finish_many(outcomes) == [True] * size
    values = kept() - before
    leases = await backend.reserve(worker_id="w", limit=13, lease_seconds=60)
    for size in range(14, 25):  # failures with long tracebacks, through finish_and_reserve as a worker finishes
        outcomes = [Outcome(x.id, x.lease_token, "failed", error="boom", traceback="t" * BIG) for x in leases]
        accepted, leases = await backend.finish_and_reserve(outcomes, worker_id="w", limit=size, lease_seconds=60)
        assert accepted == [True] * len(outcomes)
    tracebacks = kept() - before - values
    assert max(values, tracebacks) < KEPT_AT_MOST, (
        f"SQLite kept {mb(values)} after finishing big values, {mb(tracebacks)} after long tracebacks"
    )
    result = await backend.get_result("t-1")  # the second task reserved (after the fixture's), in a batch of two
    assert result is not None and result.value == bytes([2]) * BIG


@pytest.mark.asyncio
async def test_big_and_small_rows_of_one_batch_keep_their_order_and_values(backend: SQLiteBackend) -> None:
    sizes = [10, BIG, 10, 10, BIG, BIG, 10, 70_000, 65_000, 10]
    inline = [Task(id=f"i{i}", payload=bytes([i]) * size, function_name="f") for i, size in enumerate(sizes)]
    now = datetime.now(UTC)
    piped = [
        Task(id=f"p{i}", payload=bytes([i]) * size, function_name="f", eta=now, enqueued_at=now)
        for i, size in enumerate(sizes * 3)
    ]
    await backend.enqueue_many(inline)
    await backend.enqueue_many(piped)  # over 16 tasks: the pipelined path
    batch = inline + piped
    leases = await backend.reserve(worker_id="w", limit=100, lease_seconds=60)
    assert [x.id for x in leases] == ["warm-up"] + [t.id for t in batch]
    assert [x.task.payload for x in leases[1:]] == [t.payload for t in batch]
    outcomes = [
        Outcome(x.id, x.lease_token, "success", value=x.task.payload)
        if i % 3
        else Outcome(x.id, x.lease_token, "failed", error="e" * len(x.task.payload), traceback="tb")
        for i, x in enumerate(leases)
    ]
    assert await backend.finish_many(outcomes) == [True] * len(outcomes)
    for i, x in enumerate(leases):
        result = await backend.get_result(x.id)
        assert result is not None
        if i % 3:
            assert (result.status, result.value) == ("success", x.task.payload)
        else:
            assert (result.status, result.error, result.traceback) == ("failed", "e" * len(x.task.payload), "tb")
