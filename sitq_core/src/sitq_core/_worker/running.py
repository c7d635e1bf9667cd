"""``_Running``: the worker's book-keeping for one task it holds, and the small helpers that read it.

Kept apart from the ``Worker`` so each part of the worker can name a held task the same way.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import datetime

from ..current import CurrentTask
from ..models import LEASE_EXPIRED_ERROR, ReservedTask, Task
from ..thread_batch import Call, ThreadBatch
from .limits import _IDS_NAMED


class _Running:
    """Book-keeping for one reserved task held by this worker."""

    __slots__ = (
        "batch",
        "batch_index",
        "call",
        "cancel_requested",
        "future",
        "given_back",
        "held_since",
        "lease_lost",
        "lease_until",
        "on_loop",
        "outcome_queued",
        "reserved",
        "settled",
        "started_at",
    )

    def __init__(self, reserved: ReservedTask) -> None:
        self.reserved = reserved
        self.call: Call | None = None
        self.batch: ThreadBatch | None = None  # set while it waits or runs in a batch of sync tasks
        self.batch_index = 0
        self.settled = False  # an outcome is queued for it, or its lease was given back: nothing more to report
        self.future: asyncio.Task[None] | None = None
        self.lease_lost = False
        self.given_back = False  # this worker gave its lease back (stop, suspect): a later outcome is discarded
        self.outcome_queued = False  # an outcome was queued for it: its own fenced report decides if it was lost
        self.cancel_requested = False
        self.started_at: datetime | None = None
        self.held_since = time.monotonic()  # when this worker reserved it
        self.lease_until = math.inf  # monotonic time its lease surely ends unless renewed (set when held)
        self.on_loop = False  # an async task started on the event loop (named if the loop stops answering)

    @property
    def id(self) -> str:
        return self.reserved.id

    def cancel_asked(self) -> bool:
        """``cancel_requested`` read as a call: the heartbeat sets it while ``_execute`` awaits."""
        return self.cancel_requested


def _rank(running: _Running) -> tuple[int, datetime]:
    """Where a held task stands in the store's order: higher ``priority`` first, then earlier due time (``eta``).

    Arrival, the last key, is kept by merging stably (``Dispatching._line_up``).
    """
    task = running.reserved.task
    return (-task.priority, task.eta)


def _timeout_of(running: _Running) -> float:
    return running.reserved.task.timeout or 0.0


def _crash_suspect(task: Task) -> bool:
    """True when ``task``'s last counted attempt ended with its lease expiring (its worker died holding it).

    ``lease_expiries`` alone never goes down: after one crash every later
    retry of the task ran alone. A backend's reserve marks a task it takes
    over from an expired lease with ``LEASE_EXPIRED_ERROR``, a retry replaces
    that with its exception's text and a release keeps it; ``error is None``
    covers a backend that does not mark it (no retry has happened since the
    task was queued, so its expiries were its last endings).
    """
    return task.lease_expiries > 0 and task.error in (None, LEASE_EXPIRED_ERROR)


def _named(running: _Running) -> str:
    return f"{running.id} ({running.reserved.task.function_name})"


def _id_list(task_ids: list[str], count: int) -> str:
    """The first ``_IDS_NAMED`` of ``task_ids``, then how many more make ``count``."""
    shown = task_ids[:_IDS_NAMED]
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _names(runnings: list[_Running], limit: int = 5) -> str:
    shown = ", ".join(_named(r) for r in runnings[:limit])
    return shown if len(runnings) <= limit else f"{shown} and {len(runnings) - limit} more"


def _leases_still_held(members: list[_Running]) -> Callable[[int], bool]:
    """For a thread batch: may member ``index`` start (its lease has not surely run out)? Read in the pool thread."""

    def may_start(index: int) -> bool:
        return time.monotonic() < members[index].lease_until  # a float, set on the loop

    return may_start


def _current_task_of(reserved: ReservedTask, worker_id: str) -> CurrentTask:
    """What ``current_task()`` returns inside this task's call (built only when asked).

    It holds the reserved task (stored bytes), never the loaded call: contexts
    outlive the task (a thread or event loop the task started copies them),
    and a loaded function shipped by value keeps its globals alive, a
    module-level queue with its connections among them.
    """
    task = reserved.task
    return CurrentTask(
        id=task.id,
        attempt=reserved.attempt,
        queue=task.queue,
        function_name=task.function_name,
        worker_id=worker_id,
    )
