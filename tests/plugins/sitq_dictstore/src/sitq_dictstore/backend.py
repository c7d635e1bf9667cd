"""DictStoreBackend: every task in Python dicts, shared by all instances with the same ``store`` name.

Each method does its work under one lock and without awaiting, so every change
is atomic even when instances are used from several threads or event loops.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from sitq_core import checks, store_endings
from sitq_core.backend import Backend, Capability
from sitq_core.errors import ValidationError
from sitq_core.models import LEASE_EXPIRED_ERROR, LeaseState, Outcome, ReservedTask, Result, Task, TaskStatus, new_id

QUEUED, RUNNING = TaskStatus.QUEUED, TaskStatus.RUNNING


def _as_stored(task: Task) -> Task:
    """A task as the store keeps it: queued (ready at its eta, whatever its status said), times in UTC.

    Its counters stay as given: a task moved from another store keeps its history.
    """
    times = {
        name: value.astimezone(UTC)
        for name in ("eta", "enqueued_at", "started_at", "finished_at")
        if (value := getattr(task, name)) is not None
    }
    return task.with_changes(status=QUEUED, **times)


@dataclass
class _Row:
    task: Task
    seq: int  # enqueue order
    lease_token: str | None = None
    lease_expires_at: datetime | None = None


@dataclass
class _Store:
    rows: dict[str, _Row] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=itertools.count)


def _utc(value: datetime | None) -> datetime | None:
    """Times go out as they are stored: aware UTC, whatever zone they came in."""
    return value.astimezone(UTC) if value is not None else None


class DictStoreBackend(Backend):
    """A backend keeping tasks in memory; ``store`` names the shared dict (``dictstore://?store=x``)."""

    name = "dictstore"
    capabilities = frozenset({Capability.CANCEL_RUNNING})
    _stores: ClassVar[dict[str, _Store]] = {}

    def __init__(self, store: str = "default") -> None:
        self.store = store
        self._db: _Store | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        self._open()

    async def close(self) -> None:
        self._db = None

    def _open(self) -> _Store:
        if self._db is None:
            self._db = self._stores.setdefault(self.store, _Store())
        return self._db

    # -- enqueue -------------------------------------------------------------------------

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        db = self._open()
        tasks = [checks.check_task(task) for task in tasks]  # every task checked before any is stored
        ids = [task.id for task in tasks]
        with db.lock:
            taken = [i for i in ids if i in db.rows] or [i for i in ids if ids.count(i) > 1]
            if taken:
                raise ValidationError(f"task id {taken[0]!r} already exists", parameter="tasks", value=taken[0])
            for task in tasks:
                db.rows[task.id] = _Row(_as_stored(task), next(db.counter))
        return ids

    # -- leases --------------------------------------------------------------------------

    async def reserve(
        self, *, worker_id: str, limit: int, lease_seconds: float, queues: Sequence[str] | None = None
    ) -> list[ReservedTask]:
        limit, lease_seconds = checks.reserve_limit(limit), checks.lease_seconds(lease_seconds)
        queues = checks.queue_names(queues)  # None (every queue) or a list; a bare string is refused
        db, now = self._open(), self.now()
        reserved: list[ReservedTask] = []
        ended: list[Task] = []  # tasks this reserve ends itself: no worker reports them
        with db.lock:
            due = [row for row in db.rows.values() if self._is_due(row, now, queues)]
            due.sort(key=self._order)
            for row in due:
                if len(reserved) == limit:
                    break
                task, expiries = row.task, row.task.lease_expiries
                if task.status == RUNNING:  # its worker died: the lease expired
                    expiries += 1
                    if task.cancel_requested:  # cancelled meanwhile: nobody else will report it
                        row.task = task.with_changes(lease_expiries=expiries)
                        self._finish(db, row, "cancelled", "cancelled")
                        ended.append(row.task)
                        continue
                    if expiries >= task.max_lease_expiries:  # poison pill
                        row.task = task.with_changes(lease_expiries=expiries)
                        self._finish(db, row, "failed", f"lease expired after {task.attempts} attempts")
                        ended.append(row.task)
                        continue
                elif task.cancel_requested:  # queued with its cancel requested (left by older sitq)
                    self._finish(db, row, "cancelled", "cancelled")  # it never runs again
                    ended.append(row.task)
                    continue
                row.task = task.with_changes(
                    status=RUNNING,
                    worker_id=worker_id,
                    attempts=task.attempts + 1,
                    lease_expiries=expiries,
                    started_at=now,
                    # a task taken over from an expired lease says so: the worker runs it alone
                    error=LEASE_EXPIRED_ERROR if task.status == RUNNING else task.error,
                )
                row.lease_token = uuid.uuid4().hex
                row.lease_expires_at = now + timedelta(seconds=lease_seconds)
                reserved.append(ReservedTask(row.task, row.lease_token, row.lease_expires_at))
        store_endings.report(ended)  # lifecycle observers hear of them, outside the lock
        return reserved

    @staticmethod
    def _order(row: _Row) -> tuple[int, datetime, int]:
        return (-row.task.priority, row.task.eta, row.seq)  # priority, then eta, then enqueue order

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        if queues is not None and row.task.queue not in queues:
            return False
        if row.task.status == QUEUED:
            return row.task.eta <= now
        return row.task.status == RUNNING and row.lease_expires_at is not None and row.lease_expires_at <= now

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        leases, lease_seconds = checks.lease_pairs(leases), checks.lease_seconds(lease_seconds)
        db, now = self._open(), self.now()
        states: dict[str, LeaseState] = {}
        with db.lock:
            for task_id, token in leases:
                row = db.rows.get(task_id)
                if row is None or row.task.status != RUNNING or row.lease_token != token:
                    states[task_id] = LeaseState.LOST
                    continue
                row.lease_expires_at = now + timedelta(seconds=lease_seconds)
                states[task_id] = LeaseState.CANCEL_REQUESTED if row.task.cancel_requested else LeaseState.HELD
        return states

    # -- finish --------------------------------------------------------------------------

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        outcomes = checks.check_outcomes(outcomes)  # all checked before any is applied
        db = self._open()
        accepted: list[bool] = []
        with db.lock:
            for outcome in outcomes:
                row = db.rows.get(outcome.task_id)
                if row is None or row.task.status != RUNNING or row.lease_token != outcome.lease_token:
                    accepted.append(False)  # fencing: a stale worker changes nothing
                    continue
                if outcome.kind in ("retry", "release") and row.task.cancel_requested:
                    # cancelled while it ran: it ends cancelled instead of being queued again
                    self._finish(db, row, "cancelled", "cancelled", outcome=outcome)
                elif outcome.kind == "retry":
                    eta = _utc(outcome.retry_at) or self.now()
                    row.task = row.task.with_changes(status=QUEUED, eta=eta, error=outcome.error)
                elif outcome.kind == "release":
                    attempts = max(row.task.attempts - 1, 0)
                    row.task = row.task.with_changes(status=QUEUED, attempts=attempts)  # eta is due already
                else:
                    self._finish(db, row, outcome.kind, outcome.error, outcome.traceback, outcome.value, outcome)
                row.lease_token = row.lease_expires_at = None
                accepted.append(True)
        return accepted

    def _finish(
        self,
        db: _Store,
        row: _Row,
        status: str,
        error: str | None,
        traceback: str | None = None,
        value: bytes | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        """Make a task final and store its result (the caller holds the lock).

        The worker's outcome says when the call really began and ended (a
        prefetched task starts after its reservation); otherwise: reservation and now.
        """
        task = row.task
        began = _utc(outcome.started_at) if outcome and outcome.started_at else task.started_at
        now = _utc(outcome.finished_at) if outcome and outcome.finished_at else self.now()
        row.task = task.with_changes(status=TaskStatus(status), started_at=began, finished_at=now, error=error)
        row.lease_token = row.lease_expires_at = None
        db.results[task.id] = Result(
            id=new_id(),
            task_id=task.id,
            status=status,
            value=value,
            error=error,
            traceback=traceback,
            enqueued_at=task.enqueued_at,
            started_at=began,
            finished_at=now,
            attempts=task.attempts,
            serializer=task.serializer,
        )

    # -- cancel and requeue --------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        db = self._open()
        with db.lock:
            row = db.rows.get(task_id)
            if row is None or row.task.status.is_final:
                return False
            if row.task.status == QUEUED:
                self._finish(db, row, "cancelled", "cancelled")
            else:  # running: its worker learns it from heartbeat
                row.task = row.task.with_changes(cancel_requested=True)
            return True

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        eta = checks.aware_or_none(eta, "eta")  # optional: None means now
        db = self._open()
        with db.lock:
            row = db.rows.get(task_id)
            if row is None or row.task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                return False
            row.task = row.task.with_changes(
                status=QUEUED,
                eta=_utc(eta) or self.now(),
                attempts=0,
                lease_expiries=0,
                error=None,
                cancel_requested=False,
                started_at=None,
                finished_at=None,
                worker_id=None,
            )
            db.results.pop(task_id, None)
            return True

    # -- reads ---------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        row = self._open().rows.get(task_id)
        return row.task if row is not None else None

    async def get_result(self, task_id: str) -> Result | None:
        return self._open().results.get(task_id)

    async def next_eta(self, queues: Sequence[str] | None = None) -> datetime | None:
        db = self._open()
        with db.lock:
            times = [
                row.task.eta if row.task.status == QUEUED else row.lease_expires_at
                for row in db.rows.values()
                if row.task.status in (QUEUED, RUNNING) and (queues is None or row.task.queue in queues)
            ]
        return min((t for t in times if t is not None), default=None)

    async def list_tasks(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Task]:
        if status is not None and status not in {s.value for s in TaskStatus}:
            raise ValidationError(f"unknown status {status!r}", parameter="status", value=status)
        if limit < 0 or offset < 0:
            bad = "limit" if limit < 0 else "offset"
            raise ValidationError(f"{bad} must be >= 0", parameter=bad, value=min(limit, offset))
        db = self._open()
        with db.lock:
            rows = sorted(db.rows.values(), key=lambda row: (row.task.enqueued_at, row.seq))
        tasks = [r.task for r in rows if status in (None, r.task.status) and queue in (None, r.task.queue)]
        return tasks[offset : offset + limit]

    async def counts(self, *, queue: str | None = None) -> dict[str, int]:
        counts = {status.value: 0 for status in TaskStatus}
        db = self._open()
        with db.lock:
            for row in db.rows.values():
                if queue in (None, row.task.queue):
                    counts[row.task.status.value] += 1
        return counts

    async def purge(self, *, older_than: datetime | None = None) -> int:
        older_than = checks.aware_or_none(older_than, "older_than")
        db = self._open()
        with db.lock:
            doomed = [
                task_id
                for task_id, row in db.rows.items()
                if row.task.status.is_final
                and (older_than is None or (row.task.finished_at is not None and row.task.finished_at < older_than))
            ]
            for task_id in doomed:
                del db.rows[task_id]
                db.results.pop(task_id, None)
        return len(doomed)
