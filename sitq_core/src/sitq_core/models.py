"""Plain data records exchanged between the queue, the worker and a backend.

Backends store and return these; they never need to understand a payload.
All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from .slotinit import quick_init

__all__ = [
    "DEFAULT_QUEUE",
    "FINAL_STATUSES",
    "LEASE_EXPIRED_ERROR",
    "LeaseState",
    "Outcome",
    "ReservedTask",
    "Result",
    "Task",
    "TaskStatus",
    "TaskStatusName",
    "new_id",
    "new_ids",
    "utcnow",
]

DEFAULT_QUEUE = "default"

#: The ``error`` a backend's ``reserve`` gives a task it takes over from an expired lease. A retry sets its
#: exception's text instead and a release keeps it, so a task's ``error`` tells the worker whether its last
#: counted attempt ended with its worker dying (a crash suspect) or with an exception.
LEASE_EXPIRED_ERROR = "lease expired (its worker died or could not renew it in time)"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new unique task id: 32 lowercase hex characters, time-ordered.

    14 hex digits of microseconds since the epoch, then 72 random bits (18 hex
    digits). Ids sort by creation time, which keeps a store's id index
    appending at its end (about half the write cost of random ids in SQLite).
    """
    return f"{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"


def new_ids(count: int) -> list[str]:
    """``count`` new ids like :func:`new_id`, sharing one clock read and one ``urandom`` call (for batches).

    They come sorted, so a batch's ids also sort in batch order and a store's
    id index appends them in order (cheaper than inserting into its last pages
    at random).
    """
    stamp = f"{time.time_ns() // 1000:014x}"
    random_hex = os.urandom(9 * count).hex()
    return sorted([stamp + random_hex[i : i + 18] for i in range(0, 18 * count, 18)])


class TaskStatus(str, enum.Enum):
    """Where a task is in its life.

    ``queued`` covers both ready and scheduled (future ``eta``) tasks.
    ``running`` means a worker holds a lease on it. The last three are final.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for ``success``, ``failed`` and ``cancelled``: the task will not run again unless requeued."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED})

#: The names of the statuses (``TaskStatus`` values): what ``list_tasks(status=...)`` takes besides a
#: ``TaskStatus``, spelt out so type checkers flag an unknown name (``"Failed"``) before it runs.
TaskStatusName = Literal["queued", "running", "success", "failed", "cancelled"]


@quick_init
@dataclass(frozen=True, slots=True)
class Task:
    """A stored unit of work and its bookkeeping.

    The queue builds one per ``enqueue``; a backend stores every field and
    returns them (with status, attempts and times updated) from
    :meth:`~sitq_core.backend.Backend.get_task` and ``list_tasks``.

    ``priority``: higher runs first. ``eta``: not reserved before this time.
    ``max_retries``: an exception is retried while ``attempts`` (a lease
    expiry counts as one) is at most this.
    ``max_lease_expiries``: how many times a lease may expire (worker killed)
    before the task ends failed with "lease expired after N attempts".
    ``error``: why its last attempt ended: the exception of a retried one,
    :data:`LEASE_EXPIRED_ERROR` while a task taken over from an expired lease
    runs (or waits again after being given back), the final error of a failed one.
    """

    id: str
    payload: bytes
    serializer: str = "cloudpickle"
    function_name: str = ""
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    eta: datetime = field(default_factory=utcnow)
    max_retries: int = 0
    retry_backoff: float = 1.0
    timeout: float | None = None
    max_lease_expiries: int = 3
    enqueued_at: datetime = field(default_factory=utcnow)
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    lease_expiries: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    error: str | None = None
    cancel_requested: bool = False

    def with_changes(self, **changes: object) -> Task:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


@quick_init
@dataclass(frozen=True, slots=True)
class ReservedTask:
    """A task handed to one worker under a lease.

    ``lease_token`` is unique per reservation; every call that changes the
    task afterwards presents it, and a backend ignores calls whose token is no
    longer the task's current one (fencing). ``task.attempts`` already counts
    this attempt.
    """

    task: Task
    lease_token: str
    lease_expires_at: datetime

    @property
    def id(self) -> str:
        """The reserved task's id (``task.id``)."""
        return self.task.id

    @property
    def attempt(self) -> int:
        """Which attempt this reservation is, counting from 1 (``task.attempts``, this one included)."""
        return self.task.attempts


class LeaseState(str, enum.Enum):
    """What a heartbeat learned about one lease."""

    HELD = "held"
    LOST = "lost"
    CANCEL_REQUESTED = "cancel_requested"


OutcomeKind = Literal["success", "failed", "cancelled", "retry", "release"]


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as reported by a worker to ``Backend.finish_many``.

    - ``success``: final; ``value`` holds the serialised return value.
    - ``failed`` / ``cancelled``: final; ``error`` and ``traceback`` describe why.
    - ``retry``: back to ``queued`` with ``eta=retry_at``; error kept on the task.
    - ``release``: back to ``queued`` now, and the attempt is not counted
      (the worker gave the task back unstarted or at shutdown).
    """

    task_id: str
    lease_token: str
    kind: OutcomeKind
    value: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Result:
    """The final outcome of a task.

    ``status`` is ``"success"``, ``"failed"`` or ``"cancelled"``. ``value`` is
    the serialised return value (decode it with ``TaskQueue.deserialize_result``);
    ``error`` is ``str(exception)`` and ``traceback`` the formatted traceback
    of a failure. ``serializer`` names the serializer that wrote ``value``.
    """

    id: str
    task_id: str
    status: str
    value: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    serializer: str = "cloudpickle"

    @property
    def ok(self) -> bool:
        """True when the task succeeded (``status == "success"``): ``value`` then holds its return value."""
        return self.status == TaskStatus.SUCCESS.value
