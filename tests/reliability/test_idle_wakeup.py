"""An idle worker hears of work enqueued the moment it stores a result (before it goes back to waiting).

A client that enqueues, waits for the result, then enqueues again sends its
next task while the worker is between storing the result and waiting for
work. ``wait_for_work`` only covers notices since the worker's last reserve
began, so the worker must look (reserve) after every report before it waits
again; otherwise such a task sat until the poll interval ran out (seen as
1 s stalls of a request/response client on PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sitq_test_postgres import DSN, drop_schema, require_postgres

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.backend import Backend
from sitq_core.models import Outcome

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

_POLL = 60.0  # the poll interval: a missed wake-up would leave the next task waiting this long


class ClientAtOnce:
    """A worker's backend where a client enqueues its next task in the worst moment, and the worker hears of it.

    The moment: after the worker reported the last outcome and read the next eta (which would have
    found the task), before it waits for work. The client is another backend object (as another process
    would be): the worker hears of its enqueue only through the server's notification. Each task sleeps
    a little, so the worker waits for work while it runs (that wait takes the mark of the reserve before
    it) and is woken by the task's outcome, not by work.
    """

    client: TaskQueue | None = None
    enqueued: list[str]
    remaining = 0
    reported = False
    heard_count: Callable[[], int]  # how many work notices this backend object has had

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.reported = True
        accepted: list[bool] = await super().finish_many(outcomes)  # type: ignore[misc]
        return accepted

    async def finish_and_reserve(self, outcomes: Sequence[Outcome], **kwargs: Any) -> Any:
        self.reported = True
        return await super().finish_and_reserve(outcomes, **kwargs)  # type: ignore[misc]

    async def next_eta(self, queues: Sequence[str] | None = None) -> Any:
        eta = await super().next_eta(queues)  # type: ignore[misc]
        if self.reported and self.client is not None and self.remaining > 0:
            self.reported = False
            self.remaining -= 1
            seen = self.heard_count()
            self.enqueued.append(await self.client.enqueue(tasks.sleepy, 0.05))

            async def heard() -> bool:
                return self.heard_count() != seen

            await wait_until(heard, timeout=10)
        return eta


class SQLiteClientAtOnce(ClientAtOnce, SQLiteBackend):
    def heard_count(self) -> int:
        return self._wakeups.work_seq  # bumped by the file's change watcher


_WORK_KEY = ("sitq", "work")


@pytest.fixture(params=["sqlite", "postgres"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Backend]]:
    """The worker's backend (a ClientAtOnce) and the client's own backend object on the same store."""
    if request.param == "sqlite":
        yield SQLiteClientAtOnce(tmp_path / "w.db"), SQLiteBackend(tmp_path / "w.db")
        return
    require_postgres()
    from sitq_postgres import PostgresBackend

    class Worst(ClientAtOnce, PostgresBackend):
        def heard_count(self) -> int:
            return self.notifier.count(_WORK_KEY)  # counted by the LISTEN connection

    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield Worst(DSN, schema=schema), PostgresBackend(DSN, schema=schema)
    finally:
        drop_schema(schema)


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_window", [None, 0.0])
async def test_work_enqueued_as_a_result_is_stored_is_picked_up_without_waiting_a_poll(
    backends: tuple[Backend, Backend], batch_window: float | None
) -> None:
    backend, client_backend = backends
    assert isinstance(backend, ClientAtOnce)
    backend.enqueued = []
    async with TaskQueue(backend) as own, TaskQueue(client_backend) as client:
        await own.counts()  # connected (schema made) before the client and the worker use it
        backend.client, backend.remaining = client, 5
        worker = Worker(backend, max_concurrency=4, poll_interval=_POLL, batch_window=batch_window)
        await worker.start()
        try:
            first = await client.get_result(await client.enqueue(tasks.sleepy, 0.05), timeout=20)
            results = []
            for index in range(5):  # each enqueued as the worker reported the one before

                async def enqueued(count: int = index + 1) -> bool:
                    return len(backend.enqueued) >= count

                await wait_until(enqueued, timeout=20)
                results.append(await client.get_result(backend.enqueued[index], timeout=20))
        finally:
            await worker.stop()
    assert first is not None and first.status == "success"
    assert [r is not None and r.status for r in results] == ["success"] * 5, (
        "a task enqueued while the worker stored a result waited for the poll interval"
    )
