"""A value the store cannot hold is refused as bad input, and its task ends failed saying why (not run again)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import sitq_sqlite.inserts
import sitq_sqlite.leases
from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker


@pytest.mark.asyncio
async def test_a_return_value_too_big_for_the_store_fails_its_task_once_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sitq_sqlite.leases, "_ROW_LIMIT", 50_000)  # as if 1 GB: the same path, a small value
    monkeypatch.setattr(sitq_sqlite.inserts, "_ROW_LIMIT", 50_000)
    backend = SQLiteBackend(tmp_path / "big.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, lease_timeout=30)
        await worker.start()
        try:
            big = await queue.enqueue(bytes, 100_000)  # returns 100,000 bytes
            small = await queue.enqueue(len, "abc")
            result = await queue.get_result(big, timeout=20)
            assert result is not None and result.status == "failed", result
            assert result.error is not None and "could not be stored" in result.error, result.error
            assert "more than a SQLite database can store" in result.error, result.error
            assert result.attempts == 1, "a value that can never be stored must not make the task run again"
            other = await queue.get_result(small, timeout=20)
            assert other is not None and other.status == "success", "the other outcomes still go through"
        finally:
            await worker.stop()


@pytest.mark.asyncio
async def test_sqlite_refusing_a_value_as_too_big_is_a_validation_error_naming_what_it_refused(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "limit.db")
    error = backend._failed("enqueue", sqlite3.DataError("string or blob too big"))
    assert isinstance(error, ValidationError) and error.parameter == "tasks"
    error = backend._failed("finish_and_reserve", sqlite3.DataError("string or blob too big"))
    assert isinstance(error, ValidationError) and error.parameter == "outcomes"


@pytest.mark.asyncio
async def test_the_last_report_as_the_loop_ends_fails_a_refused_outcome_and_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At teardown one refused outcome failed the whole finish_many: every finished task there ran again."""
    from sitq_core.models import Outcome, Task, new_id
    from sitq_core.worker import _Running

    monkeypatch.setattr(sitq_sqlite.leases, "_ROW_LIMIT", 50_000)
    monkeypatch.setattr(sitq_sqlite.inserts, "_ROW_LIMIT", 50_000)
    backend = SQLiteBackend(tmp_path / "last.db")
    async with backend:
        await backend.enqueue_many([Task(id=new_id(), payload=b"x") for _ in range(2)])
        big, small = await backend.reserve(worker_id="w", limit=2, lease_seconds=30)
        live = [
            (_Running(big), Outcome(big.id, big.lease_token, "success", value=b"v" * 100_000), {}),
            (_Running(small), Outcome(small.id, small.lease_token, "success", value=b"ok"), {}),
        ]
        reported, accepted = await Worker(backend)._final_finish(live)
        assert accepted == [True, True] and [item[1].kind for item in reported] == ["failed", "success"]
        big_result, small_result = await backend.get_result(big.id), await backend.get_result(small.id)
        assert big_result is not None and big_result.status == "failed"
        assert "could not be stored" in (big_result.error or "")
        assert small_result is not None and small_result.status == "success" and small_result.value == b"ok"


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["enqueue", "enqueue_call", "enqueue_many", "enqueue_many_of_one"])
async def test_a_call_too_big_for_the_store_names_the_argument_the_caller_passed_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(sitq_sqlite.leases, "_ROW_LIMIT", 50_000)  # as if 1 GB: the same path, a small value
    monkeypatch.setattr(sitq_sqlite.inserts, "_ROW_LIMIT", 50_000)
    async with TaskQueue(SQLiteBackend(tmp_path / "big.db")) as queue:
        kept = await queue.enqueue(len, "abc")
        big = b"x" * 100_000
        with pytest.raises(ValidationError) as caught:
            if how == "enqueue":
                await queue.enqueue(len, big)
            elif how == "enqueue_call":
                await queue.enqueue_call(len, (big,))
            elif how == "enqueue_many":
                await queue.enqueue_many([(len, ("small",)), (len, (big,))])
            else:
                await queue.enqueue_many([(len, (big,))])
        error = caught.value
        assert error.parameter == ("calls" if how.startswith("enqueue_many") else "args"), error
        if how.startswith("enqueue_many"):
            index = 1 if how == "enqueue_many" else 0
            assert str(error).startswith(f"calls[{index}]: "), "the item is named, not only a task id never returned"
        assert "builtins:len" in str(error) and "more than a SQLite database can store in one row" in str(error)
        assert "nothing was stored" in str(error) and isinstance(error.cause, ValidationError)
        assert await queue.counts() == {"queued": 1, "running": 0, "success": 0, "failed": 0, "cancelled": 0}
        assert (await queue.get_task(kept)) is not None


def test_a_sync_enqueue_too_big_for_the_store_names_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sitq import SyncTaskQueue

    monkeypatch.setattr(sitq_sqlite.leases, "_ROW_LIMIT", 50_000)
    monkeypatch.setattr(sitq_sqlite.inserts, "_ROW_LIMIT", 50_000)
    with SyncTaskQueue(SQLiteBackend(tmp_path / "sync.db")) as queue:
        with pytest.raises(ValidationError) as caught:
            queue.enqueue(len, b"x" * 100_000)
        assert caught.value.parameter == "args", caught.value
