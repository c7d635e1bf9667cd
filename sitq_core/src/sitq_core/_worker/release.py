"""Giving tasks back to the store: tasks not started when the worker stops, and the tasks a stop abandons.

A task given back runs elsewhere at once instead of waiting for its lease to run out; a stop
bounds these calls by what is left of its shared budget (``limits._FINAL_REPORT_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..bounded import within
from ..errors import StoreGoneError
from ..models import LeaseState, Outcome
from ..thread_batch import CallResult
from .aio import _bounded
from .limits import _ABANDON_GRACE, _FINAL_MINIMUM, _GIVE_BACK_FIRST_PAUSE, _GIVE_BACK_MAX_PAUSE
from .log import logger
from .running import _Running
from .state import WorkerState


class Releasing(WorkerState):
    """Gives held tasks back to the store, within a stop's budget."""

    if TYPE_CHECKING:

        def _settle_batch_member(self, running: _Running, entry: CallResult) -> bool: ...

        def _cancelled(self, running: _Running) -> Outcome: ...

        def _unhold(self, running: _Running) -> None: ...

        def _after_accept(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

    async def _release(self, given_back: list[_Running], what: str) -> None:
        """Give tasks back to the queue (not counted as attempts) and forget them here.

        They are marked settled and their lease lost first, so nothing they
        might still report is sent. A release that fails is tried again while
        the worker runs and their leases hold (``_may_retry_give_back``); in a
        stop, or past that, their leases expire.
        """
        if not given_back:
            return
        for running in given_back:
            running.lease_lost = running.settled = running.given_back = True
            self._unhold(running)
        # a task that had started says when (an abandoned one): the store keeps that start on record; one
        # whose cancel was requested would end cancelled all the same: reported so, it is counted here too
        outcomes = [
            self._cancelled(r)
            if r.cancel_requested
            else Outcome(r.reserved.id, r.reserved.lease_token, "release", started_at=r.started_at)
            for r in given_back
        ]
        lease_end = min(r.lease_until for r in given_back)  # past it another worker may have them already
        pause = _GIVE_BACK_FIRST_PAUSE
        while True:
            try:
                accepted = await self.backend.finish_many(outcomes)
                self.backend.notify_work()
                break
            except asyncio.CancelledError:  # the loop is ending: the teardown gives them back (_give_back_all)
                self._unreleased.extend(given_back)
                raise
            except Exception as exc:
                if self._may_retry_give_back(exc, lease_end, pause):
                    if pause == _GIVE_BACK_FIRST_PAUSE:
                        logger.warning(
                            "worker %s: could not give back %d %s task(s) yet, retrying: %s",
                            self.worker_id,
                            len(outcomes),
                            what,
                            exc,
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _GIVE_BACK_MAX_PAUSE)
                    continue
                logger.error(
                    "worker %s: could not give back %d %s task(s); their leases expire",
                    self.worker_id,
                    len(outcomes),
                    what,
                    exc_info=not isinstance(exc, StoreGoneError),  # said once already (_store_gone)
                )
                return
        answers = zip(given_back, outcomes, accepted, strict=True)
        cancelled = [(running, outcome) for running, outcome, ok in answers if ok and outcome.kind != "release"]
        for running, outcome in cancelled:
            self._after_accept(running, outcome, {"error": "cancelled"})
        if cancelled:
            self.backend.notify_results([outcome.task_id for _running, outcome in cancelled])

    def _may_retry_give_back(self, exc: Exception, lease_end: float, pause: float) -> bool:
        """Whether a failed give-back is tried again: while the worker runs (a stop has its own budget and
        leaves what it could not give back to lease expiry), the store is not gone, and the leases hold.

        Dropped, the tasks would show ``running`` with nobody running them, then count a lease expiry
        (an attempt) they never used.
        """
        stopping = self._stopping is None or self._stopping.is_set()
        return not stopping and not isinstance(exc, StoreGoneError) and time.monotonic() + pause < lease_end

    async def _release_waiting(self) -> None:
        waiting = list(self._waiting)
        self._waiting.clear()
        await self._release(waiting, "unstarted")

    async def _give_back_unstarted(self) -> None:
        """Give back every task that has not started, within ``_FINAL_REPORT_TIMEOUT``.

        A store that does not answer (a table lock, a network freeze) must not
        hold the stop: what was not given back in time runs again when its lease
        expires.
        """

        unstarted = list(self._waiting)
        self._waiting.clear()
        unstarted += self._halt_batches()
        unstarted += [r for r in self._loading if not r.settled]
        self._loading.clear()
        for loader in list(self._loaders):
            loader.cancel()  # its thread finishes the import on its own (a daemon thread)
        await self._release_in_time(unstarted, "unstarted")

    async def _release_in_time(self, given_back: list[_Running], what: str) -> None:
        """``_release`` bounded like every backend call of a stop: a frozen store must not hold it.

        ``_release`` forgets the tasks here first, so a give-back cut short loses
        nothing but time: they run again when their leases expire.
        """
        if not given_back:
            return
        began = time.monotonic()
        try:
            await within(self._release(given_back, what), self._budget_left())
        except TimeoutError:
            logger.warning(
                "worker %s: the backend did not take back %d %s task(s) within %.3g s; they run again "
                "when their leases expire",
                self.worker_id,
                len(given_back),
                what,
                time.monotonic() - began,
            )
        finally:
            self._stop_budget -= time.monotonic() - began

    def _budget_left(self) -> float:
        """Seconds the stop's next backend call may take: what is left of one shared ``_FINAL_REPORT_TIMEOUT``.

        Give-backs and the last report of one stop share it, so a frozen store
        holds a stop for about ``_FINAL_REPORT_TIMEOUT`` beyond the drain in all,
        not that long per call.
        """
        return max(_FINAL_MINIMUM, self._stop_budget)

    def _halt_batches(self) -> list[_Running]:
        """Halt every batch of sync tasks; the tasks in them that have not started (to give back)."""
        started: dict[int, int] = {}
        unstarted: list[_Running] = []
        for running in self._held.values():
            batch = running.batch
            if batch is None:
                continue
            if id(batch) not in started:
                started[id(batch)] = batch.halt()
            if running.batch_index >= started[id(batch)] and not running.settled:
                unstarted.append(running)
        return unstarted

    def _settled_from_its_batch(self, running: _Running) -> bool:
        """Halt ``running``'s sync batch; True when its call had already returned and was reported as it ended.

        The call running in the batch's thread goes on; no later one starts.
        """
        batch = running.batch
        if batch is None:
            return False
        batch.halt()
        entry = batch.result(running.batch_index)
        return entry is not None and self._settle_batch_member(running, entry)

    async def _abandon(self, futures: set[asyncio.Task[None]]) -> None:
        """Cancel tasks still running at shutdown and release their leases.

        Cancelled first, and given a moment to end: a task whose outcome is
        known by then (it had returned, or it returned on its cancel) is
        reported, not given back to run again, and one that ends cancelled (or
        raising: its cancel turned into an error) is given back. Before, the
        give-back went out first; a store slow to take it let such tasks end
        meanwhile, and their outcomes were dropped.
        Members of a sync batch that already returned are reported as they
        ended; the one still in its thread and those not started are released.
        """
        if self._teardown is not None:  # the loop is ending: _give_back_all gives these back
            return
        abandoned = [r for r in self._held.values() if r.future in futures and not r.settled and not r.outcome_queued]
        cancelled: list[_Running] = []
        for running in abandoned:
            if self._settled_from_its_batch(running):
                continue
            running.settled = True  # its cancellation ends it without an outcome (_execute)
            cancelled.append(running)
        for future in futures:
            future.cancel()
        try:
            await self._cancels_taken(futures)
            released = [r for r in cancelled if not r.outcome_queued]  # those that returned are reported
            await self._learn_cancels(released)
        except asyncio.CancelledError:  # the loop is ending: the teardown gives them back (_give_back_all)
            # settled already, it would skip them: they would wait for expiry
            self._unreleased.extend(r for r in cancelled if not r.outcome_queued)
            raise
        self._log_abandoned(released)
        await self._release_in_time(released, "abandoned")

    async def _cancels_taken(self, futures: set[asyncio.Task[None]]) -> None:
        """Wait (at most ``_ABANDON_GRACE``) for cancelled tasks to end: most do at their next step.

        A sync task's thread runs on, but its asyncio task ends at once; an
        async task that swallows its cancellation is not waited for longer.
        """
        pending = {future for future in futures if not future.done()}
        if pending:
            await asyncio.wait(pending, timeout=_ABANDON_GRACE)

    def _log_abandoned(self, released: list[_Running]) -> None:
        """Name the tasks a stop gives back while they run: the repeat of their run is visible only here."""
        again = sorted(r.id for r in released if not r.cancel_requested)
        ending = sorted(r.id for r in released if r.cancel_requested)
        if again:
            logger.warning(
                "worker %s: %d task(s) still running at shutdown; releasing them (they run again elsewhere "
                "under the same attempt number): %s",
                self.worker_id,
                len(again),
                ", ".join(again),
            )
        if ending:
            logger.warning(
                "worker %s: %d task(s) still running at shutdown had a cancel requested; they end cancelled: %s",
                self.worker_id,
                len(ending),
                ", ".join(ending),
            )

    async def _learn_cancels(self, given_back: list[_Running]) -> None:
        """Ask the store which of these started tasks had a cancel requested since the last check.

        The store ends a task it gets back with a cancel requested ``cancelled``
        (``finish_many``), and cannot say so in its answer: known here, they
        are reported ``cancelled`` and counted in ``failed`` (``_release``).
        One call, within the stop's budget; a store that does not answer
        leaves them to be released as they are.
        """
        unknown = [r for r in given_back if r.started_at is not None and not r.cancel_requested]
        if not unknown:
            return
        began = time.monotonic()
        try:
            states = await _bounded(
                self.backend.heartbeat([(r.id, r.reserved.lease_token) for r in unknown], self.lease_timeout),
                self._budget_left(),
            )
        except Exception:
            logger.debug("worker %s: could not read cancel requests at shutdown", self.worker_id, exc_info=True)
            return
        finally:
            self._stop_budget -= time.monotonic() - began
        for running in unknown:
            if states.get(running.id) == LeaseState.CANCEL_REQUESTED:
                running.cancel_requested = True
