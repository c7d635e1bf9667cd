"""Observers hear of tasks a store ends itself in reserve (a poison pill, a cancel whose worker is gone)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, hookimpl
from sitq_core.backend import Backend
from sitq_core.models import Task, new_id
from sitq_core.plugins import get_plugin_manager
from sitq_core.testing import FakeClock
from sitq_dictstore import DictStoreBackend


class Endings:
    """Records the failed and cancelled hooks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    @hookimpl
    def sitq_task_failed(self, task: Task, error: Any, will_retry: bool) -> None:
        self.seen.append(("failed", task.id, (str(error), will_retry, task.status.value)))

    @hookimpl
    def sitq_task_cancelled(self, task: Task, duration: float) -> None:
        self.seen.append(("cancelled", task.id, (duration, task.status.value)))


@pytest.fixture
def endings() -> Iterator[Endings]:
    plugin = Endings()
    get_plugin_manager().register_plugin(plugin, "endings")
    yield plugin
    get_plugin_manager().unregister_plugin("endings")


@pytest_asyncio.fixture(params=["sqlite", "dictstore"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: Callable[[], Backend] = {
        "sqlite": lambda: SQLiteBackend(tmp_path / "endings.db"),
        "dictstore": lambda: DictStoreBackend(store=uuid.uuid4().hex),
    }[request.param]
    instance = made()
    instance.clock = FakeClock()
    async with instance:
        yield instance


@pytest.mark.asyncio
async def test_a_poison_pill_ended_in_reserve_reaches_the_failed_hook(backend: Backend, endings: Endings) -> None:
    """A metrics plugin counted every final failure except these: no worker reports them."""
    now = backend.now()
    pill = Task(id=new_id(), payload=b"x", max_lease_expiries=1, eta=now, enqueued_at=now)
    await backend.enqueue(pill)
    await backend.reserve(worker_id="dies", limit=1, lease_seconds=30)  # its worker is killed
    backend.clock.advance(31)  # type: ignore[attr-defined]
    assert await backend.reserve(worker_id="next", limit=1, lease_seconds=30) == []
    assert endings.seen == [("failed", pill.id, ("lease expired after 1 attempts", False, "failed"))]


@pytest.mark.asyncio
async def test_a_cancel_whose_worker_is_gone_reaches_the_cancelled_hook(backend: Backend, endings: Endings) -> None:
    now = backend.now()
    task = Task(id=new_id(), payload=b"x", eta=now, enqueued_at=now)
    await backend.enqueue(task)
    await backend.reserve(worker_id="dies", limit=1, lease_seconds=30)
    await backend.cancel(task.id)
    backend.clock.advance(31)  # type: ignore[attr-defined]
    assert await backend.reserve(worker_id="next", limit=1, lease_seconds=30) == []
    assert endings.seen == [("cancelled", task.id, (0.0, "cancelled"))]
