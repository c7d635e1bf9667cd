"""Small helpers shared by the contracts (not part of the public API)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...backend import Backend
from ...models import ReservedTask, Task, new_id
from ..clock import FakeClock

LEASE = 30.0
WORKER = "worker-1"


def make_task(clock: FakeClock, **changes: Any) -> Task:
    """A queued task due now (by the fake clock), with a unique id."""
    now = clock.now()
    fields: dict[str, Any] = {
        "id": new_id(),
        "payload": b"payload-" + new_id().encode(),
        "eta": now,
        "enqueued_at": now,
    }
    fields.update(changes)
    return Task(**fields)


def is_aware_utc(value: datetime | None) -> bool:
    """True for an aware datetime with a zero UTC offset."""
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def close_to(a: datetime | None, b: datetime, tolerance: float = 0.001) -> bool:
    """True when ``a`` is within ``tolerance`` seconds of ``b``."""
    return a is not None and abs((a - b).total_seconds()) <= tolerance


async def reserve_all(backend: Backend, *, limit: int = 100, **kwargs: Any) -> list[ReservedTask]:
    """Reserve with default worker id and lease."""
    kwargs.setdefault("worker_id", WORKER)
    kwargs.setdefault("lease_seconds", LEASE)
    return await backend.reserve(limit=limit, **kwargs)


async def reserve_one(backend: Backend, contract: str, **kwargs: Any) -> ReservedTask:
    """Reserve exactly one task or fail naming the contract."""
    got = await reserve_all(backend, limit=1, **kwargs)
    assert len(got) == 1, f"{contract}: reserve(limit=1) returned {len(got)} tasks while one task was due"
    return got[0]


async def enqueue_and_reserve(backend: Backend, clock: FakeClock, contract: str, **changes: Any) -> ReservedTask:
    """Enqueue one due task and reserve it."""
    await backend.enqueue(make_task(clock, **changes))
    return await reserve_one(backend, contract)


async def get(backend: Backend, task_id: str, contract: str) -> Task:
    """``get_task`` that must find the task."""
    task = await backend.get_task(task_id)
    assert task is not None, f"{contract}: get_task({task_id!r}) returned None for a stored task"
    return task


def parameter_of(error: BaseException) -> object:
    """The ``parameter`` a sitq error names (set dynamically by ``SitqError``)."""
    return getattr(error, "parameter", None)
