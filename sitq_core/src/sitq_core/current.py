"""``current_task()``: which task the calling code runs in, for idempotency keys and logs.

A worker sets it around each call of a task function, in the task's own
asyncio task (async functions) or around the call in its thread (sync ones),
so nested code (a library called by the task) can read it without the id
being passed down.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["CurrentTask", "current_task"]


@dataclass(frozen=True, slots=True)
class CurrentTask:
    """The task being run: its ``id``, this ``attempt`` (from 1), ``queue``, ``function_name`` and ``worker_id``."""

    id: str
    attempt: int
    queue: str
    function_name: str
    worker_id: str


Describe = Callable[[], CurrentTask]
"""Builds the record when asked: a worker pays for it only in tasks that call ``current_task()``."""

_current: ContextVar[Describe | None] = ContextVar("sitq_current_task", default=None)


def current_task() -> CurrentTask | None:
    """The task this code runs in when a worker runs it; ``None`` anywhere else.

    ``current_task().id`` is the same id ``enqueue`` returned, stable across
    retries and redeliveries: a natural idempotency key.
    """
    describe = _current.get()
    return None if describe is None else describe()


def set_current(describe: Describe) -> None:
    """Make the task ``describe`` tells of current in this context (a worker's asyncio task per task)."""
    _current.set(describe)


def running_as(describe: Describe, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` wrapped to run with that task current (for a call made on another thread)."""

    def as_current_task(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(describe)
        try:
            return func(*args, **kwargs)
        finally:
            _current.reset(token)

    return as_current_task
