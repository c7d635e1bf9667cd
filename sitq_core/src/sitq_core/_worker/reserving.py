"""Taking in reserved tasks: prefetch, loading their functions, and isolating crash suspects.

A task whose last worker died holding it may be what killed it: such a suspect runs alone for a
while (``_SUSPECT_ALONE``), so a poison pill cannot take the tasks beside it down again and again.
Tasks reserved ahead are given back when runs turn slow, so idle workers can take them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from .. import checks
from ..models import Outcome, ReservedTask
from .aio import _on_daemon_thread
from .limits import _ADAPTIVE_PREFETCH_WINDOW, _LEASE_TRUST, _MAX_FINISH_BATCH, _SUSPECT_ALONE, _SUSPECT_WAIT
from .log import logger
from .running import _crash_suspect, _Running, _timeout_of
from .state import WorkerState


class Reserving(WorkerState):
    """Takes reserved tasks in: loads them, isolates crash suspects, gives back prefetched ones when runs slow."""

    if TYPE_CHECKING:

        def _poke(self) -> None: ...

        def _dispatch(self) -> None: ...

        def _line_up_reserved(self, runnings: list[_Running]) -> None: ...

        def _preload(self, runnings: list[_Running]) -> None: ...

        async def _release(self, given_back: list[_Running], what: str) -> None: ...

        async def _release_waiting(self) -> None: ...

        def _settle(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _cancelled(self, running: _Running) -> Outcome: ...

        def _failure(self, running: _Running, error: str, traceback: str, *, retry: bool) -> Outcome: ...

        def _outcomes_put(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _report(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _unhold(self, running: _Running) -> None: ...

    async def _take_reserved(self, reserved: list[ReservedTask]) -> None:
        reserved = [item for item in reserved if not self._adopted(item) and not self._reported_late(item)]
        runnings = [_Running(item) for item in reserved]
        if self._stopping is not None and self._stopping.is_set():
            for running in runnings:  # reserved while stopping: give them straight back, loaded or not
                self._held[running.id] = running
            await self._release(runnings, "unstarted")
            return
        if reserved:
            runnings = await self._isolate_suspects(runnings)
        loading: list[_Running] = []
        ready: list[_Running] = []
        for running in runnings:
            self._held[running.id] = running  # held at once: its lease is renewed, whatever it waits for
            running.lease_until = running.held_since + self.lease_timeout * _LEASE_TRUST
            task = running.reserved.task
            if (task.serializer, task.function_name) in self._loaded:  # its module is imported already
                ready.append(running)
            else:
                loading.append(running)
        self._line_up_reserved(ready)  # in the store's order: a task of higher priority goes ahead of those waiting
        if reserved:
            self._reserved_more.set()
        if loading:
            # A function this worker has not loaded yet may import its module now (seconds, for a heavy
            # library): it loads on a thread while the loop goes on renewing leases, reporting outcomes and
            # running what is ready; stop() gives back what is still loading.
            # One loader (one thread) per module: an import that hangs holds only its own module's tasks,
            # not the healthy ones reserved in the same batch.
            self._loading.update(loading)
            by_module: dict[tuple[str, str], list[_Running]] = {}
            for running in loading:
                task = running.reserved.task
                by_module.setdefault((task.serializer, task.function_name.partition(":")[0]), []).append(running)
            for group in by_module.values():
                loader = asyncio.create_task(self._load(group), name=f"sitq-load-{self.worker_id}")
                self._loaders.add(loader)
                loader.add_done_callback(self._loaders.discard)
        if self._stopping is not None and self._stopping.is_set():
            await self._release_waiting()  # reserved while stopping: give them straight back
        else:
            self._dispatch()
            self._watch_prefetched()

    def _deferring(self) -> bool:
        """True while a suspect given back for the tasks running here keeps this worker from reserving."""
        if self._deferred is None or self._executing == 0:
            return False
        return time.monotonic() - self._deferred[1] < _SUSPECT_WAIT

    def _defer_suspect(self, suspect: _Running) -> None:
        """Note ``suspect`` as given back for the tasks running here; reserve again once ``_SUSPECT_WAIT`` is up.

        An earlier note of the same task keeps its time: the wait is bounded
        however often the task comes back before it is up.
        """
        now = time.monotonic()
        if self._deferred is None or self._deferred[0] != suspect.id:
            self._deferred = (suspect.id, now)
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._loop is None:
            return

        def again() -> None:
            self._deferred_timer = None
            self._poke()

        delay = max(0.0, self._deferred[1] + _SUSPECT_WAIT - now) + 0.001
        self._deferred_timer = self._loop.call_later(delay, again)

    def _end_isolation_later(self, suspect: _Running) -> None:
        """Reserve and start beside ``suspect`` again once it has run alone for ``_SUSPECT_ALONE`` seconds.

        Isolation without end hung for good a suspect that waits for work
        this worker would have to reserve (a parent awaiting its child's
        result), and held every other slot for the suspect's whole run.
        """
        if self._loop is None:
            return
        if self._suspect_timer is not None:
            self._suspect_timer.cancel()

        def end() -> None:
            self._suspect_timer = None
            if self._suspect is not suspect:
                return
            logger.info(
                "worker %s: task %s has run alone for %.0f s; reserving beside it again",
                self.worker_id,
                suspect.id,
                _SUSPECT_ALONE,
            )
            self._suspect = None
            self._poke()
            self._dispatch()

        self._suspect_timer = self._loop.call_later(_SUSPECT_ALONE, end)

    def _adopted(self, item: ReservedTask) -> bool:
        """True when ``item`` is a task this worker is still running: it goes on under the new lease.

        Its lease ran out while the store could not be reached (a lock held
        elsewhere, a stalled network), and this worker's own reserve took it
        back. Starting it again would run it twice at once, and the first
        run's outcome would be thrown away as if another worker had it.
        """
        running = self._held.get(item.id)
        if running is None or running.started_at is None:
            return False
        if running.outcome_queued:
            # it has just ended: its outcome, still waiting to be sent, goes under the new lease too (one already
            # on its way carries the old lease and is refused, so the new one runs the task again: at least once)
            queued = [index for index, entry in enumerate(self._outcomes) if entry[0] is running]
            if not queued:
                return False
            for index in queued:
                held, outcome, extra = self._outcomes[index]
                self._outcomes[index] = (held, dataclasses.replace(outcome, lease_token=item.lease_token), extra)
        elif running.settled:
            return False
        logger.warning(
            "worker %s: task %s is still running here after its lease ran out; it goes on under a new lease",
            self.worker_id,
            item.id,
        )
        running.reserved = item
        running.lease_lost = False
        return True

    def _reported_late(self, item: ReservedTask) -> bool:
        """True when ``item`` is a task that finished here after its lease ran out: its outcome goes in now.

        The store was out of reach for longer than the lease (a lock held
        elsewhere), so the finished run's outcome was refused; taking the task
        back must not run it a second time when its outcome is at hand.
        Only final outcomes are kept (a retry runs again, as it would anyway).
        """
        late = self._late_outcomes.pop(item.id, None)
        if late is None:
            return False
        when, running, outcome, extra = late
        # only the redelivery of that very attempt (its lease ran out): not a user's requeue, not a retry
        # scheduled by another worker's attempt, not after two lease periods. A requeue resets the attempt
        # and lease-expiry counts, so a requeued run whose worker died matches them again; but every way
        # back into the queue other than a lease expiry sets the task's eta (a retry to its retry time, a
        # requeue to now or the eta asked for) while a reserve leaves it alone: the same eta means no run
        # of the task began between the kept attempt and this reservation.
        kept = running.reserved.task
        if (
            item.attempt != running.reserved.attempt + 1
            or item.task.lease_expiries != kept.lease_expiries + 1
            or item.task.eta != kept.eta
            or time.monotonic() - when > 2 * self.lease_timeout
        ):
            return False
        logger.warning(
            "worker %s: task %s finished here after its lease ran out; its outcome goes in under the new lease "
            "instead of a second run",
            self.worker_id,
            item.id,
        )
        again = _Running(item)
        again.started_at = running.started_at
        self._held[again.id] = again
        self._settle(again, dataclasses.replace(outcome, lease_token=item.lease_token), extra)
        return True

    def _keep_late_outcome(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        """Keep a final outcome refused for a lost lease, in case this worker takes the task back (a while).

        Logs the lost lease, saying whether the outcome is discarded or kept:
        a kept one may still go in (``_reported_late``), and "discarded"
        followed by "its outcome goes in" contradicted itself.
        """
        if running.given_back:  # no other worker in it: this one gave the task back, still running (a stop)
            logger.warning(
                "worker %s: task %s ended after this worker gave it back (it ran on past its cancel at "
                "shutdown); its outcome is discarded and the task runs again",
                self.worker_id,
                running.id,
            )
            return
        now = time.monotonic()
        for task_id in [k for k, v in self._late_outcomes.items() if now - v[0] > 2 * self.lease_timeout]:
            del self._late_outcomes[task_id]
        if (
            self._teardown is None  # nothing is taken back any more (and a report cut short may have gone in)
            and outcome.kind in ("success", "failed", "cancelled")
            and len(self._late_outcomes) < _MAX_FINISH_BATCH
        ):
            self._late_outcomes[running.id] = (now, running, outcome, extra)
            logger.warning(
                "worker %s: task %s was reclaimed by another worker (lease lost); its outcome is kept for %g s "
                "in case the task comes back to this worker, and discarded otherwise",
                self.worker_id,
                running.id,
                2 * self.lease_timeout,
            )
            return
        logger.warning(
            "worker %s: task %s was reclaimed by another worker (lease lost); outcome discarded",
            self.worker_id,
            running.id,
        )

    async def _isolate_suspects(self, runnings: list[_Running]) -> list[_Running]:
        """Keep one suspect (a task whose last worker died holding it) to run alone; give back the others.

        What was reserved with it, and what waits here unstarted, goes back
        to the queue at once (not counted as attempts): if the suspect kills
        this process too, they are not lost with it and do not have a lease
        expiry counted against them. Nothing is reserved until the suspect
        has ended or run alone for ``_SUSPECT_ALONE`` seconds.

        While tasks run here, the suspect itself goes back too, and nothing is
        reserved until they have ended (or ``_SUSPECT_WAIT`` has passed: one
        of them may wait for work only this worker would reserve; the suspect
        then starts beside them). Held here unstarted until they end, it would
        die with any of them that kills this worker, a poison pill past its own
        time alone above all, and count an expiry for a crash it had no part
        in, as often as the pill's: the two reached ``max_lease_expiries``
        together and the innocent task ended failed with the pill.
        """
        suspects = [r for r in runnings if _crash_suspect(r.reserved.task)]
        if suspects:  # more may follow (a crashed worker's batch): one per reserve until one comes back clean
            self._one_at_a_time = True
        elif runnings:
            self._one_at_a_time = False
            self._deferred = None
        if not suspects:
            return runnings
        keep = suspects[0]
        others = [r for r in runnings if r is not keep]
        for running in runnings:  # held (its lease renewed) while the others go back
            self._held[running.id] = running
        beside = self._executing
        name = checks.one_log_line(keep.reserved.task.function_name)
        noted = self._deferred is not None and self._deferred[0] == keep.id
        waited_out = noted and not self._deferring()
        if beside and not waited_out:
            if not noted:
                logger.info(
                    "worker %s: task %s (%s) comes back from an expired lease (its worker died, or could not "
                    "renew in time); given back until the %d task(s) running here have ended (at most %g s), "
                    "to run alone",
                    self.worker_id,
                    keep.id,
                    name,
                    beside,
                    _SUSPECT_WAIT,
                )
            self._defer_suspect(keep)
            await self._release(suspects, "unstarted")
            return [r for r in runnings if r not in suspects]  # the others run beside what runs here, as usual
        self._deferred = None
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        self._suspect = keep
        if beside:
            logger.info(
                "worker %s: task %s (%s) comes back from an expired lease (its worker died, or could not renew "
                "in time); running it now beside the %d task(s) still running here after %g s, nothing else",
                self.worker_id,
                keep.id,
                name,
                beside,
                _SUSPECT_WAIT,
            )
        else:
            logger.info(
                "worker %s: task %s (%s) comes back from an expired lease (its worker died, or could not renew "
                "in time); running it alone",
                self.worker_id,
                keep.id,
                name,
            )
        await self._release(others, "unstarted")
        await self._release_waiting()
        return [keep]

    async def _load(self, loading: list[_Running]) -> None:
        """Decode first-seen functions on a daemon thread, then queue the tasks that are still ours."""
        try:
            await self._bounded_load(asyncio.ensure_future(_on_daemon_thread(self._preload, loading)), loading)
        finally:
            self._loading.difference_update(loading)
        still_ours = []
        for running in loading:
            if running.settled or self._held.get(running.id) is not running:
                continue  # given back by stop(), or cancelled/reported while it loaded
            if running.lease_lost:  # another worker may hold it now: it must not start here
                running.settled = True
                self._unhold(running)
                continue
            if running.cancel_requested:  # cancelled while it loaded: reported at once, never started
                self._executing += 1
                self._report(running, self._cancelled(running), {"error": "cancelled", "duration": 0.0})
                continue
            still_ours.append(running)
        if self._stopping is not None and self._stopping.is_set():
            await self._release(still_ours, "unstarted")
            return
        self._line_up_reserved(still_ours)
        if still_ours:
            self._reserved_more.set()  # the heartbeat checks tasks waiting for a slot for cancel requests
        self._dispatch()
        self._watch_prefetched()

    async def _bounded_load(self, loaded: asyncio.Future[None], loading: list[_Running]) -> None:
        """Wait for the loader; a task whose own ``timeout`` passes first times out now.

        The task's timeout covers loading its function as well as running
        it: an import that hangs (a dead network mount) must not hold the
        task, and a slot, for good while its lease is renewed.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
        bounded = sorted((r for r in loading if r.reserved.task.timeout is not None), key=_timeout_of)
        for running in bounded:
            left = began + _timeout_of(running) - loop.time()
            if left > 0 and (await asyncio.wait({loaded}, timeout=left))[0]:
                break  # loaded in time
            if not running.settled and self._held.get(running.id) is running:
                self._time_out_loading(running)
        await loaded

    def _time_out_loading(self, running: _Running) -> None:
        task = running.reserved.task
        running.started_at = self.backend.now()
        message = f"task timed out after {task.timeout:g} s while its function {task.function_name} was loading"
        error = TimeoutError(message)
        running.settled = True
        self._loading.discard(running)  # not "unstarted" any more: the import goes on alone on its thread
        self._outcomes_put(running, self._failure(running, message, "", retry=True), {"error": error, "duration": 0.0})
        logger.warning("worker %s: %s (task %s)", self.worker_id, message, running.id)

    def _watch_prefetched(self) -> None:
        """With adaptive prefetch, start the watch that gives back tasks reserved ahead when runs turn slow."""
        if self.prefetch is not None or (self._fairness is not None and not self._fairness.done()):
            return
        if not self._has_unstarted():
            return
        self._fairness = asyncio.create_task(self._give_back_when_slow(), name=f"sitq-fairness-{self.worker_id}")

    def _unstarted_in_batches(self) -> list[_Running]:
        return [r for r in self._held.values() if r.batch is not None and not r.settled and r.started_at is None]

    def _has_unstarted(self) -> bool:
        return bool(self._waiting) or bool(self._loading) or bool(self._unstarted_in_batches())

    async def _give_back_when_slow(self) -> None:
        """Give back prefetched tasks once runs take longer than the estimate the prefetch was sized by.

        The adaptive prefetch reserves about 100 ms of work from the recent
        mean run time; when the tasks reserved turn out slow (a slow task after
        a run of fast ones), the rest would wait here while other workers idle.
        """
        assert self._stopping is not None
        try:
            while not self._stopping.is_set() and self._has_unstarted():
                await asyncio.sleep(_ADAPTIVE_PREFETCH_WINDOW)
                stalled = time.monotonic() - self._last_start
                if stalled <= _ADAPTIVE_PREFETCH_WINDOW or self._stopping.is_set():
                    continue
                self._mean_run_time = max(self._mean_run_time, stalled)
                keep = int(_ADAPTIVE_PREFETCH_WINDOW * self.max_concurrency / self._mean_run_time)
                await self._give_back(len(self._waiting) + len(self._unstarted_in_batches()) - keep)
        finally:
            self._fairness = None

    async def _give_back(self, count: int) -> None:
        """Release up to ``count`` reserved tasks that have not started, the last reserved first."""
        giving: list[_Running] = []
        # the suspect waits to run alone here: never given back as slow prefetch
        suspect = self._suspect if self._suspect is not None and self._suspect in self._waiting else None
        if suspect is not None:
            self._waiting.remove(suspect)
        while self._waiting and len(giving) < count:
            giving.append(self._waiting.pop())
        if suspect is not None:
            self._waiting.appendleft(suspect)
        for running in reversed(self._unstarted_in_batches()):
            if len(giving) >= count:
                break
            assert running.batch is not None
            if running.batch.withdraw(running.batch_index):
                giving.append(running)
        if giving:
            logger.debug("worker %s: giving back %d prefetched task(s) for other workers", self.worker_id, len(giving))
        await self._release(giving, "prefetched")
