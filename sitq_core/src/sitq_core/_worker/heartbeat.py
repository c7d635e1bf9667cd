"""The heartbeat: renew the leases of the tasks the worker holds, and learn of cancel requests.

A lease not renewed in time lets another worker run the task again, so renewals run every third
of the lease and are retried soon after a failure (``heartbeat_retry_delay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from ..bounded import within
from ..errors import StoreGoneError
from ..models import LeaseState, Outcome, TaskStatus
from .calls import _handed_back_awaitable
from .delays import heartbeat_retry_delay
from .limits import _CANCEL_CHECK, _CANCEL_READS_MAX, _RUNNING_CANCEL_CHECK
from .log import logger
from .running import _Running
from .state import WorkerState


class Heartbeat(WorkerState):
    """Renews the held tasks' leases and reads their cancel requests."""

    if TYPE_CHECKING:

        def _store_gone(self, exc: StoreGoneError) -> None: ...

        def _log_failing_store(
            self, failures: int, failing_since: float, delay: float, what: str = "backend call"
        ) -> None: ...

        def _has_unstarted(self) -> bool: ...

        def _settle(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _cancelled(self, running: _Running) -> Outcome: ...

        def _report(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _drop_unstarted(self, running: _Running) -> None: ...

    async def _cancel_states(self, task_ids: list[str]) -> dict[str, LeaseState]:
        """Which of these tasks have a cancel request, read from the store (leases are not renewed here)."""
        states: dict[str, LeaseState] = {}
        for task_id in task_ids:
            task = await self.backend.get_task(task_id)
            requested = task is not None and task.status == TaskStatus.RUNNING and task.cancel_requested
            states[task_id] = LeaseState.CANCEL_REQUESTED if requested else LeaseState.HELD
        return states

    async def _heartbeat_loop(self) -> None:
        """Renew every lease each third of ``lease_timeout``; in between, check held tasks for cancel requests.

        A task reserved ahead (prefetched) shows ``running`` in the store, so
        ``cancel()`` can only request its cancellation; the request reaches the
        worker with a heartbeat. Tasks that have waited for a slot longer than
        ``_CANCEL_CHECK`` are checked that often, so one cancelled while it waits
        is dropped before it starts instead of up to a renewal period later;
        tasks held longer than ``_RUNNING_CANCEL_CHECK`` (running ones) are
        checked that often, so cancelling a long task takes about a second.
        A failed renewal is retried after ``heartbeat_retry_delay``.
        """
        interval = max(self.lease_timeout / 3.0, 0.01)
        renew_at = time.monotonic() + interval
        failures, failing_since = 0, 0.0  # heartbeats failed in a row, since when (monotonic)
        while True:
            # tasks waiting for a slot are checked for cancel requests every _CANCEL_CHECK, running ones
            # every _RUNNING_CANCEL_CHECK, so a cancel takes effect in about a second, not a renewal period
            check_every = _CANCEL_CHECK if self._has_unstarted() else _RUNNING_CANCEL_CHECK if self._held else None
            if check_every is not None:
                await asyncio.sleep(max(0.0, min(renew_at, time.monotonic() + check_every) - time.monotonic()))
            else:  # nothing held: sleep to the renewal, or until tasks are reserved
                self._reserved_more.clear()
                with contextlib.suppress(TimeoutError):
                    await within(self._reserved_more.wait(), max(0.0, renew_at - time.monotonic()))
                if time.monotonic() < renew_at:
                    continue
            now = time.monotonic()
            renewal = now >= renew_at
            if renewal:
                renew_at = now + interval
                sent = {r.reserved.id: r for r in self._held.values() if not r.lease_lost}
            else:
                sent = {
                    r.reserved.id: r
                    for r in self._held.values()
                    if not r.lease_lost
                    and not r.settled
                    and not r.cancel_requested
                    and now - r.held_since > (_CANCEL_CHECK if r.started_at is None else _RUNNING_CANCEL_CHECK)
                }
            if not sent:
                continue
            leases = [(task_id, r.reserved.lease_token) for task_id, r in sent.items()]
            tokens = dict(leases)
            sent_at = time.monotonic()  # a renewed lease lasts at least lease_timeout from here
            try:
                if renewal or len(sent) > _CANCEL_READS_MAX:
                    renewal = True
                    states = await self.backend.heartbeat(leases, self.lease_timeout)
                else:  # a check between renewals: reads, not a write per task (index churn on PostgreSQL)
                    states = await self._cancel_states(list(sent))
            except StoreGoneError as exc:  # a worker whose slots are all busy reserves nothing: it learns here
                self._store_gone(exc)
                continue
            except Exception:
                failures += 1
                if failures == 1:
                    failing_since = time.monotonic()
                self._renewals_failing = self._renewals_failing or renewal
                if renewal:  # retried soon, not a renewal period later: a few misses would lose the leases
                    renew_at = time.monotonic() + heartbeat_retry_delay(self.lease_timeout, failures)
                self._log_failing_store(failures, failing_since, max(0.0, renew_at - time.monotonic()), "heartbeat")
                continue
            if renewal:  # a cancel check's read that works says nothing of the renewal's write: the run goes on
                failures = 0
                self._renewals_failing = False
            for task_id, state in states.items():
                running = sent.get(task_id)
                if (
                    running is None
                    or self._held.get(task_id) is not running
                    or running.reserved.lease_token != tokens[task_id]
                ):
                    # the attempt or lease it answers for ended here meanwhile (a retry may already be the
                    # next attempt of the same task; a task still running may have been taken back under a
                    # new lease): the answer is not about the current one
                    continue
                if renewal and state != LeaseState.LOST:
                    running.lease_until = sent_at + self.lease_timeout
                if state == LeaseState.LOST:
                    if running.outcome_queued:
                        # its outcome may have been committed while this heartbeat was in flight (a finished
                        # task reads as not running); the outcome's own fenced report tells, and warns if lost
                        continue
                    running.lease_lost = True
                    # INFO: its report, refused when the task ends, logs the one documented WARNING (delivery.md)
                    logger.info(
                        "worker %s: a lease renewal found the lease of task %s gone (another worker may take it)",
                        self.worker_id,
                        task_id,
                    )
                    self._drop_unstarted(running)
                elif state == LeaseState.CANCEL_REQUESTED and not running.cancel_requested:
                    if running.batch is not None:
                        # one still waiting in its batch is withdrawn and reported at once; a running sync
                        # call cannot be interrupted (it reports "cancelled" when it ends); one that has
                        # already returned keeps its real outcome
                        # (one whose call handed back an awaitable runs that on the loop, after the batch's
                        # thread is done: it is interrupted as an async task when awaited now, and never
                        # started when its turn is still to come)
                        if running.batch.withdraw(running.batch_index):
                            running.cancel_requested = True
                            self._settle(running, self._cancelled(running), {"error": "cancelled"})
                        elif not running.batch.finished(running.batch_index) or _handed_back_awaitable(
                            running.batch.result(running.batch_index)
                        ):
                            running.cancel_requested = True
                            if running.on_loop and running.future is not None and not running.future.done():
                                running.future.cancel()  # the batch's task, awaiting this member's awaitable
                        continue
                    running.cancel_requested = True
                    if running.future is not None and not running.future.done():
                        # what runs on the loop is interrupted (an async call that has started, or the
                        # awaitable a sync call handed back); one not started yet reports "cancelled" as it
                        # begins, and a sync call (a thread cannot be interrupted) reports it when it
                        # returns, keeping its slot until then (its awaitable, if any, is then not started)
                        if running.on_loop:
                            running.future.cancel()
                    elif running.future is None and running in self._waiting:
                        self._waiting.remove(running)
                        self._executing += 1
                        self._report(
                            running,
                            Outcome(
                                task_id,
                                running.reserved.lease_token,
                                "cancelled",
                                error="cancelled",
                                finished_at=self.backend.now(),
                            ),
                            {},
                        )
