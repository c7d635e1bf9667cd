"""``WorkerState``: the attributes every part of the ``Worker`` reads, declared once for the type checker.

``Worker.__init__`` (in ``sitq_core.worker``) sets them, with a comment on what each one holds; the
mixins of this package inherit this class, so mypy --strict checks their reads against one list.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Any, Protocol

from ..backend import Backend
from ..checks import Seconds
from ..loopwatch import LoopWatch
from ..models import Outcome
from ..pacing import CommitPacer
from ..serializers import Serializer
from ..taskthreads import TaskThreads
from ..thread_batch import ThreadBatch
from .running import _Running


class Stoppable(Protocol):
    """``Worker.stop`` as the mixins call it: cast to this rather than declared on them, so that a user's
    subclass overriding ``stop`` is checked against ``Worker`` alone, not against private mixins too."""

    async def stop(self, timeout: Seconds | None = None) -> None: ...


class WorkerState:
    """The ``Worker``'s attributes and their types (no behaviour: bare annotations)."""

    _owns_backend: bool
    backend: Backend
    _only_serializer: Serializer | None
    _serializers: dict[str, Serializer]
    _hard_stopping: asyncio.Event
    _hard_stop_cause: str
    _left_running_because: str | None
    _wait_failures: int
    _loading: set[_Running]
    _loaders: set[asyncio.Task[None]]
    _loaded: set[tuple[str, str]]
    max_concurrency: int
    poll_interval: float
    queues: list[str] | None
    lease_timeout: float
    prefetch: int | None
    batch_window: float | None
    _pacer: CommitPacer
    _mean_run_time: float
    shutdown_timeout: float | None
    worker_id: str
    processed: int
    succeeded: int
    failed: int
    _held: dict[str, _Running]
    _waiting: deque[_Running]
    _executing: int
    _failing_logged: dict[str, float]
    _gave_up: int
    _gave_up_ids: list[str]
    _gave_up_since: float
    _unstarted_dropped: int
    _renewals_failing: bool
    _loop_stall_seen: float
    _outliving: list[str]
    _hung_slots: int
    _outcomes: deque[tuple[_Running, Outcome, dict[str, Any]]]
    _sending: list[tuple[_Running, Outcome, dict[str, Any]]]
    _pending_bytes: int
    _result_size: float
    _late_outcomes: dict[str, tuple[float, _Running, Outcome, dict[str, Any]]]
    _unanswered: set[tuple[str, str]]
    _unreleased: list[_Running]
    _single_reports: int
    _fairness: asyncio.Task[None] | None
    _suspect: _Running | None
    _suspect_timer: asyncio.TimerHandle | None
    _deferred: tuple[str, float] | None
    _deferred_timer: asyncio.TimerHandle | None
    _batches: dict[ThreadBatch, list[_Running]]
    _handoff_timer: asyncio.TimerHandle | None
    _one_at_a_time: bool
    _last_start: float
    _wake: asyncio.Event | None
    _reserved_more: asyncio.Event
    _closing: bool
    _stop_budget: float
    _fatal: BaseException | None
    _background: set[asyncio.Future[None]]
    _pool: TaskThreads | None
    _tasks: list[asyncio.Task[None]]
    _running: bool
    _holds_backend: bool
    _starting: asyncio.Future[None] | None
    _stop_requested: bool
    _stop_asked: asyncio.Future[None] | None
    _stopping: asyncio.Event | None
    _stopped: asyncio.Event | None
    _stop_task: asyncio.Future[None] | None
    _stop_calls: set[asyncio.Future[None]]
    _teardown: asyncio.Future[None] | None
    _exchange_settled: asyncio.Event
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int
    _watch: LoopWatch | None
    _base_context: contextvars.Context
