"""The exchange with the store: one backend call per cycle reports finished outcomes and reserves new tasks.

It also takes the last outcomes when the worker stops, and logs outcomes given up on or left
unreported and a store that keeps failing (at most once a ``_FAILING_LOG_EVERY``).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from ..errors import StoreFullError, StoreGoneError, ValidationError, describe_exception, exception_text
from ..models import Outcome, ReservedTask
from . import limits
from .delays import store_retry_delay
from .failures import _log_text
from .limits import _FAILING_LOG_EVERY, _IDS_NAMED, _MAX_FINISH_BATCH, _MAX_REPORT_FAILURES
from .log import logger
from .running import _id_list, _Running
from .state import Stoppable, WorkerState


class StoreExchange(WorkerState):
    """Reports outcomes and reserves tasks, one backend call per cycle."""

    if TYPE_CHECKING:

        async def _after_tear_down(self) -> None: ...

        async def _take_reserved(self, reserved: list[ReservedTask]) -> None: ...

        def _deferring(self) -> bool: ...

        async def _idle(self, *, can_reserve: bool, timeout: float) -> bool: ...

        def _ahead(self) -> int: ...

        async def _idle_timeout(self) -> float: ...

        def _finished(
            self,
            batch: list[tuple[_Running, Outcome, dict[str, Any]]],
            live: list[tuple[_Running, Outcome, dict[str, Any]]],
            accepted: list[bool],
        ) -> None: ...

        def _forget(self, batch: list[tuple[_Running, Outcome, dict[str, Any]]]) -> None: ...

        def _backlog_full(self) -> bool: ...

        def _dispatch(self) -> None: ...

        def _failure(self, running: _Running, error: str, traceback: str, *, retry: bool) -> Outcome: ...

    async def _exchange_loop(self) -> None:
        """Report finished outcomes and reserve new tasks, in one backend call per cycle.

        ``finish_and_reserve`` lets a backend commit both at once (one fsync
        per cycle). When the queue is drained the loop sleeps until an outcome
        arrives, new work is announced, or the worker stops.
        """
        try:
            await self._exchange_cycles()
        except asyncio.CancelledError:
            assert self._stopping is not None
            stopping = self._stopping.is_set()
            self._exchange_settled.set()  # what it was sending is back in _outcomes (_give_back_all waits)
            if not stopping:  # not stop()'s doing: the event loop is ending under the worker
                await self._after_tear_down()
            raise
        except Exception as exc:
            # A bug, not a task failure: stop cleanly (leases are released or expire, so other
            # workers take over) and let run() raise, so a supervisor restarts this process.
            logger.exception("worker %s: the exchange loop failed; stopping the worker", self.worker_id)
            self._fatal = exc
            self._background.add(asyncio.ensure_future(cast(Stoppable, self).stop(timeout=self.shutdown_timeout)))
            raise
        finally:
            self._exchange_settled.set()
            self._log_gave_up_left("the worker stops")  # no later line would tell them

    async def _exchange_cycles(self) -> None:
        assert self._stopping is not None
        drained = False
        caught_up = False  # the last reserve got fewer tasks than asked: commits are paced (pacing.py)
        failures = 0
        failing_since = 0.0  # monotonic time of the first failure in a row
        pacer = self._pacer
        while True:
            batch = self._take_outcomes()
            want = 0
            if (
                not self._stopping.is_set()
                and not drained
                and self._suspect is None
                and not self._deferring()
                and not (self._pending_bytes > limits._MAX_PENDING_RESULT_BYTES and self._backlog_full())
            ):  # (results over their byte budget: nothing starts until they are stored, so none is reserved)
                free = self.max_concurrency - self._hung_slots
                want = max(0, free + (self._ahead() if free > 0 else 0) - (len(self._held) - len(batch)))
                if self._one_at_a_time:
                    want = min(want, 1)
            if batch or want:
                if caught_up and not self._stopping.is_set():
                    pause = pacer.take()
                    if pause > 0:
                        # let more work arrive and more tasks finish; then claim and finish in one commit
                        self._put_back(batch)
                        await asyncio.sleep(pause)
                        drained = False
                        continue
                # decided once: a heartbeat may mark a lease lost while the call is in flight
                live = [item for item in batch if not item[0].lease_lost]
                began = time.perf_counter()
                try:
                    accepted, reserved = await self._exchange(live, want)
                except asyncio.CancelledError:
                    # the loop is ending (or a stop cut the call short): what this call was to report is
                    # reported by whoever settles the worker now, not lost with the call
                    self._unanswered.update((o.task_id, o.lease_token) for _r, o, _e in live)
                    self._put_back(batch)
                    raise
                except StoreGoneError as exc:
                    # no retry reaches the store again: what this call was to report is lost with it
                    self._store_gone(exc)
                    return
                except Exception as exc:
                    if self._refused_outcomes(exc, batch, live):
                        continue  # reported again at once: one at a time, or the refused one as failed (or retried)
                    # a connection lost after the commit went out: the outcomes may be stored already
                    self._unanswered.update((o.task_id, o.lease_token) for _r, o, _e in live)
                    if not batch and self._stopping.is_set():
                        # a reserve that was in flight as the stop began: nothing to retry, nothing was taken
                        logger.warning(
                            "worker %s: the reserve in flight as it stopped failed (%s); it took no task",
                            self.worker_id,
                            _log_text(describe_exception(exc)),
                        )
                        continue
                    failures += 1
                    if failures == 1:
                        failing_since = time.monotonic()
                    delay = store_retry_delay(failures, self.poll_interval)
                    if len(live) > 1 and failures >= 2:
                        # maybe one outcome is what the store refuses: report one at a time for a while,
                        # so it cannot hold the others back
                        self._single_reports = max(self._single_reports, len(batch))
                    # An outage shorter than the lease loses nothing: outcomes are kept and retried until
                    # their leases are surely gone (another worker may run them then); a closing worker
                    # gives up sooner, so stop() does not wait a whole lease on a dead store.
                    gave_up = failures > _MAX_REPORT_FAILURES and (
                        self._closing or time.monotonic() - failing_since > self.lease_timeout
                    )
                    if gave_up and batch:
                        self._log_gave_up([running.id for running, _o, _e in batch], failing_since)
                        self._unanswered.difference_update((o.task_id, o.lease_token) for _r, o, _e in batch)
                        self._forget(batch)
                        if not self._stopping.is_set():  # results held back for the budget are gone: start
                            self._dispatch()
                    else:
                        self._log_failing_store(failures, failing_since, delay)
                        self._put_back(batch)
                    # a plain sleep: the outcomes just put back (and new ones) must not end it at once
                    await asyncio.sleep(delay)
                    continue
                if failures:  # the store answers again: the outcomes given up since the last line are told now
                    self._log_gave_up_left("it answers again")
                failures = 0
                if self._single_reports and batch:
                    self._single_reports -= 1
                pacer.observe(time.perf_counter() - began, len(live) + len(reserved))
                accepted = await self._stored_before(live, accepted)
                self._finished(batch, live, accepted)
                if want:
                    caught_up = len(reserved) < want
                    drained = caught_up
                await self._take_reserved(reserved)
                if batch or reserved:
                    continue
            if self._closing and not self._outcomes:
                return
            can_reserve = drained and not self._stopping.is_set()
            await self._idle(can_reserve=can_reserve, timeout=await self._idle_timeout())
            # Look again after every wake, the outcome's too: wait_for_work covers only the notices since
            # the last reserve began, and the wait just ended took that reserve's mark. Work announced
            # while the outcome is reported would go unheard until the poll interval ran out.
            drained = False

    def _store_gone(self, exc: StoreGoneError) -> None:
        """The store is gone for good (a SQLite file deleted or replaced): stop, and let ``run()`` raise.

        Retrying would go on forever (an idle worker would wait for work that
        only the new store receives), and a supervisor restarts a process only
        once it exits; a restart connects to what is at that place now.
        """
        if self._fatal is not None:
            return
        logger.error("worker %s: stopping: %s", self.worker_id, exc.message)
        self._fatal = exc
        self._background.add(asyncio.ensure_future(cast(Stoppable, self).stop(timeout=self.shutdown_timeout)))

    def _refused_outcomes(
        self,
        exc: Exception,
        batch: list[tuple[_Running, Outcome, dict[str, Any]]],
        live: list[tuple[_Running, Outcome, dict[str, Any]]],
    ) -> bool:
        """Settle outcomes the store refused (see ``_refused``): as bad input, or a large result on a full disk.

        Bad input (a return value larger than the store can hold) is the
        outcome's own and no retry cures it; a result larger than the room left
        on a full disk does not fit at the next try either, while small writes
        still may. Retrying until the lease expired ran the task again, to the
        same end, and at last failed it for "lease expired" with no word of the
        disk. Several outcomes are put back to be reported one at a time, so
        the others go through; a lone refused one is reported in a small
        outcome instead, saying why (``_instead``). False: not such a refusal
        (or that small outcome was refused too), retry as usual.

        That small outcome refused for want of room too says the disk is full
        for every write, not too full for this result: the result itself goes
        back in ``batch`` (and ``live``) in its place, retried as usual, and
        is never replaced again (``_refused``), so it is stored once the disk
        has room, as before the result was ever replaced.
        """
        if isinstance(exc, StoreFullError) and len(batch) == 1 and live and "instead_of" in batch[0][2]:
            batch[0] = live[0] = self._no_room_for_any(batch[0], exc)
            return False
        if not _refused(exc, live):
            return False
        if len(batch) > 1:
            self._single_reports = max(self._single_reports, len(batch))
            self._put_back(batch)
            return True
        _running, outcome, extra = batch[0]
        if extra.get("refused"):
            return False
        self._put_back([self._instead(batch[0], exc)])
        if outcome.value is not None:  # the outcome reported instead carries no value
            self._pending_bytes -= len(outcome.value)
        return True

    def _instead(
        self, item: tuple[_Running, Outcome, dict[str, Any]], exc: Exception
    ) -> tuple[_Running, Outcome, dict[str, Any]]:
        """The small outcome reported for one the store refused (``_refused``): the task failing, saying why."""
        if isinstance(exc, StoreFullError):
            return self._no_room_instead(*item, exc)
        assert isinstance(exc, ValidationError)
        return self._failed_instead(*item, exc)

    def _failed_instead(
        self, running: _Running, outcome: Outcome, extra: dict[str, Any], exc: ValidationError
    ) -> tuple[_Running, Outcome, dict[str, Any]]:
        """The failed outcome reported for one the store refused as bad input (see ``_refused_outcomes``)."""
        logger.error(
            "worker %s: the store refused the outcome of task %s; reporting it failed instead: %s",
            self.worker_id,
            outcome.task_id,
            exc,
        )
        failed = Outcome(
            outcome.task_id,
            outcome.lease_token,
            "failed",
            error=f"the task's outcome could not be stored: {exc.message}",
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
        )
        return running, failed, {**extra, "error": exc, "refused": True}

    def _no_room_instead(
        self, running: _Running, outcome: Outcome, extra: dict[str, Any], exc: StoreFullError
    ) -> tuple[_Running, Outcome, dict[str, Any]]:
        """For a result the full store had no room for: the task failing for that, retried as its policy allows.

        A full disk may be freed before the retry is due, so the task is
        retried as for an exception it raised (``max_retries``), and fails
        for good only when it has no retry left. No traceback: the error is
        the store's, and where the worker stood says nothing of the task.
        """
        size = len(outcome.value or b"")
        reason = exception_text(exc.cause) if exc.cause is not None else exc.message
        error = f"the task's result of {size:,} bytes could not be stored: the disk holding the store is full"
        error += f" ({reason})"
        logger.error(
            "worker %s: the store has no room for the result of task %s (%s bytes); reporting the task failed "
            "instead: %s",
            self.worker_id,
            outcome.task_id,
            f"{size:,}",
            exc,
        )
        failed = self._failure(running, error, "", retry=True)
        failed = dataclasses.replace(failed, traceback=None, finished_at=outcome.finished_at)
        return running, failed, {**extra, "error": exc, "refused": True, "instead_of": (outcome, extra)}

    def _no_room_for_any(
        self, item: tuple[_Running, Outcome, dict[str, Any]], exc: StoreFullError
    ) -> tuple[_Running, Outcome, dict[str, Any]]:
        """The result ``item`` (a failure from ``_no_room_instead``) stood for: the store has no room for that
        failure either, so none for any write; the result is reported again as it was, never replaced again."""
        running, _failed, extra = item
        outcome, original_extra = extra["instead_of"]
        logger.warning(
            "worker %s: the store has no room for the failure of task %s either (%s); reporting its result "
            "again until the disk has room",
            self.worker_id,
            outcome.task_id,
            exc.message,
        )
        if outcome.value is not None:  # held again until stored
            self._pending_bytes += len(outcome.value)
        return running, outcome, {**original_extra, "room_for_none": True}

    async def _final_finish(
        self, live: list[tuple[_Running, Outcome, dict[str, Any]]]
    ) -> tuple[list[tuple[_Running, Outcome, dict[str, Any]]], list[bool]]:
        """``finish_many`` of the last outcomes as the loop ends; one the store refuses is reported failed.

        Refused as ``_refused`` tells. Returns what was reported (a refused
        outcome replaced) and the answers.
        """
        try:
            return live, await self.backend.finish_many([outcome for _r, outcome, _e in live])
        except (ValidationError, StoreFullError) as exc:
            if not _refused(exc, live):
                raise
        reported: list[tuple[_Running, Outcome, dict[str, Any]]] = []
        accepted: list[bool] = []
        for item in live:  # one at a time, so a refused one cannot take the others down
            try:
                answer = await self.backend.finish_many([item[1]])
            except (ValidationError, StoreFullError) as exc:
                if not _refused(exc, [item]):
                    raise
                item = self._instead(item, exc)
                answer = await self.backend.finish_many([item[1]])
            reported.append(item)
            accepted += answer
        return reported, accepted

    async def _stored_before(
        self, live: list[tuple[_Running, Outcome, dict[str, Any]]], accepted: list[bool]
    ) -> list[bool]:
        """``accepted``, with True for each refused final outcome that an earlier, unanswered report had stored.

        A report whose answer was lost (the event loop ending while it was on
        its way, a connection cut after its commit) may have gone in; the
        report sent again is then refused, the task being final already. That
        is no lost lease: the worker warned "reclaimed by another worker" for
        an outcome it had stored itself. The task read back tells: final with
        the outcome's status, held last by this worker on this very attempt.
        """
        if not self._unanswered:
            return accepted
        answers = list(accepted)
        for index, ((running, outcome, _extra), ok) in enumerate(zip(live, accepted, strict=True)):
            key = (outcome.task_id, outcome.lease_token)
            if ok or key not in self._unanswered:
                self._unanswered.discard(key)
                continue
            self._unanswered.discard(key)
            if outcome.kind not in ("success", "failed", "cancelled"):
                continue
            try:
                task = await self.backend.get_task(outcome.task_id)
            except Exception:  # cannot tell: it is reported as a lost lease, as before
                logger.debug("worker %s: could not read task %s back", self.worker_id, outcome.task_id, exc_info=True)
                continue
            if (
                task is not None
                and task.status.value == outcome.kind
                and task.worker_id == self.worker_id
                and task.attempts == running.reserved.attempt
            ):
                logger.info(
                    "worker %s: task %s: its outcome was already stored by an earlier report whose answer was "
                    "lost; reporting it again changed nothing",
                    self.worker_id,
                    outcome.task_id,
                )
                answers[index] = True
        return answers

    def _log_gave_up(self, task_ids: list[str], failing_since: float) -> None:
        """Outcomes given up on: the traceback the first time, then a count at most every ``_FAILING_LOG_EVERY``.

        Once given up, every later outcome is given up at once while the store
        stays down: logged each time, a full disk wrote five tracebacks a second.
        Those given up between two lines are told by the next one, or by
        ``_log_gave_up_left`` when the store answers again or the worker stops.
        """
        self._gave_up += len(task_ids)
        self._gave_up_ids += task_ids[: max(0, _IDS_NAMED - len(self._gave_up_ids))]
        self._gave_up_since = failing_since
        now = time.monotonic()
        last = self._failing_logged.get("gave up")
        if last is not None and now - last < _FAILING_LOG_EVERY and last >= failing_since:
            return
        self._failing_logged["gave up"] = now
        # the first of this run of failures: with its traceback
        self._told_gave_up("", with_traceback=last is None or last < failing_since)

    def _log_gave_up_left(self, why: str) -> None:
        """Tell the outcomes given up on since the last line about them: no next line comes (``why``)."""
        if self._gave_up:
            self._told_gave_up(f"; {why}", with_traceback=False)

    def _told_gave_up(self, why: str, *, with_traceback: bool) -> None:
        """One line for the outcomes given up on since the last one: how many, and which tasks."""
        count, named = self._gave_up, _id_list(self._gave_up_ids, self._gave_up)
        message = (
            "worker %s: gave up reporting %d outcome(s) (store failing for %.0f s%s): %s; they run again when "
            "their leases expire"
        )
        args = (self.worker_id, count, time.monotonic() - self._gave_up_since, why, named)
        self._gave_up, self._gave_up_ids = 0, []
        if with_traceback:
            logger.exception(message, *args)
        else:
            logger.error(message, *args)

    def _unreported(self) -> list[str]:
        """Task ids of the outcomes still waiting to be reported (queued, or in a report on its way)."""
        ids = dict.fromkeys(running.id for running, _outcome, _extra in self._outcomes)
        ids.update(dict.fromkeys(r.id for r in self._held.values() if r.outcome_queued))
        return list(ids)

    def _log_failing_store(self, failures: int, failing_since: float, delay: float, what: str = "backend call") -> None:
        """A failed backend call: its traceback the first time, then one line at most every ``_FAILING_LOG_EVERY``.

        A store that stays broken (a damaged file, a lost table) must not fill
        the logs with a traceback a second (5 million lines a day). A lost
        connection (``ConnectionError``: a session the server ended, a network
        blip) is first a one-line warning: the retry usually overcomes it, and
        only when that fails too is it logged as an error, with the traceback.
        """
        error = sys.exc_info()[1]
        if failures == 1 and isinstance(error, builtins.ConnectionError):
            self._failing_logged.pop(what, None)  # the traceback is still to come, should the retry fail
            logger.warning(
                "worker %s: %s failed (%s); retrying in %.2fs",
                self.worker_id,
                what,
                _log_text(describe_exception(error)),
                delay,
            )
        elif failures == 1 or what not in self._failing_logged:
            logger.exception("worker %s: %s failed; retrying in %.2fs", self.worker_id, what, delay)
            self._failing_logged[what] = time.monotonic()
        elif time.monotonic() - self._failing_logged[what] >= _FAILING_LOG_EVERY:
            self._failing_logged[what] = time.monotonic()
            logger.error(
                "worker %s: %ss still failing (%d in a row over %.0f s), retrying every %.2fs: %s",
                self.worker_id,
                what,
                failures,
                time.monotonic() - failing_since,
                delay,
                _log_text("an unknown error" if error is None else describe_exception(error)),
            )

    def _take_outcomes(self) -> list[tuple[_Running, Outcome, dict[str, Any]]]:
        """The next outcomes to report: up to ``_MAX_FINISH_BATCH``, and no more once they carry the byte
        budget (one transaction does not carry 512 results of 5 MB); they count as on their way."""
        batch: list[tuple[_Running, Outcome, dict[str, Any]]] = []
        limit = 1 if self._single_reports else _MAX_FINISH_BATCH
        budget = limits._MAX_PENDING_RESULT_BYTES
        carried = 0
        outcomes = self._outcomes
        while outcomes and len(batch) < limit and carried < budget:
            item = outcomes.popleft()
            batch.append(item)
            value = item[1].value
            if value is not None:
                carried += len(value)
        self._sending = batch
        return batch

    def _put_back(self, batch: list[tuple[_Running, Outcome, dict[str, Any]]]) -> None:
        """Queue ``batch`` again at the front, to be reported first (no longer on its way)."""
        self._outcomes.extendleft(reversed(batch))
        self._sending = []

    async def _exchange(
        self, batch: list[tuple[_Running, Outcome, dict[str, Any]]], want: int
    ) -> tuple[list[bool], list[ReservedTask]]:
        """One backend call: report the outcomes of ``batch`` and reserve up to ``want`` tasks."""
        live = [outcome for _running, outcome, _extra in batch]
        if want == 0:
            return (await self.backend.finish_many(live) if live else []), []
        if not live:
            reserved = await self.backend.reserve(
                worker_id=self.worker_id, limit=want, lease_seconds=self.lease_timeout, queues=self.queues
            )
            return [], reserved
        return await self.backend.finish_and_reserve(
            live, worker_id=self.worker_id, limit=want, lease_seconds=self.lease_timeout, queues=self.queues
        )


def _refused(exc: BaseException, live: list[tuple[_Running, Outcome, dict[str, Any]]]) -> bool:
    """True when the store refused reporting ``live`` for one of its outcomes, which no retry of the same cures.

    Either it refused one as bad input (``ValidationError(parameter="outcomes")``:
    a value larger than it can hold), or it has no room left
    (``StoreFullError``) while one carries a result larger than
    ``_SMALL_RESULT_BYTES``, which the failure reported instead would not be.
    """
    if not live:
        return False
    if isinstance(exc, StoreFullError):  # not one whose failure found no room either (_no_room_for_any)
        return any(len(o.value or b"") > limits._SMALL_RESULT_BYTES and "room_for_none" not in e for _r, o, e in live)
    return isinstance(exc, ValidationError) and getattr(exc, "parameter", None) == "outcomes"
