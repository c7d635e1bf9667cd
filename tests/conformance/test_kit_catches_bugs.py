"""The kit fails deliberately broken backends, naming the broken promise.

Each broken variant of the example backend breaks one promise of the spec;
the contract test that checks that promise must raise an AssertionError whose
message names the contract and the promise. A last test runs one broken
backend through pytest itself (a subprocess) to show what its author would see.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import random
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sitq_core import checks
from sitq_core.backend import Backend
from sitq_core.models import LeaseState, Outcome, ReservedTask, Result, Task, TaskStatus
from sitq_core.plugin_manager import SitqPluginManager
from sitq_core.plugins import use_plugin_manager
from sitq_core.testing import (
    BadInputContract,
    CancelContract,
    ConcurrencyContract,
    EnqueueContract,
    ExchangeContract,
    FakeClock,
    LeaseContract,
    LifecycleContract,
    NotifyContract,
    ReserveContract,
    ResultContract,
    RetryContract,
    StatsContract,
)
from sitq_dictstore import DictStoreBackend
from sitq_dictstore.backend import _as_stored, _Row

# ------------------------------------------------------------------ broken backends


class DoubleDelivery(DictStoreBackend):
    """Hands out running tasks again although their lease is valid."""

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        return row.task.status in ("queued", "running") and row.task.eta <= now


class IgnoresEta(DictStoreBackend):
    """Hands out scheduled tasks before their eta."""

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        return row.task.status == "queued" and (queues is None or row.task.queue in queues)


class IgnoresPriority(DictStoreBackend):
    """Reserves in enqueue order only."""

    @staticmethod
    def _order(row: _Row) -> tuple[int, datetime, int]:
        return (0, row.task.eta, row.seq)


class TiesById(DictStoreBackend):
    """Breaks ties between equal times by task id instead of by arrival."""

    @staticmethod
    def _order(row: _Row) -> tuple[int, datetime, str]:  # type: ignore[override]
        return (-row.task.priority, row.task.eta, row.task.id)


class StaleTokenWins(DictStoreBackend):
    """Applies outcomes by task id alone, like ``UPDATE tasks ... WHERE id = ?`` (no fencing)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        db = self._open()
        for outcome in outcomes:
            row = db.rows.get(outcome.task_id)
            if row is not None:
                row.task = row.task.with_changes(status=TaskStatus.RUNNING)
                row.lease_token = outcome.lease_token
        return await super().finish_many(outcomes)


class NonAtomicBatch(DictStoreBackend):
    """Stores a batch task by task, so a duplicate leaves half a batch behind."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        ids = []
        for task in tasks:
            ids += await super().enqueue_many([task])
        return ids


class NoPoisonPill(DictStoreBackend):
    """Redelivers a task forever however often its lease expired."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        return await super().enqueue_many([t.with_changes(max_lease_expiries=10**9) for t in tasks])


class NaiveTimes(DictStoreBackend):
    """Returns naive datetimes."""

    async def get_task(self, task_id: str) -> Task | None:
        task = await super().get_task(task_id)
        return task and task.with_changes(eta=task.eta.replace(tzinfo=None))


class WallClock(DictStoreBackend):
    """Reads the wall clock instead of ``self.clock``."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class HeartbeatDoesNotExtend(DictStoreBackend):
    """Says HELD without extending the lease."""

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        return {task_id: LeaseState.HELD for task_id, _ in leases}


class ReleaseCounts(DictStoreBackend):
    """Counts released attempts (treats release as an immediate retry)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        retried = [
            Outcome(**{**_fields(o), "kind": "retry", "retry_at": self.now()}) if o.kind == "release" else o
            for o in outcomes
        ]
        return await super().finish_many(retried)


class PurgesRunning(DictStoreBackend):
    """Purges every task, running ones included."""

    async def purge(self, *, older_than: datetime | None = None) -> int:
        db = self._open()
        count = len(db.rows)
        db.rows.clear()
        db.results.clear()
        return count


class AcceptsAnyStatus(DictStoreBackend):
    """Does not validate list_tasks(status=...)."""

    async def list_tasks(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Task]:
        if status not in (None, *TaskStatus):
            return []
        return await super().list_tasks(status=status, queue=queue, limit=limit, offset=offset)


class TokenSurvivesRequeue(DictStoreBackend):
    """Checks only the token in finish_many and keeps it after retry/release (a requeued task can be completed)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        db = self._open()
        accepted: list[bool] = []
        with db.lock:
            for outcome in outcomes:
                row = db.rows.get(outcome.task_id)
                if row is None or row.lease_token != outcome.lease_token:
                    accepted.append(False)
                    continue
                if outcome.kind == "release":
                    row.task = row.task.with_changes(status=TaskStatus.QUEUED, attempts=row.task.attempts - 1)
                elif outcome.kind == "retry":
                    row.task = row.task.with_changes(status=TaskStatus.QUEUED, eta=outcome.retry_at)
                else:
                    self._finish(db, row, outcome.kind, outcome.error, outcome.traceback, outcome.value)
                accepted.append(True)
        return accepted


class ExpiredIgnoresQueues(DictStoreBackend):
    """Applies the queues filter to queued tasks only (expired leases of any queue come back)."""

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        if row.task.status == "queued":
            return (queues is None or row.task.queue in queues) and row.task.eta <= now
        return row.task.status == "running" and row.lease_expires_at is not None and row.lease_expires_at <= now


class ExpiredFirst(DictStoreBackend):
    """Hands out expired leases before anything queued, whatever the priority."""

    @staticmethod
    def _order(row: _Row) -> tuple[int, int, datetime, int]:
        return (row.task.status != "running", -row.task.priority, row.task.eta, row.seq)


class RequeueKeepsExpiries(DictStoreBackend):
    """requeue forgets to reset lease_expiries."""

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        row = self._open().rows.get(task_id)
        expiries = row.task.lease_expiries if row is not None else 0
        done = await super().requeue(task_id, eta=eta)
        if done and row is not None:
            row.task = row.task.with_changes(lease_expiries=expiries)
        return done


class RequeueManyTwice(DictStoreBackend):
    """requeue_many answers True for every place of an id it requeued, a repeated one too."""

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        done = set()
        for task_id in dict.fromkeys(task_ids):
            if await self.requeue(task_id, eta=eta):
                done.add(task_id)
        return [task_id in done for task_id in task_ids]


class RequeueManyChecksLate(DictStoreBackend):
    """requeue_many checks each id only when it reaches it: ids before a bad one are requeued already."""

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        return [await self.requeue(checks.task_id(task_id), eta=eta) for task_id in task_ids]


class MemoryviewResults(DictStoreBackend):
    """Returns result values as memoryview (what some drivers hand back for binary columns)."""

    async def get_result(self, task_id: str) -> Result | None:
        result = await super().get_result(task_id)
        if result is None or result.value is None:
            return result
        return dataclasses.replace(result, value=memoryview(result.value))  # type: ignore[arg-type]


class SortsIds(DictStoreBackend):
    """Returns enqueue_many's ids sorted instead of in input order."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        return sorted(await super().enqueue_many(tasks))


class EmptyQueuesMeansAll(DictStoreBackend):
    """Treats reserve(queues=[]) like queues=None."""

    async def reserve(
        self, *, worker_id: str, limit: int, lease_seconds: float, queues: Sequence[str] | None = None
    ) -> list[ReservedTask]:
        return await super().reserve(
            worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, queues=queues or None
        )


class NaiveRequeueEta(DictStoreBackend):
    """Accepts a naive eta in requeue."""

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        if eta is not None and eta.tzinfo is None:
            return False
        return await super().requeue(task_id, eta=eta)


class BlockingStoresNothing(DictStoreBackend):
    """Offers enqueue_blocking but forgets to store the task."""

    def enqueue_blocking(self, task: Task) -> str | None:
        return task.id


class ExpiredMeansLost(DictStoreBackend):
    """Ends a lease at its expiry even when no other reserve took the task (finished work is thrown away)."""

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        db, now = self._open(), self.now()
        expired = {
            task_id
            for task_id, _token in leases
            if (row := db.rows.get(task_id)) is not None
            and row.lease_expires_at is not None
            and row.lease_expires_at <= now
        }
        states = await super().heartbeat([lease for lease in leases if lease[0] not in expired], lease_seconds)
        return {**states, **dict.fromkeys(expired, LeaseState.LOST)}


class PurgesAtTheCutoff(DictStoreBackend):
    """purge(older_than=t) also deletes tasks finished exactly at t."""

    async def purge(self, *, older_than: datetime | None = None) -> int:
        return await super().purge(older_than=None if older_than is None else older_than + timedelta(microseconds=1))


class KeepsTheZone(DictStoreBackend):
    """Returns times in the zone they were given in, not in UTC."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        ids = await super().enqueue_many(tasks)
        db = self._open()
        for task in tasks:
            db.rows[task.id].task = db.rows[task.id].task.with_changes(eta=task.eta, enqueued_at=task.enqueued_at)
        return ids


class StoresTheStatusGiven(DictStoreBackend):
    """Stores a task with history as 'running' (with no lease): it is never handed out again."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        ids = await super().enqueue_many(tasks)
        db = self._open()
        for task in tasks:
            db.rows[task.id].task = db.rows[task.id].task.with_changes(status=task.status)
        return ids


class ExistsCreates(DictStoreBackend):
    """exists() creates the store it was asked about (sitq stats would then create a mistyped store)."""

    created: ClassVar[set[str]] = set()

    async def exists(self) -> bool | None:
        found = self.store in ExistsCreates.created
        ExistsCreates.created.add(self.store)
        return found


class ExistsBeforeAnyConnect(DictStoreBackend):
    """exists() says True for a store nobody has connected to (sitq stats would open a mistyped one)."""

    async def exists(self) -> bool | None:
        return True


class PlainExists(DictStoreBackend):
    """exists() as a plain method (the kit awaited its bool: "object bool can't be used in 'await' expression")."""

    def exists(self) -> bool | None:  # type: ignore[override]
        return True


class StoresNaiveTimes(DictStoreBackend):
    """Keeps every eta naive, as a store reading back naive datetimes does: its own comparisons raise TypeError."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        ids = await super().enqueue_many(tasks)
        db = self._open()
        for task_id in ids:
            row = db.rows[task_id]
            row.task = row.task.with_changes(eta=row.task.eta.replace(tzinfo=None))
        return ids


class CancelsWhatItCannot(DictStoreBackend):
    """Declares no CANCEL_RUNNING, yet says True to cancelling a running task (its worker never hears of it)."""

    capabilities = frozenset()


class TimesOfTheReservation(DictStoreBackend):
    """Stores the reservation's start and now() as a result's times, not the ones the worker reported."""

    def _finish(self, db: Any, row: _Row, status: str, error: str | None, *rest: Any) -> None:
        super()._finish(db, row, status, error, *rest[:2])


class LoopBoundLock(DictStoreBackend):
    """Guards each store with one ``asyncio.Lock`` shared by its instances: it binds to the first loop that waits."""

    _guards: ClassVar[dict[str, asyncio.Lock]] = {}

    async def reserve(self, **options: Any) -> list[ReservedTask]:
        async with self._guards.setdefault(self.store, asyncio.Lock()):
            await asyncio.sleep(0)  # the store's I/O, awaited under the lock
            return await super().reserve(**options)

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        async with self._guards.setdefault(self.store, asyncio.Lock()):
            await asyncio.sleep(0)
            return await super().finish_many(outcomes)


class ChecksAsItStores(DictStoreBackend):
    """Checks each task of a batch just before storing it, so a bad task leaves the tasks before it stored."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        db, ids = self._open(), []
        for task in tasks:
            checks.check_task(task)
            with db.lock:
                db.rows[task.id] = _Row(_as_stored(task), next(db.counter))
            ids.append(task.id)
        return ids


class ChecksNothing(DictStoreBackend):
    """Stores whatever it is given (a str payload, a naive eta)."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        db = self._open()
        with db.lock:
            for task in tasks:
                db.rows[task.id] = _Row(task.with_changes(status=TaskStatus.QUEUED), next(db.counter))
        return [task.id for task in tasks]


class ReservesBeforeFinishing(DictStoreBackend):
    """finish_and_reserve in the wrong order: reserve, then finish."""

    async def finish_and_reserve(
        self, outcomes: Sequence[Outcome], **options: Any
    ) -> tuple[list[bool], list[ReservedTask]]:
        reserved = await self.reserve(**options)
        return await self.finish_many(outcomes), reserved


class TiesByEnqueuedAt(DictStoreBackend):
    """Breaks ties by enqueued_at before arrival (a task moved from another store jumps the queue)."""

    @staticmethod
    def _order(row: _Row) -> tuple[int, datetime, datetime, int]:  # type: ignore[override]
        return (-row.task.priority, row.task.eta, row.task.enqueued_at, row.seq)


class PurgesByEnqueuedAt(DictStoreBackend):
    """purge(older_than=) judges when a task was enqueued, not when it finished."""

    async def purge(self, *, older_than: datetime | None = None) -> int:
        db = self._open()
        with db.lock:
            for row in db.rows.values():
                if row.task.finished_at is not None:
                    row.task = row.task.with_changes(finished_at=row.task.enqueued_at)
        return await super().purge(older_than=older_than)


class HeartbeatKeepsTheReserveLength(DictStoreBackend):
    """Extends a lease by the reserve's lease_seconds, ignoring the heartbeat's own."""

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        db, states = self._open(), {}
        for task_id, token in leases:
            row = db.rows.get(task_id)
            length = 30.0
            if row is not None and row.lease_expires_at is not None and row.task.started_at is not None:
                length = (row.lease_expires_at - row.task.started_at).total_seconds()
            states.update(await super().heartbeat([(task_id, token)], length))
        return states


class EmptyValueIsNone(DictStoreBackend):
    """Stores an empty result value b"" as None (``value or None``)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        return await super().finish_many([dataclasses.replace(o, value=o.value or None) for o in outcomes])


class PoisonCountsExpiries(DictStoreBackend):
    """Writes lease_expiries, not attempts, into "lease expired after N attempts"."""

    def _finish(self, db: Any, row: _Row, status: str, error: str | None, *rest: Any) -> None:
        if error is not None and error.startswith("lease expired after"):
            error = f"lease expired after {row.task.lease_expiries} attempts"
        super()._finish(db, row, status, error, *rest)


class ListTiesById(DictStoreBackend):
    """list_tasks breaks ties of enqueued_at by id, not by arrival."""

    async def list_tasks(self, **options: Any) -> list[Task]:
        limit, offset = options.pop("limit", 100), options.pop("offset", 0)
        tasks = await super().list_tasks(**options, limit=10**9)
        tasks.sort(key=lambda task: (task.enqueued_at, task.id))
        return tasks[offset : offset + limit]


class UnstableListOrder(DictStoreBackend):
    """list_tasks orders by enqueued_at alone, so ties come in whatever order the store has at hand each call."""

    calls = 0

    async def list_tasks(self, **options: Any) -> list[Task]:
        limit, offset = options.pop("limit", 100), options.pop("offset", 0)
        tasks = await super().list_tasks(**options, limit=10**9)
        UnstableListOrder.calls += 1
        random.Random(UnstableListOrder.calls).shuffle(tasks)
        tasks.sort(key=lambda task: task.enqueued_at)
        return tasks[offset : offset + limit]


class SlowResultWaiter(DictStoreBackend):
    """Waits for a result by polling every 2 s."""

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        while (result := await self.get_result(task_id)) is None and timeout != 0:  # noqa: ASYNC110 (the bug)
            await asyncio.sleep(2)
        return result


class NaiveResultTimes(DictStoreBackend):
    """Returns a Result's times naive (a driver that drops the zone)."""

    async def get_result(self, task_id: str) -> Result | None:
        result = await super().get_result(task_id)
        if result is None or result.enqueued_at is None:
            return result
        return dataclasses.replace(result, enqueued_at=result.enqueued_at.replace(tzinfo=None))


class UncheckedPurge(DictStoreBackend):
    """purge does not check older_than: a naive datetime meets an aware one in a comparison."""

    async def purge(self, *, older_than: datetime | None = None) -> int:
        db = self._open()
        doomed = [
            task_id
            for task_id, row in db.rows.items()
            if row.task.finished_at is not None and (older_than is None or row.task.finished_at < older_than)
        ]
        for task_id in doomed:
            del db.rows[task_id]
        return len(doomed)


class NoFinishedAtOnTheTask(DictStoreBackend):
    """Stores finished_at in the result only, not on the task."""

    async def get_task(self, task_id: str) -> Task | None:
        task = await super().get_task(task_id)
        return task and task.with_changes(finished_at=None)


class ZeroLimitReservesNothing(DictStoreBackend):
    """Returns [] for reserve(limit=0) instead of refusing it."""

    async def reserve(self, *, limit: int, **options: Any) -> list[ReservedTask]:
        return [] if limit < 1 else await super().reserve(limit=limit, **options)


class HeartbeatAcceptsAnyLength(DictStoreBackend):
    """Takes lease_seconds=0 (or less) as one second instead of refusing it."""

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        return await super().heartbeat(leases, lease_seconds if lease_seconds > 0 else 1.0)


class AcceptsNaiveRetryAt(DictStoreBackend):
    """Reads a naive retry_at as UTC instead of refusing it."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        fixed = [
            dataclasses.replace(o, retry_at=o.retry_at.replace(tzinfo=UTC))
            if o.retry_at is not None and o.retry_at.tzinfo is None
            else o
            for o in outcomes
        ]
        return await super().finish_many(fixed)


class KeepsTheLastError(DictStoreBackend):
    """A success keeps the error of the attempt before it (a COALESCE(:error, error) bug)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        db = self._open()
        before = {o.task_id: db.rows[o.task_id].task.error for o in outcomes if o.task_id in db.rows}
        accepted = await super().finish_many(outcomes)
        for outcome, ok in zip(outcomes, accepted, strict=True):
            error = before.get(outcome.task_id)
            if ok and outcome.kind == "success" and error:
                row = db.rows[outcome.task_id]
                row.task = row.task.with_changes(error=error)
                db.results[outcome.task_id] = dataclasses.replace(db.results[outcome.task_id], error=error)
        return accepted


class CancelDoesNotExtend(DictStoreBackend):
    """Answers CANCEL_REQUESTED without extending the lease."""

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        db = self._open()
        kept = {t: db.rows[t].lease_expires_at for t, _ in leases if t in db.rows and db.rows[t].task.cancel_requested}
        states = await super().heartbeat(leases, lease_seconds)
        for task_id, expiry in kept.items():
            db.rows[task_id].lease_expires_at = expiry
        return states


class RequeueKeepsTheEta(DictStoreBackend):
    """requeue without eta keeps the task's old eta instead of making it due now."""

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        row = self._open().rows.get(task_id)
        return await super().requeue(task_id, eta=eta or (row.task.eta if row else None))


class RequeueKeepsTheZone(DictStoreBackend):
    """requeue stores eta in the zone it was given."""

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        done = await super().requeue(task_id, eta=eta)
        if done and eta is not None:
            row = self._open().rows[task_id]
            row.task = row.task.with_changes(eta=eta)
        return done


class RetryKeepsTheZone(DictStoreBackend):
    """A retry's eta stays in the zone of retry_at."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        accepted = await super().finish_many(outcomes)
        for outcome, ok in zip(outcomes, accepted, strict=True):
            if ok and outcome.kind == "retry" and outcome.retry_at is not None:
                row = self._open().rows[outcome.task_id]
                row.task = row.task.with_changes(eta=outcome.retry_at)
        return accepted


class NextEtaIgnoresRunning(DictStoreBackend):
    """next_eta looks at queued tasks only, not at running tasks' lease expiries."""

    async def next_eta(self, queues: Sequence[str] | None = None) -> datetime | None:
        rows = self._open().rows.values()
        return min((r.task.eta for r in rows if r.task.status == TaskStatus.QUEUED), default=None)


class PoisonPillWithoutAttempts(DictStoreBackend):
    """A poison pill's result says attempts=0."""

    async def get_result(self, task_id: str) -> Result | None:
        result = await super().get_result(task_id)
        if result is not None and (result.error or "").startswith("lease expired"):
            return dataclasses.replace(result, attempts=0)
        return result


class BlockingStoresAsGiven(DictStoreBackend):
    """enqueue_blocking stores the task as given: its status and its zone."""

    def enqueue_blocking(self, task: Task) -> str | None:
        db = self._open()
        with db.lock:
            db.rows[task.id] = _Row(task, next(db.counter))
        return task.id


class UnknownIdRaises(DictStoreBackend):
    """get_task of an unknown id raises KeyError instead of returning None."""

    async def get_task(self, task_id: str) -> Task | None:
        return self._open().rows[task_id].task


class PagesBeforeFiltering(DictStoreBackend):
    """list_tasks applies limit/offset before the status and queue filters (``LIMIT`` in a subquery, filter outside)."""

    async def list_tasks(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Task]:
        await super().list_tasks(status=status, limit=0)  # checks status as the real one does
        page = await super().list_tasks(limit=limit, offset=offset)
        return [t for t in page if status in (None, t.status) and queue in (None, t.queue)]


class NoneMeansCheckOnce(DictStoreBackend):
    """wait_for_result(timeout=None) checks once and returns None instead of waiting until the result exists."""

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        if timeout is None:
            return await self.get_result(task_id)
        return await super().wait_for_result(task_id, timeout)


class PollsForResults(DictStoreBackend):
    """Ignores notify_results() and re-reads a result every 0.3 s."""

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while (result := await self.get_result(task_id)) is None:
            if end is not None and loop.time() >= end:
                return None
            await asyncio.sleep(
                0.3 if end is None else max(0.0, min(0.3, end - loop.time()))
            )  # the bug: timed re-reads
        return result


class TakesLeasesEarly(DictStoreBackend):
    """Treats a lease as expired 5 s before its lease_expires_at."""

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        return DictStoreBackend._is_due(row, now + timedelta(seconds=5), queues)


class LeasesNeverExpire(DictStoreBackend):
    """Never takes a running task back, however long ago its lease expired."""

    @staticmethod
    def _is_due(row: _Row, now: datetime, queues: Sequence[str] | None) -> bool:
        return row.task.status == TaskStatus.QUEUED and DictStoreBackend._is_due(row, now, queues)


class LeaseExpiriesNotCounted(DictStoreBackend):
    """Takes a task back from an expired lease without counting the expiry."""

    async def reserve(
        self, *, worker_id: str, limit: int, lease_seconds: float, queues: Sequence[str] | None = None
    ) -> list[ReservedTask]:
        got = await super().reserve(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, queues=queues)
        db = self._open()
        with db.lock:
            for reserved in got:
                db.rows[reserved.id].task = db.rows[reserved.id].task.with_changes(lease_expiries=0)
        return [dataclasses.replace(r, task=r.task.with_changes(lease_expiries=0)) for r in got]


class ReversedPriority(DictStoreBackend):
    """Reserves the lowest priority first."""

    @staticmethod
    def _order(row: _Row) -> tuple[int, datetime, int]:
        return (row.task.priority, row.task.eta, row.seq)


def _naive(task: Task) -> Task:
    """``task`` with every time read back without its zone (a TIMESTAMP WITHOUT TIME ZONE column)."""
    times = {name: value.replace(tzinfo=None) for name in _TIMES if (value := getattr(task, name)) is not None}
    return task.with_changes(**times)


_TIMES = ("eta", "enqueued_at", "started_at", "finished_at")


class NaiveListTimes(DictStoreBackend):
    """list_tasks returns naive datetimes (its query reads the times through another path than get_task)."""

    async def list_tasks(self, **options: Any) -> list[Task]:
        return [_naive(task) for task in await super().list_tasks(**options)]


class NaiveFinishedAt(DictStoreBackend):
    """get_task returns finished_at naive (the column that finish writes drops the zone)."""

    async def get_task(self, task_id: str) -> Task | None:
        task = await super().get_task(task_id)
        if task is None or task.finished_at is None:
            return task
        return task.with_changes(finished_at=task.finished_at.replace(tzinfo=None))


class EndsTasksUnreported(DictStoreBackend):
    """Ends poison pills and cancels in reserve without store_endings.report: observers never hear of them."""

    async def reserve(self, **options: Any) -> list[ReservedTask]:
        with use_plugin_manager(SitqPluginManager(load_entrypoints=False)):  # report() reaches no observer
            return await super().reserve(**options)


class RequeueKeepsTheLastRun(DictStoreBackend):
    """requeue leaves started_at, finished_at and worker_id of the run before (a queued task 'finished')."""

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        row = self._open().rows.get(task_id)
        before = row.task if row is not None else None
        done = await super().requeue(task_id, eta=eta)
        if done and row is not None and before is not None:
            row.task = row.task.with_changes(
                started_at=before.started_at, finished_at=before.finished_at, worker_id=before.worker_id
            )
        return done


class ConnectedTooSoon(DictStoreBackend):
    """connect() marks itself connected before its first await: cancelled there, it never creates its store."""

    _marked = False

    async def connect(self) -> None:
        if self._marked:
            return
        self._marked = True
        await asyncio.sleep(0)  # the round trip that creates the store's schema
        self._open()

    async def close(self) -> None:
        self._marked = False
        await super().close()

    async def exists(self) -> bool | None:
        return self.store in self._stores


class SharedConnectTask(DictStoreBackend):
    """Every caller awaits one connect task unshielded: cancelling one caller cancels the connect for all, for good."""

    _opening: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._create())
        await self._opening

    async def _create(self) -> None:
        await asyncio.sleep(0)  # the round trip that opens the store
        self._open()


class ReleaseMovesTheEta(DictStoreBackend):
    """release sets eta = now (the task loses its place, and the worker takes a released task for a requeued one)."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        accepted = await super().finish_many(outcomes)
        for outcome, ok in zip(outcomes, accepted, strict=True):
            row = self._open().rows.get(outcome.task_id)
            if ok and outcome.kind == "release" and row is not None and row.task.status == TaskStatus.QUEUED:
                row.task = row.task.with_changes(eta=self.now())
        return accepted


class DropsTheLastOfABatch(DictStoreBackend):
    """Stores all but the last task of a batch, yet returns every id (an off-by-one in a bulk insert)."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        if len(tasks) < 2:
            return await super().enqueue_many(tasks)
        await super().enqueue_many(tasks[:-1])
        return [task.id for task in tasks]


class AnswersNothing(DictStoreBackend):
    """Applies the outcomes but returns no bools."""

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        await super().finish_many(outcomes)
        return []


class ExchangesOneList(DictStoreBackend):
    """finish_and_reserve returns the reservations alone, not ``(accepted, reserved)``."""

    async def finish_and_reserve(  # type: ignore[override]
        self, outcomes: Sequence[Outcome], *, worker_id: str, limit: int, lease_seconds: float, queues: Any = None
    ) -> list[ReservedTask]:
        _accepted, reserved = await super().finish_and_reserve(
            outcomes, worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, queues=queues
        )
        return reserved


class ReservesTasks(DictStoreBackend):
    """reserve hands out the tasks themselves, not ``ReservedTask`` leases."""

    async def reserve(self, **options: Any) -> list[Task]:  # type: ignore[override]
        return [lease.task for lease in await super().reserve(**options)]


class EnqueuesWithoutIds(DictStoreBackend):
    """enqueue_many stores the tasks but returns None (the default enqueue then indexes None)."""

    async def enqueue_many(self, tasks: Sequence[Task]) -> None:  # type: ignore[override]
        await super().enqueue_many(tasks)


class EnqueueAnswersNone(DictStoreBackend):
    """enqueue (overridden) stores the task but returns None instead of its id."""

    async def enqueue(self, task: Task) -> None:  # type: ignore[override]
        await super().enqueue(task)


class TasksAsDicts(DictStoreBackend):
    """get_task returns the row as a dict, not a ``Task``."""

    async def get_task(self, task_id: str) -> dict[str, Any] | None:  # type: ignore[override]
        task = await super().get_task(task_id)
        return None if task is None else dataclasses.asdict(task)


class PlainReserve(DictStoreBackend):
    """reserve is a plain method (no ``async``): awaiting its list raises a TypeError."""

    def reserve(self, **options: Any) -> list[ReservedTask]:  # type: ignore[override]
        return []


class CountsAsList(DictStoreBackend):
    """counts returns the numbers without their statuses."""

    async def counts(self, *, queue: str | None = None) -> list[int]:  # type: ignore[override]
        return list((await super().counts(queue=queue)).values())


class UnknownStatusListsNone(DictStoreBackend):
    """list_tasks answers None for an unknown status instead of raising ValidationError."""

    async def list_tasks(  # type: ignore[override]
        self, *, status: str | None = None, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Task] | None:
        if status not in (None, *TaskStatus):
            return None
        return await super().list_tasks(status=status, queue=queue, limit=limit, offset=offset)


def _fields(outcome: Outcome) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in outcome.__dataclass_fields__}


# ------------------------------------------------------------------ the table

CASES: list[tuple[type[DictStoreBackend], type[Any], str, dict[str, Any], str]] = [
    (
        StoresNaiveTimes,
        ReserveContract,
        "test_priority_first",
        {},
        "ReserveContract: times must come back timezone-aware UTC: a naive datetime met an aware one (TypeError: ",
    ),
    (
        StoresNaiveTimes,
        ConcurrencyContract,
        "test_reservers_on_other_threads_and_loops",
        {},
        "ConcurrencyContract: times must come back timezone-aware UTC: a naive datetime met an aware one (TypeError: ",
    ),
    *(
        (
            PlainExists,
            LifecycleContract,
            test_name,
            {},
            "LifecycleContract: exists() must be 'async def' (it returned True, not an awaitable",
        )
        for test_name in (
            "test_a_cancelled_connect_leaves_the_backend_able_to_connect",
            "test_a_store_holding_tasks_exists",
            "test_exists_creates_nothing",
        )
    ),
    (
        LoopBoundLock,
        ConcurrencyContract,
        "test_reservers_on_other_threads_and_loops",
        {},
        "ConcurrencyContract: a backend used from another thread with its own event loop failed: RuntimeError(",
    ),
    (
        ChecksAsItStores,
        EnqueueContract,
        "test_an_invalid_task_stores_nothing_of_its_batch",
        {"flaw": "eta is naive"},
        "EnqueueContract: enqueue_many is not atomic: a batch holding a task whose eta is naive stored task",
    ),
    (
        ChecksNothing,
        EnqueueContract,
        "test_an_invalid_task_stores_nothing_of_its_batch",
        {"flaw": "payload is str, not bytes"},
        "EnqueueContract: enqueue_many with a task whose payload is str, not bytes in the middle of the batch must "
        "raise ValidationError(parameter='tasks') (it returned without raising ValidationError)",
    ),
    (
        ReservesBeforeFinishing,
        ExchangeContract,
        "test_a_released_task_comes_back_in_the_same_call",
        {},
        "ExchangeContract: finish_and_reserve must finish first, then reserve: a task released by the call",
    ),
    (
        ReservesBeforeFinishing,
        ExchangeContract,
        "test_an_expired_lease_is_judged_before_the_reserve",
        {},
        "ExchangeContract: finish_and_reserve must finish first, then reserve: the outcome of an expired lease",
    ),
    (
        TiesByEnqueuedAt,
        ReserveContract,
        "test_ties_follow_arrival_not_enqueued_at",
        {},
        "ReserveContract: among equal priority and eta reserve must follow arrival order",
    ),
    (
        PurgesByEnqueuedAt,
        StatsContract,
        "test_purge_judges_finished_at_not_enqueued_at",
        {},
        "StatsContract: purge(older_than=t) deletes tasks *finished* before t",
    ),
    (
        HeartbeatKeepsTheReserveLength,
        LeaseContract,
        "test_heartbeat_honours_its_lease_seconds",
        {},
        "LeaseContract: heartbeat(leases, lease_seconds=100) must extend the lease to now + 100 s",
    ),
    (
        EmptyValueIsNone,
        ResultContract,
        "test_an_empty_value_reads_back_empty",
        {},
        "ResultContract: an empty result value b'' must read back as b''",
    ),
    (
        PoisonCountsExpiries,
        LeaseContract,
        "test_poison_pill_counts_attempts_not_expiries",
        {},
        "LeaseContract: poison pill error must be 'lease expired after N attempts' with N = attempts",
    ),
    (
        ListTiesById,
        StatsContract,
        "test_list_tasks_pages_ties_in_arrival_order",
        {},
        "StatsContract: list_tasks must list tasks sharing one enqueued_at in arrival order",
    ),
    (
        UnstableListOrder,
        StatsContract,
        "test_list_tasks_pages_ties_in_arrival_order",
        {},
        "StatsContract: paging list_tasks 10 at a time through 100 tasks sharing one enqueued_at gave",
    ),
    (
        SlowResultWaiter,
        ResultContract,
        "test_wait_sees_other_instance",
        {},
        "ResultContract: wait_for_result must see a result written by another instance promptly (no answer within 1 s)",
    ),
    (
        TakesLeasesEarly,
        LeaseContract,
        "test_heartbeat_extends",
        {},
        "LeaseContract: reserve handed out a task whose lease had 1 s left (before any heartbeat)",
    ),
    (
        TakesLeasesEarly,
        LeaseContract,
        "test_heartbeat_honours_its_lease_seconds",
        {},
        "LeaseContract: reserve handed out a task whose lease had 1 s left (before any heartbeat)",
    ),
    (
        TakesLeasesEarly,
        CancelContract,
        "test_heartbeat_reports_cancel",
        {},
        "CancelContract: reserve took a task whose lease had 1 s left (before any heartbeat",
    ),
    (
        LeasesNeverExpire,
        CancelContract,
        "test_a_cancel_ended_in_reserve_is_reported_to_observers",
        {},
        "CancelContract: a running task cancelled while its worker was gone must end 'cancelled' at the first "
        "reserve after its lease expires",
    ),
    (
        LeasesNeverExpire,
        LeaseContract,
        "test_a_poison_pill_is_reported_to_observers",
        {"call": "reserve"},
        "LeaseContract: a task reaching max_lease_expiries must end 'failed' at the first reserve after its lease "
        "expires",
    ),
    (
        LeasesNeverExpire,
        LeaseContract,
        "test_heartbeat_lost",
        {},
        "LeaseContract: a task whose lease expired (lease_expires_at <= now) must be handed out again",
    ),
    (
        LeaseExpiriesNotCounted,
        LeaseContract,
        "test_expired_lease_marks_the_error_until_an_attempt_ends_otherwise",
        {},
        "LeaseContract: reserving a task whose lease expired must count the expiry: lease_expiries 1, got 0",
    ),
    (
        NoneMeansCheckOnce,
        ResultContract,
        "test_wait_without_timeout_waits_until_written",
        {},
        "ResultContract: wait_for_result(timeout=None) returned None before the result was written",
    ),
    (
        PollsForResults,
        NotifyContract,
        "test_wait_for_result_wakes_on_notice_without_polling",
        {},
        "NotifyContract: wait_for_result must return as soon as notify_results() announces the result",
    ),
    (
        NaiveResultTimes,
        ResultContract,
        "test_complete_stores_result",
        {},
        "ResultContract: Result.enqueued_at must be aware UTC",
    ),
    (
        UncheckedPurge,
        StatsContract,
        "test_purge_naive_datetime",
        {},
        "StatsContract: purge(older_than=<a naive datetime>) must raise ValidationError(parameter='older_than') "
        "(it raised TypeError",
    ),
    (
        UncheckedPurge,
        BadInputContract,
        "test_bad_arguments_lose_nothing",
        {},
        "BadInputContract: a naive datetime must raise ValidationError(parameter='older_than'); nothing raised",
    ),
    (
        NoFinishedAtOnTheTask,
        StatsContract,
        "test_purge_keeps_a_task_finished_exactly_at_the_cutoff",
        {},
        "StatsContract: a finished task must carry finished_at",
    ),
    (
        ZeroLimitReservesNothing,
        ReserveContract,
        "test_bad_limit_and_lease",
        {},
        "ReserveContract: reserve(limit=0, lease_seconds=30.0) must raise ValidationError(parameter='limit') "
        "(it returned without raising ValidationError)",
    ),
    (
        ExistsBeforeAnyConnect,
        LifecycleContract,
        "test_exists_creates_nothing",
        {},
        "LifecycleContract: exists() returned True for the test's fresh store",
    ),
    (
        CancelsWhatItCannot,
        CancelContract,
        "test_without_cancel_running_a_running_task_is_not_cancelled",
        {"backend_capabilities": frozenset()},
        "CancelContract: without Capability.CANCEL_RUNNING, cancel of a running task must return False",
    ),
    (
        TimesOfTheReservation,
        ResultContract,
        "test_the_result_keeps_the_times_the_worker_reports",
        {},
        "ResultContract: a Result's started_at/finished_at must be the outcome's own",
    ),
    (
        DoubleDelivery,
        ReserveContract,
        "test_no_double_delivery_while_leased",
        {},
        "ReserveContract: reserve handed out a task that is still leased",
    ),
    (
        DoubleDelivery,
        ConcurrencyContract,
        "test_concurrent_reservers_never_share",
        {},
        "ConcurrencyContract: reserve handed out a task that is still leased",
    ),
    (IgnoresEta, ReserveContract, "test_eta_honoured", {}, "ReserveContract: reserve handed out a task before its eta"),
    (
        IgnoresPriority,
        ReserveContract,
        "test_priority_first",
        {},
        "ReserveContract: reserve must take the highest priority first",
    ),
    (
        TiesById,
        ReserveContract,
        "test_batch_order_with_equal_times",
        {},
        "ReserveContract: tasks with equal priority, eta and enqueued_at must come out in enqueue order",
    ),
    (
        StaleTokenWins,
        LeaseContract,
        "test_stale_token_changes_nothing",
        {"call": "complete"},
        "LeaseContract: complete with a stale lease token must return False (fencing)",
    ),
    (
        StaleTokenWins,
        LeaseContract,
        "test_late_worker_cannot_overwrite_result",
        {},
        "LeaseContract: a stale worker's late complete must return False",
    ),
    (
        NonAtomicBatch,
        EnqueueContract,
        "test_duplicate_id_stores_nothing",
        {},
        "EnqueueContract: enqueue_many is not atomic",
    ),
    (
        NoPoisonPill,
        LeaseContract,
        "test_poison_pill_ends_failed",
        {},
        "LeaseContract: a task reaching max_lease_expiries must not be handed out again (poison pill)",
    ),
    (
        NaiveTimes,
        EnqueueContract,
        "test_times_are_aware_utc",
        {},
        "EnqueueContract: Task.eta must come back timezone-aware UTC",
    ),
    (
        WallClock,
        LifecycleContract,
        "test_now_reads_the_clock",
        {},
        "LifecycleContract: backend.now() must return backend.clock()",
    ),
    (
        HeartbeatDoesNotExtend,
        LeaseContract,
        "test_heartbeat_extends",
        {},
        "LeaseContract: heartbeat did not extend the lease",
    ),
    (
        ReleaseCounts,
        RetryContract,
        "test_release_does_not_count",
        {},
        "RetryContract: release must not count the attempt",
    ),
    (PurgesRunning, StatsContract, "test_purge_final_only", {}, "StatsContract: purge() must delete the 3 final tasks"),
    (
        AcceptsAnyStatus,
        BadInputContract,
        "test_bad_arguments_lose_nothing",
        {},
        "BadInputContract: an unknown status must raise ValidationError(parameter='status'); nothing raised",
    ),
    (
        TokenSurvivesRequeue,
        LeaseContract,
        "test_lease_ends_when_requeued",
        {"call": "release"},
        "LeaseContract: complete with a lease that ended in release must return False",
    ),
    (
        TokenSurvivesRequeue,
        LeaseContract,
        "test_lease_ends_when_requeued",
        {"call": "retry"},
        "LeaseContract: complete with a lease that ended in retry must return False",
    ),
    (
        ExpiredIgnoresQueues,
        LeaseContract,
        "test_expired_leases_respect_the_queues_filter",
        {},
        "LeaseContract: reserve(queues=['emails']) handed out a task of queue 'reports' whose lease expired",
    ),
    (
        ExpiredFirst,
        LeaseContract,
        "test_expired_leases_wait_behind_higher_priorities",
        {},
        "LeaseContract: a queued task of priority 5 must be handed out before an expired lease of priority 0",
    ),
    (
        RequeueManyTwice,
        CancelContract,
        "test_requeue_many_answers_each_id_as_requeue_would",
        {},
        "an id given twice at most once",
    ),
    (
        RequeueManyChecksLate,
        BadInputContract,
        "test_requeue_many_checks_every_argument_first",
        {},
        "BadInputContract: requeue_many([failed id, '']) must raise ValidationError(parameter='task_ids')",
    ),
    (
        RequeueKeepsExpiries,
        CancelContract,
        "test_requeue_gives_a_poison_pill_its_lease_expiries_back",
        {},
        "CancelContract: requeue must reset lease_expiries",
    ),
    (
        MemoryviewResults,
        ResultContract,
        "test_complete_stores_result",
        {},
        "ResultContract: Result.value must be bytes, got memoryview",
    ),
    (
        SortsIds,
        EnqueueContract,
        "test_enqueue_many_returns_ids_in_order",
        {},
        "EnqueueContract: enqueue_many must return the ids in input order (not sorted)",
    ),
    (
        EmptyQueuesMeansAll,
        BadInputContract,
        "test_an_empty_queue_list_reserves_nothing",
        {},
        "BadInputContract: reserve(queues=[]) must reserve nothing",
    ),
    (
        NaiveRequeueEta,
        BadInputContract,
        "test_bad_arguments_lose_nothing",
        {},
        "BadInputContract: requeue(eta=<a naive datetime>) must raise ValidationError(parameter='eta')",
    ),
    (
        BlockingStoresNothing,
        EnqueueContract,
        "test_enqueue_blocking_stores_like_enqueue_or_declines",
        {},
        "EnqueueContract: enqueue_blocking returned the id but get_task finds no task",
    ),
    (
        ExpiredMeansLost,
        LeaseContract,
        "test_an_expired_lease_nobody_took_is_still_current",
        {},
        "LeaseContract: a lease past its expiry that no other reserve has taken is still current",
    ),
    (
        PurgesAtTheCutoff,
        StatsContract,
        "test_purge_keeps_a_task_finished_exactly_at_the_cutoff",
        {},
        "StatsContract: purge(older_than=t) deletes tasks finished *before* t",
    ),
    (
        KeepsTheZone,
        EnqueueContract,
        "test_times_in_another_zone_come_back_as_utc",
        {},
        "EnqueueContract: Task.eta must come back as aware UTC",
    ),
    (
        StoresTheStatusGiven,
        EnqueueContract,
        "test_a_task_with_history_is_stored_queued_with_its_counters",
        {},
        "EnqueueContract: enqueue stores every task as queued",
    ),
    (
        ExistsCreates,
        LifecycleContract,
        "test_exists_creates_nothing",
        {},
        "LifecycleContract: exists() must create nothing",
    ),
    (
        HeartbeatAcceptsAnyLength,
        BadInputContract,
        "test_bad_leases_and_outcomes_change_nothing",
        {},
        "BadInputContract: heartbeat(lease_seconds=0) must raise ValidationError(parameter='lease_seconds')",
    ),
    (
        AcceptsNaiveRetryAt,
        BadInputContract,
        "test_bad_leases_and_outcomes_change_nothing",
        {},
        "BadInputContract: finish_many with a retry whose retry_at is naive must raise "
        "ValidationError(parameter='outcomes')",
    ),
    (
        KeepsTheLastError,
        RetryContract,
        "test_a_success_after_a_retry_clears_the_error",
        {},
        "RetryContract: a success after a retry must not carry the earlier attempt's error",
    ),
    (
        CancelDoesNotExtend,
        CancelContract,
        "test_heartbeat_reports_cancel",
        {},
        "CancelContract: a CANCEL_REQUESTED heartbeat must still extend the lease",
    ),
    (
        RequeueKeepsTheEta,
        CancelContract,
        "test_requeue_cancelled_due_now",
        {},
        "CancelContract: requeue without eta must make the task due now",
    ),
    (
        RequeueKeepsTheZone,
        CancelContract,
        "test_requeue_eta_in_another_zone_comes_back_as_utc",
        {},
        "CancelContract: requeue(eta=) in another zone must come back as the same instant in aware UTC",
    ),
    (
        RetryKeepsTheZone,
        RetryContract,
        "test_outcome_times_in_another_zone_come_back_as_utc",
        {},
        "RetryContract: a retry_at in another zone must come back as the same instant in aware UTC",
    ),
    (
        NextEtaIgnoresRunning,
        NotifyContract,
        "test_next_eta_counts_a_running_tasks_lease_expiry",
        {},
        "NotifyContract: next_eta must be the earliest eta of a queued task or lease expiry of a running one",
    ),
    (
        PoisonPillWithoutAttempts,
        LeaseContract,
        "test_poison_pill_ends_failed",
        {},
        "LeaseContract: a poison pill's result must count its attempts (2 reservations), got attempts=0",
    ),
    (
        BlockingStoresAsGiven,
        EnqueueContract,
        "test_enqueue_blocking_stores_a_moved_task_as_enqueue_does",
        {},
        "EnqueueContract: enqueue_blocking must store a task exactly as enqueue would: queued",
    ),
    (
        PagesBeforeFiltering,
        StatsContract,
        "test_list_tasks_pages_a_queue_filter",
        {},
        "StatsContract: list_tasks(queue='b', limit=3, offset=0) must apply limit/offset to the tasks that match "
        "the filter (filter first, then page)",
    ),
    (
        PagesBeforeFiltering,
        StatsContract,
        "test_list_tasks_pages_a_status_filter",
        {},
        "StatsContract: list_tasks(status='queued', limit=2, offset=0) must apply limit/offset to the tasks that "
        "match the filter",
    ),
    (
        NaiveListTimes,
        StatsContract,
        "test_list_tasks_and_get_task_times_are_aware_utc",
        {},
        "StatsContract: every datetime on a Task must be timezone-aware UTC; list_tasks() returned the success "
        "task with eta=datetime.datetime(",
    ),
    (
        NaiveFinishedAt,
        StatsContract,
        "test_list_tasks_and_get_task_times_are_aware_utc",
        {},
        "StatsContract: every datetime on a Task must be timezone-aware UTC; get_task returned the success task "
        "with finished_at=datetime.datetime(",
    ),
    (
        UnknownIdRaises,
        BadInputContract,
        "test_unknown_ids",
        {},
        "BadInputContract: get_task of an unknown id must answer (None, False or LOST), not raise KeyError",
    ),
    (
        EndsTasksUnreported,
        LeaseContract,
        "test_a_poison_pill_is_reported_to_observers",
        {"call": "reserve"},
        "LeaseContract: a poison pill that reserve ends must reach the lifecycle observers once",
    ),
    (
        EndsTasksUnreported,
        LeaseContract,
        "test_a_poison_pill_is_reported_to_observers",
        {"call": "finish_and_reserve"},
        "LeaseContract: a poison pill that finish_and_reserve ends must reach the lifecycle observers once",
    ),
    (
        EndsTasksUnreported,
        CancelContract,
        "test_a_cancel_ended_in_reserve_is_reported_to_observers",
        {},
        "CancelContract: a task that reserve ends 'cancelled' (its worker gone) must reach the lifecycle observers",
    ),
    (
        RequeueKeepsTheLastRun,
        CancelContract,
        "test_requeue_forgets_the_last_run",
        {"ending": "failed"},
        "CancelContract: requeue must clear started_at, finished_at and worker_id",
    ),
    (
        RequeueKeepsTheLastRun,
        CancelContract,
        "test_requeue_forgets_the_last_run",
        {"ending": "cancelled"},
        "CancelContract: requeue must clear started_at, finished_at and worker_id",
    ),
    (
        ConnectedTooSoon,
        LifecycleContract,
        "test_a_cancelled_connect_leaves_the_backend_able_to_connect",
        {},
        "LifecycleContract: connect() after a cancelled connect() must connect as if that had not happened, but "
        "exists() then says the store does not exist",
    ),
    (
        SharedConnectTask,
        LifecycleContract,
        "test_a_cancelled_connect_leaves_the_backend_able_to_connect",
        {},
        "LifecycleContract: connect() after a cancelled connect() must connect, but it raised CancelledError too",
    ),
    (
        SharedConnectTask,
        LifecycleContract,
        "test_cancelling_one_connect_spares_another_caller",
        {},
        "LifecycleContract: cancelling one caller's connect() must not cancel another caller waiting for the same",
    ),
    (
        DropsTheLastOfABatch,
        RetryContract,
        "test_finish_many_in_order",
        {},
        "RetryContract: reserve returned 2 tasks, expected 3: were all enqueued tasks stored? get_task finds no task ",
    ),
    (
        DropsTheLastOfABatch,
        ReserveContract,
        "test_lease_tokens_are_unique",
        {},
        "ReserveContract: reserve returned 9 tasks, expected 10: were all enqueued tasks stored? get_task finds no ",
    ),
    (
        DropsTheLastOfABatch,
        ReserveContract,
        "test_no_double_delivery_while_leased",
        {},
        "ReserveContract: reserve returned 2 tasks, expected 3: were all enqueued tasks stored?",
    ),
    (
        DropsTheLastOfABatch,
        ReserveContract,
        "test_reserve_respects_limit",
        {},
        "were all enqueued tasks stored? get_task finds no task ",
    ),
    (
        DropsTheLastOfABatch,
        ReserveContract,
        "test_priority_first",
        {},
        "ReserveContract: reserve(limit=1) returned 0 tasks while one task was due: were all enqueued tasks stored?",
    ),
    (
        DropsTheLastOfABatch,
        ExchangeContract,
        "test_finishes_then_reserves",
        {},
        "ExchangeContract: finish_and_reserve returned 1 tasks, expected 2: were all enqueued tasks stored?",
    ),
    (
        DropsTheLastOfABatch,
        StatsContract,
        "test_list_tasks_pages_a_status_filter",
        {},
        "StatsContract: reserve returned 11 tasks, expected 12: were all enqueued tasks stored?",
    ),
    (
        DoubleDelivery,
        ExchangeContract,
        "test_stale_outcome_is_fenced_and_reserve_still_happens",
        {},
        "ExchangeContract: the reserve part of finish_and_reserve handed out a task that is still leased",
    ),
    (
        AnswersNothing,
        ResultContract,
        "test_cancelled_outcome",
        {},
        "ResultContract: finish_many must return one bool per outcome: 1 outcome, got []",
    ),
    (
        ExchangesOneList,
        ExchangeContract,
        "test_stale_outcome_is_fenced_and_reserve_still_happens",
        {},
        "ExchangeContract: finish_and_reserve must return a pair (accepted, reserved): a list of bool, one per "
        "outcome (1 outcome), and a list of ReservedTask, got a list of ReservedTask",
    ),
    (
        ReleaseMovesTheEta,
        RetryContract,
        "test_release_keeps_the_eta",
        {},
        "RetryContract: release must leave the task's eta as it was",
    ),
    (
        ReservesTasks,
        ReserveContract,
        "test_reserve_records_the_lease",
        {},
        "ReserveContract: reserve must return a list of ReservedTask, got a list of Task",
    ),
    (
        ReservesTasks,
        ResultContract,  # not an AttributeError from Backend.complete, handed a Task
        "test_complete_stores_result",
        {},
        "ResultContract: reserve must return a list of ReservedTask, got a list of Task",
    ),
    (
        ReservesTasks,
        ConcurrencyContract,  # the reservers run on threads of their own, made by backend_factory
        "test_reservers_on_other_threads_and_loops",
        {},
        "ConcurrencyContract: reserve must return a list of ReservedTask, got a list of Task",
    ),
    (
        EnqueuesWithoutIds,
        ReserveContract,  # not a TypeError from the default enqueue indexing None
        "test_eta_honoured",
        {},
        "ReserveContract: enqueue_many must return a list of the task ids (str), one per task (1 task), got None",
    ),
    (
        EnqueuesWithoutIds,
        ReserveContract,
        "test_priority_first",
        {},
        "ReserveContract: enqueue_many must return a list of the task ids (str), one per task (5 tasks), got None",
    ),
    (
        EnqueueAnswersNone,
        LeaseContract,
        "test_heartbeat_extends",
        {},
        "LeaseContract: enqueue must return the task id (str), got None",
    ),
    (
        TasksAsDicts,
        EnqueueContract,
        "test_every_field_round_trips",
        {},
        "EnqueueContract: get_task must return a Task or None, got a dict",
    ),
    (
        TasksAsDicts,
        ReserveContract,  # not "get_task raised AttributeError" in the hint of another promise
        "test_named_queues",
        {},
        "ReserveContract: get_task must return a Task or None, got a dict",
    ),
    (
        PlainReserve,
        ReserveContract,
        "test_reserve_nothing_due",
        {},
        "ReserveContract: reserve must be 'async def' (it returned [], not an awaitable)",
    ),
    (
        UnknownStatusListsNone,
        StatsContract,  # the promise it broke is the ValidationError, not list_tasks' type
        "test_list_tasks_bad_arguments",
        {},
        "StatsContract: list_tasks(status='bogus') must raise ValidationError(parameter='status') (it returned "
        "without raising ValidationError)",
    ),
    (
        UnknownStatusListsNone,
        BadInputContract,
        "test_bad_arguments_lose_nothing",
        {},
        "BadInputContract: an unknown status must raise ValidationError(parameter='status'); nothing raised",
    ),
    (
        CountsAsList,
        StatsContract,
        "test_counts_empty",
        {},
        "StatsContract: counts must return a dict of status (str) to count (int), got [0, 0, 0, 0, 0]",
    ),
]


@asynccontextmanager
async def _fixtures(cls: type[DictStoreBackend], wanted: Sequence[str] = ()) -> AsyncIterator[dict[str, Any]]:
    """The kit's fixtures, built by hand for one backend class.

    The ``backend`` fixture connects to the store; as under pytest, a test that
    does not ask for it (``wanted``) finds its store untouched.
    """
    clock, store, opened = FakeClock(), uuid.uuid4().hex, []

    def factory() -> Backend:
        instance = cls(store=store)
        instance.clock = clock
        opened.append(instance)
        return instance

    async def open_backend() -> Backend:
        instance = factory()
        await instance.connect()
        return instance

    backend = await open_backend() if {"backend", "open_backend"} & set(wanted) else None
    try:
        yield {"backend": backend, "clock": clock, "open_backend": open_backend, "backend_factory": factory}
    finally:
        for instance in opened:
            await instance.close()


@pytest.mark.parametrize(
    ("broken", "contract", "test_name", "extra", "message"),
    CASES,
    ids=[f"{case[0].__name__}-{case[2]}" for case in CASES],
)
@pytest.mark.asyncio
async def test_contract_catches_broken_backend(
    broken: type[DictStoreBackend], contract: type[Any], test_name: str, extra: dict[str, Any], message: str
) -> None:
    method = getattr(contract(), test_name)
    async with _fixtures(broken, list(inspect.signature(method).parameters)) as fixtures:
        fixtures.update(extra)
        wanted = {name: fixtures[name] for name in inspect.signature(method).parameters}
        with pytest.raises((AssertionError, pytest.fail.Exception)) as info:
            await method(**wanted)
    assert message in str(info.value), f"expected {message!r} in the failure, got:\n{info.value}"


@pytest.mark.asyncio
async def test_correct_backend_passes_the_same_checks() -> None:
    """The same direct calls pass on the unbroken backend (so the table tests the bugs, not the harness)."""
    for _broken, contract, test_name, extra, _message in CASES:
        method = getattr(contract(), test_name)
        async with _fixtures(DictStoreBackend, list(inspect.signature(method).parameters)) as fixtures:
            fixtures.update(extra)
            if "backend_capabilities" in extra:  # the unbroken backend's own, not the broken one's
                fixtures["backend_capabilities"] = DictStoreBackend.capabilities
            try:
                await method(**{name: fixtures[name] for name in inspect.signature(method).parameters})
            except pytest.skip.Exception:
                continue  # not its case (it declares the capability whose absence the test checks)


@pytest.mark.asyncio
async def test_the_bad_input_checks_do_not_blame_a_priority_order() -> None:
    """A backend reserving lowest priority first fails ReserveContract, not the bad-input test (which took
    for granted which of its two tasks reserve hands out)."""
    for contract, test_name in [(BadInputContract, "test_bad_leases_and_outcomes_change_nothing")]:
        method = getattr(contract(), test_name)
        async with _fixtures(ReversedPriority, list(inspect.signature(method).parameters)) as fixtures:
            await method(**{name: fixtures[name] for name in inspect.signature(method).parameters})
    method = ReserveContract().test_priority_first
    async with _fixtures(ReversedPriority, list(inspect.signature(method).parameters)) as fixtures:
        with pytest.raises(AssertionError, match="ReserveContract: reserve must take the highest priority first"):
            await method(**{name: fixtures[name] for name in inspect.signature(method).parameters})


def test_pytest_report_names_the_broken_promise(tmp_path: Path) -> None:
    """What a backend author sees: pytest's report names the contract and the promise."""
    (tmp_path / "test_broken.py").write_text(
        textwrap.dedent(
            """
            import uuid
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import BackendSuite

            class GreedyBackend(DictStoreBackend):
                @staticmethod
                def _is_due(row, now, queues):
                    return row.task.status in ("queued", "running")   # ignores leases and eta

            class TestGreedyBackend(BackendSuite):
                @pytest.fixture
                def backend_factory(self):
                    store = uuid.uuid4().hex
                    return lambda: GreedyBackend(store=store)
            """
        )
    )
    result = _author_runs_pytest(
        tmp_path, "test_broken.py", "no_double_delivery or eta_honoured or priority_first or tasks_survive_reopen"
    )
    result.fnmatch_lines(
        [
            "*ReserveContract: reserve handed out a task that is still leased*",
            "*ReserveContract: reserve handed out a task before its eta*",
        ]
    )
    # redelivery breaks priority order too; PERSISTENT is not declared, so that contract skips
    result.fnmatch_lines(["*SKIPPED*Capability.PERSISTENT*", "*3 failed, 1 skipped*"])


def test_a_backend_call_that_never_answers_fails_its_test_instead_of_hanging_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            import uuid
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import BackendSuite

            class HungBackend(DictStoreBackend):
                async def reserve(self, **options):
                    await asyncio.Event().wait()   # a lock nobody releases

            class TestHungBackend(BackendSuite):
                @pytest.fixture
                def backend_factory(self):
                    store = uuid.uuid4().hex
                    return lambda: HungBackend(store=store)
            """
        )
    )
    result = _author_runs_pytest(tmp_path, "test_hung.py", "priority_first", SITQ_KIT_TIMEOUT="1")
    result.fnmatch_lines(["*ReserveContract: test_priority_first did not finish within 1 s*", "*1 failed*"])


def test_a_thread_that_never_ends_fails_its_test_and_pytest_still_exits(tmp_path: Path) -> None:
    (tmp_path / "test_stuck.py").write_text(
        textwrap.dedent(
            """
            import threading
            import uuid
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import BackendSuite

            class StuckOffTheMainThread(DictStoreBackend):
                async def reserve(self, **options):
                    if threading.current_thread() is not threading.main_thread():
                        threading.Event().wait()   # blocks its thread for good: a lock nobody releases
                    return await super().reserve(**options)

            class TestStuck(BackendSuite):
                @pytest.fixture
                def backend_factory(self):
                    store = uuid.uuid4().hex
                    return lambda: StuckOffTheMainThread(store=store)
            """
        )
    )
    # _author_runs_pytest's subprocess timeout (60 s) fails this test if the stuck thread kept pytest from exiting
    result = _author_runs_pytest(tmp_path, "test_stuck.py", "other_threads_and_loops", SITQ_KIT_TIMEOUT="2")
    result.fnmatch_lines(
        [
            "*ConcurrencyContract: backends used from 2 threads, each with its own event loop, did not finish*",
            "*1 failed*",
        ]
    )


def test_testing_fewer_capabilities_than_the_backend_declares_skips_instead_of_failing(tmp_path: Path) -> None:
    """plugins.md: override backend_capabilities to test fewer capabilities than the class declares.

    The contracts for the capabilities left out skip; so must the tests of what a backend *without*
    them must do, since this backend still has them (it failed: DictStoreBackend declares
    CANCEL_RUNNING, so cancel of a running task rightly returned True).
    """
    (tmp_path / "test_fewer.py").write_text(
        textwrap.dedent(
            """
            import uuid
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import CancelContract

            class TestFewer(CancelContract):
                @pytest.fixture
                def backend_factory(self):
                    store = uuid.uuid4().hex
                    return lambda: DictStoreBackend(store=store)

                @pytest.fixture
                def backend_capabilities(self):
                    return frozenset()
            """
        )
    )
    result = _author_runs_pytest(tmp_path, "test_fewer.py", "TestFewer")
    result.fnmatch_lines(
        [
            "*SKIPPED*backend_capabilities leaves out Capability.CANCEL_RUNNING, which the backend declares: "
            "what a backend without it must do is not tested*",
        ]
    )
    result.re_match_lines([r"=+ 12 passed, 7 skipped in .*"])


def _author_runs_pytest(folder: Path, module: str, selection: str, **env: str) -> pytest.LineMatcher:
    """What a backend author sees running pytest on ``module`` in ``folder`` (its report, to match lines in)."""
    args = ["-rs", "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function", "-k", selection]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, module],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    return pytest.LineMatcher(done.stdout.splitlines())


BLOCKING_BACKENDS = {
    "a time.sleep in a backend method": "time.sleep(30)   # blocks the event loop's thread",
    "a deadlock on a threading.Lock": "\n                ".join(
        ["with self._own:", "    with self._own:   # not re-entrant: waits for itself", "        pass"]
    ),
}


@pytest.mark.parametrize("body", BLOCKING_BACKENDS.values(), ids=list(BLOCKING_BACKENDS))
def test_a_backend_call_that_blocks_the_event_loop_thread_fails_its_test_naming_where(
    tmp_path: Path, body: str
) -> None:
    """plugins.md: a blocked thread (not an await that never answers) fails its test too, instead of hanging the run.

    asyncio's own timeout cannot fire while the loop's thread is blocked, so the kit's watchdog interrupts it.
    """
    source = textwrap.dedent(
        """
        import threading
        import time
        import uuid
        import pytest
        from sitq_dictstore import DictStoreBackend
        from sitq_core.testing import BackendSuite

        class BlockingBackend(DictStoreBackend):
            _own = threading.Lock()

            async def reserve(self, **options):
                BODY
                return await super().reserve(**options)

        class TestBlocking(BackendSuite):
            @pytest.fixture
            def backend_factory(self):
                store = uuid.uuid4().hex
                return lambda: BlockingBackend(store=store)
        """
    ).replace("BODY", body)
    (tmp_path / "test_blocking.py").write_text(source)
    # _author_runs_pytest's subprocess timeout (60 s) fails this test if the blocked thread hung the run
    result = _author_runs_pytest(tmp_path, "test_blocking.py", "priority_first", SITQ_KIT_TIMEOUT="1")
    result.fnmatch_lines(
        [
            "*ReserveContract: test_priority_first did not finish within 1 s: the event loop's thread was "
            "still blocked*",
            "*1 failed*",
        ]
    )
    result.fnmatch_lines(["*in reserve*"])  # the traceback shows the backend method it was blocked in


def test_counts_that_report_tasks_an_empty_store_lacks_blame_counts_not_the_factory(tmp_path: Path) -> None:
    """A counts() that adds 1 to queued made every test fail at setup blaming backend_factory."""
    (tmp_path / "test_counts.py").write_text(
        textwrap.dedent(
            """
            import uuid
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import BackendSuite

            class OffByOne(DictStoreBackend):
                async def counts(self, *, queue=None):
                    counts = await super().counts(queue=queue)
                    return {**counts, "queued": counts["queued"] + 1}

            class TestOffByOne(BackendSuite):
                @pytest.fixture
                def backend_factory(self):
                    store = uuid.uuid4().hex
                    return lambda: OffByOne(store=store)
            """
        )
    )
    result = _author_runs_pytest(tmp_path, "test_counts.py", "priority_first")
    result.fnmatch_lines(
        [
            "*backend fixture: counts() of the fresh store says {'queued': 1, *} but list_tasks() finds no task: "
            "counts() is wrong (see StatsContract)*",
            "*1 error*",
        ]
    )
    assert "backend_factory must give" not in "\n".join(result.lines)


def test_a_store_shared_between_tests_blames_the_factory(tmp_path: Path) -> None:
    """The other side of that check: list_tasks() finds the earlier test's tasks, so the factory is to blame."""
    (tmp_path / "test_shared.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from sitq_dictstore import DictStoreBackend
            from sitq_core.testing import BackendSuite

            class TestShared(BackendSuite):
                @pytest.fixture
                def backend_factory(self):
                    return lambda: DictStoreBackend(store="one-for-all")
            """
        )
    )
    result = _author_runs_pytest(tmp_path, "test_shared.py", "priority_first or no_double_delivery")
    result.fnmatch_lines(
        [
            "*backend_factory must give each test a fresh, empty store (use tmp_path or a unique name); this one "
            "already holds {*'queued': *}, task * among them*"
        ]
    )


@pytest.mark.parametrize("setting", ["1e10", "inf"])
def test_a_kit_timeout_too_large_for_a_thread_wait_means_no_watchdog(tmp_path: Path, setting: str) -> None:
    """plugins.md: a SITQ_KIT_TIMEOUT beyond threading.TIMEOUT_MAX (or inf) turns the watchdog off, not crashes it.

    The watchdog's ``Event.wait`` raises OverflowError past that bound, in its own thread (an error under -W error).
    """
    source = textwrap.dedent(
        """
        import uuid
        import pytest
        from sitq_dictstore import DictStoreBackend
        from sitq_core.testing import BackendSuite

        class TestHuge(BackendSuite):
            @pytest.fixture
            def backend_factory(self):
                store = uuid.uuid4().hex
                return lambda: DictStoreBackend(store=store)
        """
    )
    (tmp_path / "test_huge.py").write_text(source)
    result = _author_runs_pytest(
        tmp_path, "test_huge.py", "priority_first", SITQ_KIT_TIMEOUT=setting, PYTEST_ADDOPTS="-W error"
    )
    result.re_match_lines([r"=+ 1 passed, \d+ deselected in .*"])
    assert not [line for line in result.lines if "Overflow" in line or "Warning" in line], result.str()


def test_a_backend_call_that_outlives_its_cancellation_is_told_apart_from_a_blocked_thread(tmp_path: Path) -> None:
    """plugins.md: awaiting again in a finally after the kit's timeout cancels it is named as such, not as blocking.

    The loop is idle then (its thread waits in the selector), so 'a call that blocks instead of awaiting' would
    send the author looking for a time.sleep that is not there.
    """
    source = textwrap.dedent(
        """
        import asyncio
        import uuid
        import pytest
        from sitq_dictstore import DictStoreBackend
        from sitq_core.testing import BackendSuite

        class StubbornBackend(DictStoreBackend):
            async def reserve(self, **options):
                try:
                    await asyncio.Event().wait()
                finally:
                    await asyncio.Event().wait()   # outlives its cancellation

        class TestStubborn(BackendSuite):
            @pytest.fixture
            def backend_factory(self):
                store = uuid.uuid4().hex
                return lambda: StubbornBackend(store=store)
        """
    )
    (tmp_path / "test_stubborn.py").write_text(source)
    result = _author_runs_pytest(tmp_path, "test_stubborn.py", "priority_first", SITQ_KIT_TIMEOUT="1")
    result.fnmatch_lines(
        [
            "*ReserveContract: test_priority_first did not finish within 1 s: its event loop was idle 2 s later*"
            "outlived its cancellation*",
            "*1 failed*",
        ]
    )
    result.fnmatch_lines(['*test_stubborn.py", line *, in reserve'])  # where the call still awaits
    result.no_fnmatch_line("*blocks instead of awaiting*")


WRONG_TYPES = {
    "reserve returns Task, not ReservedTask": (
        "async def reserve(self, **options):\n    return [lease.task for lease in await super().reserve(**options)]",
        "reserve must return a list of ReservedTask, got a list of Task",
    ),
    "enqueue_many returns None": (
        "async def enqueue_many(self, tasks):\n    await super().enqueue_many(tasks)",
        "enqueue_many must return a list of the task ids (str), one per task (* task*), got None",
    ),
    "get_task returns a dict": (
        "async def get_task(self, task_id):\n"
        "    task = await super().get_task(task_id)\n"
        "    return task and dataclasses.asdict(task)",
        "get_task must return a Task or None, got a dict",
    ),
}


@pytest.mark.parametrize(("method", "expected"), WRONG_TYPES.values(), ids=list(WRONG_TYPES))
def test_a_method_returning_the_wrong_type_fails_every_test_naming_it(
    tmp_path: Path, method: str, expected: str
) -> None:
    """plugins.md: a failure message starts with the contract and the broken promise, for a wrong type too.

    Dozens of tests failed with a raw ``AttributeError: 'Task' object has no attribute 'lease_token'`` (raised
    in ``Backend.complete``) or ``TypeError: 'NoneType' object is not subscriptable`` (the default ``enqueue``),
    wherever the answer was first used; ConcurrencyContract blamed event loops for it.
    """
    source = textwrap.dedent(
        """
        import dataclasses
        import uuid
        import pytest
        from sitq_dictstore import DictStoreBackend
        from sitq_core.testing import BackendSuite

        class WrongType(DictStoreBackend):
            METHOD

        class TestWrongType(BackendSuite):
            @pytest.fixture
            def backend_factory(self):
                store = uuid.uuid4().hex
                return lambda: WrongType(store=store)
        """
    ).replace("METHOD", textwrap.indent(method, " " * 12).lstrip())
    (tmp_path / "test_wrong_type.py").write_text(source)
    result = _author_runs_pytest(tmp_path, "test_wrong_type.py", "TestWrongType", PYTEST_ADDOPTS="--tb=line")
    failures = [line for line in result.lines if re.match(r"\S+:\d+: \S+: ", line)]  # --tb=line: path:line: error
    assert len(failures) > 10, result.str()  # many tests meet the wrong answer
    for line in failures:
        assert re.match(r"\S+:\d+: (Failed|WrongAnswer|AssertionError): [A-Za-z]+Contract: ", line), (
            f"a failure naming no contract: {line}"
        )
    result.fnmatch_lines([f"*: WrongAnswer: *Contract: {expected}*"])
    result.no_fnmatch_line("*every instance must work on its own thread*")  # not a lock bound to an event loop
