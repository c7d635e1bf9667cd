"""The worker's lifecycle behind ``start()``, ``stop()`` and ``run()``: connect, begin, stop, drain, tear down.

A stop may be awaited on another loop or thread than the worker's own, a second signal hard-stops,
and the loop may end under a running worker: each path ends with the tasks given back or reported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import math
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from ..bounded import within
from ..current import current_task
from ..errors import StoreGoneError
from ..holders import holders
from ..hook_failures import flush_hook_failure_summaries
from ..loopwatch import LoopWatch
from ..models import Outcome
from ..serializers import CloudpickleSerializer
from ..taskthreads import TaskThreads
from . import limits
from .aio import _drop_outcome, _seen
from .limits import _CANCEL_GRACE, _OTHER_LOOP_CHECK
from .log import logger
from .running import _id_list, _Running
from .state import Stoppable, WorkerState


class Lifecycle(WorkerState):
    """Starts and stops the worker: the steps behind ``start()``, ``stop()`` and ``run()``."""

    if TYPE_CHECKING:

        async def _exchange_loop(self) -> None: ...

        async def _final_finish(
            self, live: list[tuple[_Running, Outcome, dict[str, Any]]]
        ) -> tuple[list[tuple[_Running, Outcome, dict[str, Any]]], list[bool]]: ...

        async def _stored_before(
            self, live: list[tuple[_Running, Outcome, dict[str, Any]]], accepted: list[bool]
        ) -> list[bool]: ...

        def _unreported(self) -> list[str]: ...

        def _poke(self) -> None: ...

        async def _release(self, given_back: list[_Running], what: str) -> None: ...

        async def _give_back_unstarted(self) -> None: ...

        async def _release_in_time(self, given_back: list[_Running], what: str) -> None: ...

        def _budget_left(self) -> float: ...

        def _settled_from_its_batch(self, running: _Running) -> bool: ...

        async def _abandon(self, futures: set[asyncio.Task[None]]) -> None: ...

        def _finished(
            self,
            batch: list[tuple[_Running, Outcome, dict[str, Any]]],
            live: list[tuple[_Running, Outcome, dict[str, Any]]],
            accepted: list[bool],
        ) -> None: ...

        def _end_watch(self) -> None: ...

        def _watch_busy(self) -> bool: ...

        def _loop_blocked(self, seconds: float) -> None: ...

        def _loop_answered(self, seconds: float) -> None: ...

        async def _heartbeat_loop(self) -> None: ...

    async def _connect_unless_stopped(self, stop_asked: asyncio.Future[None]) -> None:
        """Connect the backend, unless ``stop()`` comes first.

        A connect can wait a long time (a store locked by another process, a
        server that does not answer); a stop must not wait for it, since nothing
        is reserved yet. The abandoned connect is cancelled and its outcome dropped.
        """
        connecting = asyncio.ensure_future(self.backend.connect())
        try:
            await asyncio.wait({connecting, stop_asked}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # start() itself was cancelled
            connecting.cancel()
            connecting.add_done_callback(_drop_outcome)
            raise
        if connecting.done():
            connecting.result()  # its error, if it failed
            return
        connecting.cancel()
        connecting.add_done_callback(_drop_outcome)

    def _warn_if_others_can_plant_code(self) -> None:
        """Log a WARNING when this worker unpickles tasks (cloudpickle) from a store that other users can write.

        Unpickling runs whatever code the payload holds, so whoever can write
        the store can run code as this worker. A backend that can tell (the
        SQLite one: the modes and owner of its file and folder) offers
        ``open_to_others()``, returning why, or None; it is asked once here.
        """
        if self._only_serializer is not None and not isinstance(self._only_serializer, CloudpickleSerializer):
            return  # msgpack (or another one) only: no payload is unpickled
        ask = getattr(self.backend, "open_to_others", None)
        if not callable(ask):
            return
        try:
            reason = ask()
        except Exception:  # a check that fails is no reason to stop the worker
            logger.debug("worker %s: could not tell who else can write the store", self.worker_id, exc_info=True)
            return
        if reason:
            logger.warning(
                "worker %s: %s. This worker runs tasks with the cloudpickle serializer, so anyone who can write it "
                "can run code as this worker: use msgpack with an allow-list (sitq worker -s msgpack --allow-task "
                "..., or MsgpackSerializer(allowed_tasks=[...])), or fix the permissions (chmod 600 the file, and "
                "keep it in a folder only this user can write)",
                self.worker_id,
                reason,
            )

    def _begin(self) -> None:
        """Set up the running state and the background loops (``start`` after connecting)."""
        # a queue sharing the backend does not close it under a running worker (holders.py)
        self._holds_backend = not self._owns_backend and holders.hold(self.backend)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._base_context = contextvars.copy_context()
        self._running = True
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._reserved_more = asyncio.Event()  # set when tasks are reserved (the heartbeat watches them)
        self._stopped = asyncio.Event()
        self._hard_stopping = asyncio.Event()
        self._hard_stop_cause, self._left_running_because = "", None
        # What an earlier run left behind (a stop that gave up its last report) is not this run's to
        # renew, count against capacity or report: those tasks run again when their leases expire.
        self._held = {}
        self._late_outcomes.clear()
        self._unanswered.clear()
        self._unreleased.clear()
        self._waiting.clear()
        self._outcomes.clear()
        self._sending, self._pending_bytes = [], 0
        self._suspect, self._one_at_a_time, self._suspect_timer = None, False, None
        self._deferred, self._deferred_timer = None, None
        self._batches, self._handoff_timer = {}, None
        self._renewals_failing, self._loop_stall_seen = False, -math.inf
        self._closing = False
        self._stop_budget = limits._FINAL_REPORT_TIMEOUT  # seconds the stop's backend calls may still take, together
        self._teardown = None
        self._fatal = None  # what ended an earlier run is not this one's to raise
        self._exchange_settled = asyncio.Event()  # the exchange loop was cancelled and put back its batch
        self._executing = 0
        self._outliving = []
        self._hung_slots = 0
        self._single_reports = 0
        self._pool = TaskThreads(max_workers=self.max_concurrency, thread_name_prefix="sitq-task")
        self._tasks = [
            asyncio.create_task(self._exchange_loop(), name=f"sitq-exchange-{self.worker_id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"sitq-heartbeat-{self.worker_id}"),
        ]
        self._end_watch()
        self._watch = LoopWatch(
            self._loop,
            # a renewal is due every third of the lease: a stall of half of it has missed one, and the first lease
            # may run out a sixth of it later (renewed just before the stall, the lease was down to two thirds);
            # wake-ups every twelfth report such a stall in time. A shorter stall puts no lease at risk (a
            # machine short of CPU, threads holding the GIL, stall loops that long without harm)
            period=max(self.lease_timeout / 12.0, 0.01),
            late_after=self.lease_timeout / 2.0,
            busy=self._watch_busy,
            blocked=self._loop_blocked,
            answered=self._loop_answered,
            name=f"sitq-loopwatch-{self.worker_id}",
        )
        self._watch.start()
        logger.info(
            "worker %s started on %r (max_concurrency=%d, queues=%s)",
            self.worker_id,
            self.backend,
            self.max_concurrency,
            # each name as repr: a name may hold a comma or spaces (``--queue 'a,b'``)
            repr(list(self.queues)) if self.queues else "all",
        )

    async def _stop(self, timeout: float | None) -> None:
        """The body of ``stop()`` (``timeout`` checked already)."""
        here = asyncio.get_running_loop()
        its_loop = self._its_loop()
        if its_loop is None:
            # ``asyncio.create_task(worker.start())`` just before: let that start take its first step
            await asyncio.sleep(0)
            its_loop = self._its_loop()  # or one on another thread began meanwhile
        if its_loop is not None and its_loop is not here:
            await self._stop_on_its_loop(its_loop, timeout)
            return
        if self._starting is not None:  # start() is connecting: make it give up, and wait for it
            self._stop_requested = True
            if self._stop_asked is not None and not self._stop_asked.done():
                self._stop_asked.set_result(None)
            await asyncio.shield(self._starting)
            its_loop = self._its_loop()
            if its_loop is not None and its_loop is not here:  # started again meanwhile, on another thread's loop
                await self._stop_on_its_loop(its_loop, timeout)
                return
        if not self._running or self._stopping is None:
            return
        caller = self._own_running_task()
        if caller is not None:  # waiting here would wait for the caller itself: start the stop and return
            if not self._stopping.is_set():
                logger.info(
                    "worker %s: stop() called from task %s, which it runs: it stops once that task has ended",
                    self.worker_id,
                    caller,
                )
                self._begin_stop(timeout)
            return
        if self._stopping.is_set():  # a stop is going on: wait for it, at most ``timeout`` for its tasks
            assert self._stopped is not None
            if timeout is not None:
                with contextlib.suppress(TimeoutError):
                    await within(asyncio.shield(self._stopped.wait()), timeout)
                if not self._stopped.is_set():
                    # as a second signal does: running tasks are left, leases released
                    self._hard_stop(f"the timeout of a later stop() call ({timeout:g} s) ran out")
            await self._stopped.wait()
            return
        await asyncio.shield(self._begin_stop(timeout))

    def _its_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs (or starts) on; None when it neither runs nor starts."""
        starting = self._starting
        if starting is not None:
            return starting.get_loop()
        return self._loop if self._running else None

    async def _stop_on_its_loop(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """``stop()`` awaited on another loop (another thread's): run it on the worker's loop, wait for it here.

        Its tasks and events belong to that loop: a stop run beside them on
        this one took 12 s when idle and hung with a task running. A caller
        that gives up leaves the stop going there, as on the same loop. A
        loop closed under the running worker can run nothing more
        (``_loop_closed``); one stopped but open would run the stop only when
        it runs again, so that is an error rather than a wait of unknown length.
        That loop may stop as the worker's run ends (``run_until_complete(run())``
        returning), a step or two before the stop there returns: a worker no
        longer running (its give-back done) on a loop no longer running is stopped.
        """
        if loop.is_closed():
            self._loop_closed()
            return
        if not loop.is_running():
            raise RuntimeError(
                f"worker {self.worker_id} runs on an event loop that is not running: await stop() on that loop "
                "(loop.run_until_complete(worker.stop()))"
            )
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def stop_there() -> None:
            # tells its end itself, in the step it returns (a done-callback would need one more step there)
            try:
                await cast(Stoppable, self).stop(timeout)
            except asyncio.CancelledError:
                ended.cancel()
                raise
            except BaseException as exc:  # the caller's, to raise
                with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller gave up
                    ended.set_exception(exc)
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: that loop's to stop on
                    raise
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    ended.set_result(None)

        earlier = self._stop_task  # a stop begun after this one is handed over is this one's (or one it joins)
        stopping = stop_there()
        try:
            asyncio.run_coroutine_threadsafe(stopping, loop)
        except RuntimeError:  # the loop closed just now
            stopping.close()
            self._loop_closed()
            return
        waiting = asyncio.wrap_future(ended)
        waiting.add_done_callback(_drop_outcome)  # a caller that gives up leaves it unread
        # cancelled by the end of the worker's loop, the stop's give-back (_give_back_all) still runs there
        while not waiting.done() or (waiting.cancelled() and self._running):
            if loop.is_closed():  # it ended before it ran the stop (or its give-back) to the end
                self._loop_closed()
                return
            if not (self._running or self._starting is not None or loop.is_running()):
                self._stopped_there(earlier)
                return
            # the loop's end shows only as its closing: look again now and then
            if waiting.done():
                await asyncio.sleep(_OTHER_LOOP_CHECK)
            else:
                await asyncio.wait({waiting}, timeout=_OTHER_LOOP_CHECK)
        if not waiting.cancelled():
            waiting.result()  # the stop's own error, if it failed

    def _stopped_there(self, earlier: asyncio.Future[None] | None) -> None:
        """Raise the error of the stop that ended on the worker's loop, which stopped before it could say so."""
        stop_task = self._stop_task
        if stop_task is None or stop_task is earlier or not stop_task.done() or stop_task.cancelled():
            return
        error = stop_task.exception()  # a done future's, read from this thread
        if error is not None:
            raise error

    def _loop_closed(self) -> None:
        """The worker's event loop was closed while it ran, its tasks never cancelled: mark the worker stopped.

        Nothing of it can run any more (no drain, report or give-back), so
        the tasks it held run again when their leases expire.
        """
        if not self._running:
            return
        logger.warning(
            "worker %s: its event loop was closed while it ran; the %d task(s) it held run again when their "
            "leases expire",
            self.worker_id,
            sum(1 for r in self._held.values() if not r.settled),
        )
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._let_go_of_backend()
        self._end_watch()
        self._stop_task = None
        self._running = False

    def _begin_stop(self, timeout: float | None) -> asyncio.Future[None]:
        """Set the stop going as a task of its own, and return that task.

        A caller that gives up (wait_for, a cancelled request) gets its
        cancellation at once while the stop goes on, and a later ``stop()``
        waits for its end.
        """
        assert self._stopping is not None
        self._stopping.set()
        self._stop_task = asyncio.ensure_future(self._stop_now(timeout))
        self._stop_task.add_done_callback(_seen)  # its error reaches the caller, if one still waits
        return self._stop_task

    def _own_running_task(self) -> str | None:
        """The id of the task of this worker's that the caller runs inside (its asyncio task or one it made)."""
        described = current_task()
        if described is None or described.worker_id != self.worker_id:
            return None
        running = self._held.get(described.id)
        return described.id if running is not None and not running.settled else None

    async def _stop_now(self, timeout: float | None) -> None:
        """The body of ``stop()``: drain, report what is left, release what never started."""
        stopped = self._stopped
        assert stopped is not None
        try:
            await self._drain_and_report(timeout)
            if self._teardown is not None:
                # the loop began ending during this stop: whoever waits for the stop (run(), a framework
                # gathering its cancelled tasks) waits for the give-back too, or it is cut off unfinished
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._teardown)
        except asyncio.CancelledError:  # nothing cancels a stop but the end of its event loop
            await self._after_tear_down()
            raise
        finally:
            for loop_task in self._tasks:  # ended already, unless the drain failed half-way
                loop_task.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._mark_stopped(stopped)
        if holders.close_wanted(self.backend):
            # a queue closed while this worker still used the backend: its close happens now
            await self.backend.close()
        logger.info(
            "worker %s stopped (processed=%d, succeeded=%d, failed=%d)",
            self.worker_id,
            self.processed,
            self.succeeded,
            self.failed,
        )

    async def _drain_and_report(self, timeout: float | None) -> None:
        self._poke()
        if self._fairness is not None:
            fairness, self._fairness = self._fairness, None
            # not cancelled: it ends at its next check of _stopping (within 0.1 s), and a give-back in
            # flight must finish, since the tasks it releases are already forgotten here
            with contextlib.suppress(Exception):
                await fairness
        await self._give_back_unstarted()
        in_flight = {r.future for r in self._held.values() if r.future is not None}
        if in_flight:
            pending = await self._wait_in_flight(in_flight, timeout)
            if pending:
                await self._abandon(pending)
        self._closing = True  # the exchange loop reports what is left, then ends
        self._poke()
        exchange, heartbeat = self._tasks
        heartbeat.cancel()
        began = time.monotonic()
        _done, late = await asyncio.wait({exchange}, timeout=self._budget_left())
        self._stop_budget -= time.monotonic() - began
        # only outcomes waiting to be reported are lost here; an idle worker's claim in flight loses nothing
        unreported = self._unreported()
        if late:
            if unreported:
                logger.warning(
                    "worker %s: the backend did not take the last outcomes within %.3g s (%d: %s); those tasks "
                    "run again when their leases expire",
                    self.worker_id,
                    time.monotonic() - began,
                    len(unreported),
                    _id_list(unreported, len(unreported)),
                )
            exchange.cancel()
        elif unreported:  # the exchange loop ended before reporting them: the store is gone, or the loop failed
            logger.warning(
                "worker %s: stopped with %d outcome(s) unreported (%s), so not stored: %s",
                self.worker_id,
                len(unreported),
                "the store is gone" if isinstance(self._fatal, StoreGoneError) else "its exchange loop ended first",
                _id_list(unreported, len(unreported)),
            )
        # bounded: a cancelled call may still wait on a stalled network, and stop() must return
        # (asyncio.wait also lets a cancellation of stop() itself through, which `await task` would hide)
        _ended, stuck = await asyncio.wait({exchange, heartbeat}, timeout=_CANCEL_GRACE)
        for task in (exchange, heartbeat):
            if task in stuck:
                logger.warning(
                    "worker %s: %s did not end within %g s of being cancelled; leaving it behind",
                    self.worker_id,
                    task.get_name(),
                    _CANCEL_GRACE,
                )
            elif not task.cancelled() and task.exception() is not None:  # already logged by the loop
                logger.error(
                    "worker %s: %s ended with an error", self.worker_id, task.get_name(), exc_info=task.exception()
                )
        leftover = [r for r in self._loading if not r.settled]  # reserved as the stop began, still loading
        self._loading.clear()
        for loader in list(self._loaders):
            loader.cancel()
        await self._release_in_time(leftover, "unstarted")
        # a task still held and unreported here would wait for its lease to expire: give it back
        stranded = [r for r in self._held.values() if not r.settled and not r.outcome_queued]
        await self._release_in_time(stranded, "unreported")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_backend:
            await self.backend.close()

    async def _stops_returned(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the ``stop()`` calls going on on ``loop`` (and the stop task there) to return, then return.

        The worker is stopped already; they are a step or two from their end.
        ``loop.run_until_complete(worker.run())`` stops the loop as run()
        returns: a stop() still pending there never returned, so the future of
        ``run_coroutine_threadsafe(worker.stop(), loop)`` never completed and the
        loop's tasks were destroyed pending. Bounded: run() must return.
        """
        began = time.monotonic()
        while True:
            pending: set[asyncio.Future[None]] = {
                call for call in list(self._stop_calls) if call.get_loop() is loop and not call.done()
            }
            stop_task = self._stop_task
            if stop_task is not None and stop_task.get_loop() is loop and not stop_task.done():
                pending.add(stop_task)
            left = limits._FINAL_REPORT_TIMEOUT + _CANCEL_GRACE - (time.monotonic() - began)
            if not pending:
                return
            if left <= 0:
                logger.debug("worker %s: run() returns before %d stop() call(s) there", self.worker_id, len(pending))
                return
            await asyncio.wait(pending, timeout=left)

    def _hard_stop(self, cause: str) -> None:
        """Stop waiting for in-flight tasks: the stop going on cancels them and gives them back now.

        ``cause`` (what asked for it) names why tasks were left running.

        Only that stop abandons them (``_drain_and_report``), so it ends after
        their give-back. A give-back of the second request's own ran beside the
        stop, which did not wait for it: the stop closed the store and ended
        first (and ``asyncio.run`` with it), leaving the task ``running`` on a
        lease just renewed, to run again only once that lease expired.
        """
        if not self._hard_stopping.is_set():
            self._hard_stop_cause = cause
        self._hard_stopping.set()

    def _loop_ending(self) -> bool:
        """True when the worker's loops were cancelled from outside (``asyncio.run`` ending, a cancel-all)."""
        if self._teardown is not None:
            return True
        if not self._tasks or self._closing:
            return False
        exchange = self._tasks[0]
        return exchange.cancelling() > 0 or exchange.cancelled()

    async def _after_tear_down(self) -> None:
        """Wait (from a task the loop's end cancelled) for ``_give_back_all``, so the loop runs it to the end.

        ``asyncio.run`` waits only for the tasks it cancelled; one of them must
        wait for the give-back, or the loop would close with it half done.
        """
        self._begin_tear_down()
        if self._teardown is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._teardown)

    def _begin_tear_down(self) -> None:
        """Start ``_give_back_all`` once: nothing more is reserved or started from here on."""
        if self._teardown is None:
            if self._stopping is None or not self._running:
                return
            logger.warning(
                "worker %s: its event loop is ending while it runs (stop() was not awaited to its end); "
                "giving back the %d task(s) it holds",
                self.worker_id,
                sum(1 for r in self._held.values() if not r.settled) + len(self._unreleased),
            )
            self._stopping.set()
            self._hard_stopping.set()  # a stop() waiting for in-flight tasks goes on at once
            self._waiting.clear()  # nothing more starts; these are given back with the rest
            self._teardown = asyncio.ensure_future(self._give_back_all())
            self._teardown.add_done_callback(_seen)

    async def _give_back_all(self) -> None:
        """Report what finished and give back every other task held (not counted as attempts), then end the run.

        The event loop is ending: nothing will drain, renew leases or report
        any more. Without this, each application restart would leave its
        running task to a lease expiry, and three restarts would end a healthy
        task ``failed``. Tasks a reserve call was claiming at that very moment
        are not known here: they run again when their leases expire.
        """
        stopped = self._stopped
        assert stopped is not None
        # the exchange loop first: a call cut short (several loop steps with asyncpg) puts its outcomes back
        for loop_task in self._tasks:
            if not loop_task.done() and not loop_task.cancelling():  # one cancelled already may wait for us
                loop_task.cancel()
        with contextlib.suppress(TimeoutError):
            await within(self._exchange_settled.wait(), _CANCEL_GRACE)
        try:
            stranded: list[_Running] = []
            for running in list(self._held.values()):
                if running.settled or running.outcome_queued or self._settled_from_its_batch(running):
                    continue
                stranded.append(running)
            stranded += self._unreleased  # given back by a stop the loop's end cut short
            self._unreleased = []
            for running in stranded:
                running.lease_lost = running.settled = True  # whatever it reports later is discarded
                future = running.future
                if future is not None and not future.done() and not future.cancelling():
                    future.cancel()  # still running (a cancel-all that missed it): it is given back
            finished = list(self._outcomes)
            self._outcomes.clear()
            live = [item for item in finished if not item[0].lease_lost]
            try:
                async with asyncio.timeout(limits._FINAL_REPORT_TIMEOUT):
                    if live:
                        live, accepted = await self._final_finish(live)
                        accepted = await self._stored_before(live, accepted)
                        self._finished(finished, live, accepted)
                    await self._release(stranded, "running")
            except Exception:
                logger.warning(
                    "worker %s: could not report or give back its tasks as its loop ended; they run again "
                    "when their leases expire",
                    self.worker_id,
                    exc_info=True,
                )
            for loader in list(self._loaders):
                loader.cancel()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            if self._owns_backend:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(limits._FINAL_REPORT_TIMEOUT):
                        await self.backend.close()
        finally:
            self._mark_stopped(stopped)
        if holders.close_wanted(self.backend):
            # a queue closed while this worker ran: its close was put off until the worker stops, which is
            # now (left undone, the store's thread and files, or its connection, stayed open for good)
            try:
                async with asyncio.timeout(limits._FINAL_REPORT_TIMEOUT):
                    await self.backend.close()
            except Exception:
                logger.warning(
                    "worker %s: could not close the backend its queue left to it as its loop ended",
                    self.worker_id,
                    exc_info=True,
                )

    def _mark_stopped(self, stopped: asyncio.Event) -> None:
        """The last step of every stop: let the backend and the loop watch go, then wake whoever waits."""
        self._let_go_of_backend()
        self._end_watch()
        self._running = False
        with contextlib.suppress(Exception):  # the last outcomes' hook failures reach the log with the stop
            flush_hook_failure_summaries()
        stopped.set()

    def _let_go_of_backend(self) -> None:
        """The worker no longer holds the backend open (it never closes one it did not open)."""
        held, self._holds_backend = self._holds_backend, False
        holders.let_go(self.backend, held)

    async def _wait_in_flight(
        self, in_flight: set[asyncio.Task[None]], timeout: float | None
    ) -> set[asyncio.Task[None]]:
        """Wait for ``in_flight`` to end, at most ``timeout`` s and not past a second signal; returns those left.

        A task that ignores its cancellation is left behind too, instead of
        holding the stop (and a second signal) until it chooses to return.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pending = {future for future in in_flight if not future.done()}  # ended ones are reported, not abandoned
        hard = asyncio.ensure_future(self._hard_stopping.wait())
        try:
            while pending and not hard.done():
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                done, _ = await asyncio.wait({*pending, hard}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
        finally:
            hard.cancel()
        if pending:
            cut_short = self._hard_stopping.is_set() or timeout is None
            self._left_running_because = (
                self._hard_stop_cause or "the stop was cut short"
                if cut_short
                else f"the shutdown timeout ({timeout:g} s) ran out"
            )
        return pending
