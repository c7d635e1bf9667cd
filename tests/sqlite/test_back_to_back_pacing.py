"""A client that enqueues and waits for each result in turn is not slowed by the worker's group commit.

The worker paces its commits once caught up (``sitq_core/pacing.py``), so that
one commit carries what arrived meanwhile. A client that waits for each result
before its next enqueue sends nothing meanwhile: every pause only added
latency (about one window per pickup and one per result, ~20 ms each on a
SQLite file). The pacer now lets such commits through; the observable here is
how often the worker was told to wait, not how fast it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sitq_core.worker as worker_module
from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.pacing import CommitPacer

import sitq_test_tasks as tasks


class CountingPacer(CommitPacer):
    """Counts the times the worker was told to wait before a commit."""

    made: list[CountingPacer] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pauses = 0
        self.carried: list[int] = []
        CountingPacer.made.append(self)

    def observe(self, seconds: float, carried: int | None = None) -> None:
        if carried is None:  # a worker that does not tell
            super().observe(seconds)
        else:
            super().observe(seconds, carried)
        self.carried.append(0 if carried is None else carried)

    def take(self) -> float:
        wait = super().take()
        self.pauses += wait > 0
        return wait


@pytest.mark.asyncio
async def test_a_back_to_back_client_is_not_paced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enqueue, wait for the result, repeat, from another connection: the worker's commits are not held back."""
    monkeypatch.setattr(worker_module, "CommitPacer", CountingPacer)
    CountingPacer.made.clear()
    path = tmp_path / "q.db"
    rounds = 30
    # a window far longer than a round trip: before, every commit after the first three waited for it
    worker = Worker(SQLiteBackend(path), max_concurrency=4, batch_window=0.05)
    async with TaskQueue(SQLiteBackend(path)) as queue:  # its own connection: wake-ups come from the watcher
        await worker.start()
        try:
            for n in range(rounds):
                task_id = await queue.enqueue(tasks.add, n, 1)
                result = await queue.get_result(task_id, timeout=30)
                assert result is not None and queue.deserialize_result(result) == n + 1
        finally:
            await worker.stop()
    [pacer] = CountingPacer.made
    # 2 commits per round (claim, then finish): a pause now and then checks whether pacing pays again
    assert pacer.pauses <= 3, f"the worker paused {pacer.pauses} times in {rounds} round trips"


@pytest.mark.asyncio
async def test_the_worker_tells_the_pacer_what_each_commit_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every claim and every finish is counted once, so commits that group several keep pacing on."""
    monkeypatch.setattr(worker_module, "CommitPacer", CountingPacer)
    CountingPacer.made.clear()
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        ids = await queue.enqueue_many([(tasks.add, (n, 1)) for n in range(10)])  # waiting before the start
        worker = Worker(SQLiteBackend(path), max_concurrency=4, batch_window=0.05)
        await worker.start()
        try:
            results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
        finally:
            await worker.stop()
    assert [queue.deserialize_result(r) for r in results if r is not None] == [n + 1 for n in range(10)]
    [pacer] = CountingPacer.made
    assert sum(pacer.carried) == 20  # 10 claims and 10 finishes
    assert max(pacer.carried) >= 4  # the first reserve took one task per slot at least
