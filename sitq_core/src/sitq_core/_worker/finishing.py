"""Book-keeping after a task ends: counting its outcome once the store took it, forgetting it, leases run out.

Split from the exchange so what happens to a held task once it is over is read in one place.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from .. import checks
from ..models import Outcome, Result, Task, TaskStatus
from ..plugins import get_plugin_manager
from .failures import _log_error
from .limits import _FAILING_LOG_EVERY
from .log import logger
from .running import _Running
from .state import WorkerState


def _as_reported(task: Task, outcome: Outcome) -> Task:
    """``task`` as the store has it once it took ``outcome``: what the outcome hooks get.

    The reserved snapshot said ``running``, with no ``finished_at`` or error;
    a task the store ended by itself (``store_endings``) comes as stored, and
    this gives observers of the worker's outcomes the same picture. A retry
    is ``queued`` again, due at its retry time. Built only for observers.
    """
    if outcome.kind == "retry":
        return task.with_changes(
            status=TaskStatus.QUEUED,
            eta=outcome.retry_at if outcome.retry_at is not None else task.eta,
            error=outcome.error,
        )
    return task.with_changes(
        status=TaskStatus(outcome.kind),
        finished_at=outcome.finished_at,
        error=outcome.error,
        started_at=outcome.started_at if outcome.started_at is not None else task.started_at,
    )


def _seconds(value: float) -> str:
    """Seconds for a log line: at most three decimals, no trailing zeros ("1000", "0.25")."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


class Finishing(WorkerState):
    """Counts and forgets tasks once their outcome was taken, or their lease ran out."""

    if TYPE_CHECKING:

        def _keep_late_outcome(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _poke(self) -> None: ...

        def _backlog_settled(self, batch: list[tuple[_Running, Outcome, dict[str, Any]]]) -> None: ...

    def _finished(
        self,
        batch: list[tuple[_Running, Outcome, dict[str, Any]]],
        live: list[tuple[_Running, Outcome, dict[str, Any]]],
        accepted: list[bool],
    ) -> None:
        """Book-keeping after the backend answered for ``live`` (the part of ``batch`` it was sent)."""
        for running, outcome, extra in batch:
            if running.lease_lost and not any(item[0] is running for item in live):
                self._keep_late_outcome(running, outcome, extra)
        finished_ids: list[str] = []
        for (running, outcome, extra), ok in zip(live, accepted, strict=True):
            if ok:
                self._after_accept(running, outcome, extra)
                if outcome.kind in ("success", "failed", "cancelled"):
                    finished_ids.append(outcome.task_id)
            else:
                self._keep_late_outcome(running, outcome, extra)
        self._forget(batch)
        if finished_ids:
            self.backend.notify_results(finished_ids)
        if any(item[1].kind == "retry" for item in live):
            self.backend.notify_work()

    def _forget(self, batch: list[tuple[_Running, Outcome, dict[str, Any]]]) -> None:
        for running, _outcome, _extra in batch:
            self._unhold(running)
        self._backlog_settled(batch)

    def _unhold(self, running: _Running) -> None:
        """Forget this attempt (and not a newer attempt of the same task held under a new lease)."""
        if self._held.get(running.id) is running:
            del self._held[running.id]
        if running is self._suspect:  # it ended (or went back): reserving and starting resume
            self._suspect = None
            if self._suspect_timer is not None:
                self._suspect_timer.cancel()
                self._suspect_timer = None
            self._poke()

    def _after_accept(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        task = running.reserved.task
        self.processed += 1
        if outcome.kind == "success":
            self.succeeded += 1
        elif outcome.kind in ("failed", "cancelled"):
            self.failed += 1
        if outcome.kind == "failed":  # what an operator reads in the logs, without querying the store
            logger.warning(
                "worker %s: task %s (%s) failed after %d attempt(s): %s",
                self.worker_id,
                task.id,
                checks.one_log_line(task.function_name),
                task.attempts,
                _log_error(outcome.error, extra.get("error")),
            )
        elif outcome.kind == "retry":
            self._log_retry(running, outcome, extra)
        elif outcome.kind == "success" and logger.isEnabledFor(logging.DEBUG):  # free at the default level
            logger.debug(
                "worker %s: task %s (%s) on queue %r succeeded on attempt %d in %.3f s",
                self.worker_id,
                task.id,
                checks.one_log_line(task.function_name),
                task.queue,
                task.attempts,
                extra.get("duration", 0.0),
            )
        manager = get_plugin_manager()
        if outcome.kind == "success":
            if manager.has_observers("sitq_task_succeeded"):
                result = Result(
                    id=task.id,
                    task_id=task.id,
                    status="success",
                    value=outcome.value,
                    enqueued_at=task.enqueued_at,
                    started_at=outcome.started_at,
                    finished_at=outcome.finished_at,
                    attempts=running.reserved.attempt,
                    serializer=extra.get("serializer", task.serializer),
                )
                manager.notify(
                    "sitq_task_succeeded",
                    task=_as_reported(task, outcome),
                    result=result,
                    duration=extra.get("duration", 0.0),
                )
        elif outcome.kind == "cancelled":
            if manager.has_observers("sitq_task_cancelled"):
                manager.notify(
                    "sitq_task_cancelled", task=_as_reported(task, outcome), duration=extra.get("duration", 0.0)
                )
        elif outcome.kind in ("failed", "retry"):
            failed_heard = manager.has_observers("sitq_task_failed")
            retried_heard = outcome.kind == "retry" and manager.has_observers("sitq_task_retried")
            if not (failed_heard or retried_heard):
                return
            reported = _as_reported(task, outcome)  # one picture of the task for both hooks
            if failed_heard:
                manager.notify(
                    "sitq_task_failed",
                    task=reported,
                    error=extra.get("error", outcome.error or ""),
                    will_retry=outcome.kind == "retry",
                )
            if retried_heard:
                manager.notify(
                    "sitq_task_retried", task=reported, attempt=running.reserved.attempt, eta=outcome.retry_at
                )

    def _log_retry(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        """One INFO line per retry: the failure, and when the retry is due (seconds from now, and in UTC)."""
        if not logger.isEnabledFor(logging.INFO):
            return
        task = running.reserved.task
        due = outcome.retry_at
        if due is None:
            when = "now"
        else:
            wait = max((due - self.backend.now()).total_seconds(), 0.0)
            when = f"in {_seconds(wait)} s (at {due.isoformat(timespec='milliseconds')})"
        logger.info(
            "worker %s: task %s (%s) failed on attempt %d, retrying %s: %s",
            self.worker_id,
            task.id,
            checks.one_log_line(task.function_name),
            task.attempts,
            when,
            _log_error(outcome.error, extra.get("error")),
        )

    def _lease_ran_out(self, running: _Running) -> bool:
        """True (and the task let go, unstarted) when its lease surely expired: no renewal got through.

        While the store is out of reach for longer than a lease, the tasks
        reserved ahead are free for any worker again; starting them here as
        well ran each of them twice once the store came back.
        """
        if time.monotonic() < running.lease_until:
            return False
        self._let_expired_go(running)
        return True

    def _let_expired_go(self, running: _Running) -> None:
        """Forget an unstarted task whose lease ran out (see ``_lease_ran_out``), logging at most once a minute."""
        running.lease_lost = running.settled = True
        self._unhold(running)
        self._unstarted_dropped += 1
        now = time.monotonic()
        if now - self._failing_logged.get("unstarted", -math.inf) >= _FAILING_LOG_EVERY:
            self._failing_logged["unstarted"] = now
            # the cause as far as it is known: the loop watch saw the loop stand still (no renewal was sent),
            # or the store refused the renewals; otherwise (a paused process, a renewal left unanswered) neither
            if now - self._loop_stall_seen <= self.lease_timeout:
                cause = "ran out while the event loop was blocked (no renewal could be sent)"
            elif self._renewals_failing:
                cause = "ran out while the store could not renew them"
            else:
                cause = (
                    "could not be renewed in time (the event loop was blocked or the process paused, "
                    "or the store did not answer)"
                )
            logger.warning(
                "worker %s: %d reserved task(s) not started: their leases %s; they run again from the queue",
                self.worker_id,
                self._unstarted_dropped,
                cause,
            )
            self._unstarted_dropped = 0

    def _drop_unstarted(self, running: _Running) -> None:
        """A task whose lease is lost must not start here: another worker may hold it now."""
        if running.batch is not None:
            if running.batch.withdraw(running.batch_index):
                running.settled = True
                self._unhold(running)
        elif running.future is None and running in self._waiting:
            self._waiting.remove(running)
            running.settled = True
            self._unhold(running)
