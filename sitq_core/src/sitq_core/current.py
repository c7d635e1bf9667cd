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


_current: ContextVar[CurrentTask | None] = ContextVar("sitq_current_task", default=None)


def current_task() -> CurrentTask | None:
    """The task this code runs in when a worker runs it; ``None`` anywhere else.

    ``current_task().id`` is the same id ``enqueue`` returned, stable across
    retries and redeliveries: a natural idempotency key.
    """
    return _current.get()


def set_current(task: CurrentTask) -> None:
    """Make ``task`` current in this context (a worker's asyncio task of its own for each task)."""
    _current.set(task)


def running_as(task: CurrentTask, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` wrapped to run with ``task`` current (for a call made on another thread)."""

    def as_current_task(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(task)
        try:
            return func(*args, **kwargs)
        finally:
            _current.reset(token)

    return as_current_task
