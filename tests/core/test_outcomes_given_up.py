"""Outcomes a worker cannot report (a full disk, a store gone): every one it drops is in the log, by task id."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from sitq import BackendError, SQLiteBackend, TaskQueue, Worker
from sitq_core.errors import StoreGoneError, WorkerError

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


class DiskFills(SQLiteBackend):
    """A real SQLite store whose writes fail while ``full`` (a full disk); reads go on working, as they do then."""

    full = False
    refused = 0  # reports refused

    def _disk_write(self, finish: bool) -> None:
        if self.full:
            self.refused += finish
            raise BackendError("database or disk is full (simulated)", operation="write", backend_type="sqlite")

    async def finish_many(self, outcomes: Any) -> Any:
        self._disk_write(finish=True)
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self._disk_write(finish=True)
        return await super().finish_and_reserve(outcomes, **kwargs)

    async def reserve(self, **kwargs: Any) -> Any:
        self._disk_write(finish=False)
        return await super().reserve(**kwargs)

    async def heartbeat(self, leases: Any, lease_seconds: float) -> Any:
        self._disk_write(finish=False)
        return await super().heartbeat(leases, lease_seconds)


def _given_up(caplog: pytest.LogCaptureFixture) -> int:
    """The outcomes the worker's log says it gave up on, summed over its 'gave up reporting N outcome(s)' lines."""
    counts = [re.search(r"gave up reporting (\d+) outcome\(s\)", r.getMessage()) for r in caplog.records]
    return sum(int(match.group(1)) for match in counts if match)


@pytest.mark.asyncio
async def test_every_outcome_given_up_in_an_outage_is_counted_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the first outcome given up was logged: the others, given up within the minute between two lines,
    waited for a next line that never came once the store answered again (6 reruns, 2 logged, on a full tmpfs)."""
    log = tmp_path / "ran.log"
    store = DiskFills(tmp_path / "full.db")
    tasks.GATE.clear()
    try:
        async with TaskQueue(store) as queue:
            ids = [await queue.enqueue(tasks.record_then_wait_for_gate, str(log), n) for n in range(4)]
            worker = Worker(store, max_concurrency=4, prefetch=0, lease_timeout=1.0, poll_interval=0.05)
            with caplog.at_level("INFO", logger="sitq.worker"):
                await worker.start()
                try:

                    async def all_started() -> bool:
                        return log.exists() and log.read_text().count("start") == 4

                    await wait_until(all_started)
                    store.full = True  # the disk fills: the four end, and no outcome or renewal gets in
                    tasks.GATE.set()

                    async def all_given_up() -> bool:  # their leases ran out: the worker lets go of each
                        return store.refused > 0 and not worker._held

                    await wait_until(all_given_up)
                    store.full = False
                    results = [await queue.get_result(task_id, timeout=20) for task_id in ids]
                finally:
                    await worker.stop()
    finally:
        tasks.GATE.set()
    assert [r.status if r else None for r in results] == ["success"] * 4
    ran_again = sum(1 for r in results if r and r.attempts > 1)
    assert ran_again == 4, [r.attempts for r in results if r]
    assert _given_up(caplog) == ran_again, [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    lines = "\n".join(r.getMessage() for r in caplog.records if "gave up reporting" in r.getMessage())
    assert all(task_id in lines for task_id in ids), lines  # each one named


@pytest.mark.asyncio
async def test_outcomes_given_up_as_the_worker_stops_on_a_full_disk_are_counted_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping worker gives up at once, one outcome a try: only the first was logged, the rest never."""
    log = tmp_path / "ran.log"
    store = DiskFills(tmp_path / "stopping.db")
    tasks.GATE.clear()
    try:
        async with TaskQueue(store) as queue:
            ids = [await queue.enqueue(tasks.record_then_wait_for_gate, str(log), n) for n in range(3)]
            worker = Worker(store, max_concurrency=3, prefetch=0, lease_timeout=30, poll_interval=0.05)
            with caplog.at_level("INFO", logger="sitq.worker"):
                await worker.start()
                try:

                    async def all_started() -> bool:
                        return log.exists() and log.read_text().count("start") == 3

                    await wait_until(all_started)
                    store.full = True
                    tasks.GATE.set()
                finally:
                    await worker.stop()  # waits for the three, whose outcomes the full disk refuses
    finally:
        tasks.GATE.set()
    assert _given_up(caplog) == 3, [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    lines = "\n".join(r.getMessage() for r in caplog.records if "gave up reporting" in r.getMessage())
    assert all(task_id in lines for task_id in ids), lines


class GoesAway(SQLiteBackend):
    """A real SQLite store that is gone for good once ``gone`` (its file deleted): reports raise StoreGoneError."""

    gone = False

    def _check(self) -> None:
        if self.gone:
            raise StoreGoneError("the database file was deleted (simulated)", backend_type="sqlite")

    async def finish_many(self, outcomes: Any) -> Any:
        self._check()
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().finish_and_reserve(outcomes, **kwargs)


@pytest.mark.asyncio
async def test_outcomes_a_worker_stops_with_when_its_store_is_gone_are_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The report that met the store gone was dropped with no word about it (only "stopping: ...")."""
    log = tmp_path / "ran.log"
    store = GoesAway(tmp_path / "gone.db")
    tasks.GATE.clear()
    try:
        async with TaskQueue(store) as queue:
            ids = [await queue.enqueue(tasks.record_then_wait_for_gate, str(log), n) for n in range(3)]
            worker = Worker(store, max_concurrency=3, prefetch=0, poll_interval=0.05)
            with caplog.at_level("INFO", logger="sitq.worker"):
                running = asyncio.ensure_future(worker.run(handle_signals=False))

                async def all_started() -> bool:
                    return log.exists() and log.read_text().count("start") == 3

                await wait_until(all_started)
                store.gone = True
                tasks.GATE.set()
                with pytest.raises(WorkerError):
                    await asyncio.wait_for(running, 20)
    finally:
        tasks.GATE.set()
    lines = [r.getMessage() for r in caplog.records if "unreported" in r.getMessage()]
    assert len(lines) == 1 and "3 outcome(s)" in lines[0], [r.getMessage() for r in caplog.records]
    assert all(task_id in lines[0] for task_id in ids), lines
