"""``Worker``: reserve due tasks under a lease, run them, report their outcomes.

One coroutine reserves (as many tasks as there are free slots plus
``prefetch``), one runs each task, one reports outcomes in batches (group
commit), one renews leases. Async functions run on the event loop; anything
else runs in a thread pool of ``max_concurrency`` threads. A daemon thread
(``loopwatch``) warns while the loop does not answer, since no lease is
renewed then (an async task blocking it).

The worker's parts live in the private package ``sitq_core._worker``, one concern per module;
this module composes them into ``Worker`` and keeps its constructor and public methods.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import checks, forks
from ._worker import limits
from ._worker.aio import _drop_outcome, _seen
from ._worker.delays import heartbeat_retry_delay as heartbeat_retry_delay
from ._worker.delays import retry_delay as retry_delay
from ._worker.delays import store_retry_delay as store_retry_delay
from ._worker.dispatch import Dispatching
from ._worker.exchange import StoreExchange
from ._worker.execution import Executing
from ._worker.failures import _describe
from ._worker.finishing import Finishing
from ._worker.heartbeat import Heartbeat
from ._worker.limits import _CANCEL_GRACE, _OTHER_LOOP_CHECK
from ._worker.log import logger
from ._worker.release import Releasing
from ._worker.reserving import Reserving
from ._worker.running import _id_list
from ._worker.running import _Running as _Running
from ._worker.signals import _handler_to_put_back, _is_loop_handler, _loop_signal_callback, _restore_signal_handlers
from ._worker.state import WorkerState
from ._worker.watch import LoopWatching
from .backend import Backend
from .bounded import within
from .checks import Seconds
from .config import BackendSpec, SerializerSpec, resolve_backend, resolve_serializer, split_config
from .current import current_task
from .errors import StoreGoneError, ValidationError, WorkerError, safe_repr
from .holders import holders
from .loopwatch import LoopWatch
from .models import Outcome
from .pacing import CommitPacer
from .serializers import CloudpickleSerializer, Serializer
from .taskthreads import TaskThreads
from .thread_batch import ThreadBatch

__all__ = ["Worker", "retry_delay"]


class Worker(
    StoreExchange, Reserving, Dispatching, Releasing, Executing, Finishing, Heartbeat, LoopWatching, WorkerState
):
    """Runs tasks from a backend.

    ``max_concurrency`` (1..1000) tasks run at once; ``poll_interval`` is the
    longest sleep between checks when the backend cannot notify. ``queues``
    limits the named queues served (default: all). ``lease_timeout`` is how
    long a reserved task stays ours without a heartbeat (heartbeats run every
    third of it). ``prefetch`` reserves that many extra tasks ahead, which
    speeds up short tasks; the default (None) adapts: while tasks finish in
    milliseconds the worker reserves up to about 100 ms of work ahead (at most
    256 tasks), and it reserves nothing ahead for slow tasks, so they stay
    available to idle workers. ``shutdown_timeout`` bounds how long ``run()``
    waits for in-flight tasks after a signal (None: no bound).
    ``serializer``: when given, only tasks written by that serializer are run
    (others fail with a clear error); by default any registered one is used.
    ``batch_window``: while the worker keeps up with its producers it groups
    claims and finishes into one backend commit per window (seconds); None
    (default) adapts it to about 20 times the backend's commit time (0.5-20 ms),
    0 commits every claim and finish at once (see ``sitq_core.pacing``).
    """

    def __init__(
        self,
        backend: BackendSpec,
        serializer: SerializerSpec = None,
        max_concurrency: int = 1,
        poll_interval: Seconds = 1.0,
        *,
        queues: Sequence[str] | str | None = None,
        lease_timeout: Seconds = 30.0,
        prefetch: int | None = None,
        shutdown_timeout: Seconds | None = 30.0,
        worker_id: str | None = None,
        batch_window: Seconds | None = None,
    ) -> None:
        if backend is None:
            raise ValidationError(
                "backend is required: pass a Backend (e.g. SQLiteBackend('tasks.db')) or a URL",
                parameter="backend",
                value=None,
            )
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or not (1 <= max_concurrency <= 1000)
        ):
            raise ValidationError(
                f"max_concurrency must be an integer from 1 to 1000, got {safe_repr(max_concurrency)}",
                parameter="max_concurrency",
                value=max_concurrency,
            )
        poll_seconds = _positive("poll_interval", poll_interval, maximum=86_400.0)
        lease_seconds = _positive("lease_timeout", lease_timeout, maximum=checks.MAX_LEASE_SECONDS)
        shutdown_seconds = None if shutdown_timeout is None else _positive("shutdown_timeout", shutdown_timeout)
        if prefetch is not None and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= 10_000
        ):
            raise ValidationError(
                f"prefetch must be an integer from 0 to 10000, got {safe_repr(prefetch)}",
                parameter="prefetch",
                value=prefetch,
            )
        window = None if batch_window is None else checks.as_seconds(batch_window)
        if batch_window is not None and (window is None or not 0 <= window <= 1):  # NaN fails too
            raise ValidationError(
                f"batch_window must be None or a number of seconds from 0 to 1, got {safe_repr(batch_window)}",
                parameter="batch_window",
                value=batch_window,
            )
        given_queues = queues
        if isinstance(queues, str):
            if "," in queues:  # the CLI's --queues splits at commas; a str here is one name, and the worker would idle
                parts = [part.strip() for part in queues.split(",")]
                raise ValidationError(
                    f"queues={safe_repr(queues)} is one string holding a comma: pass a list of names, "
                    f"{safe_repr(parts)} (or {safe_repr([queues])} for one queue whose name holds a comma)",
                    parameter="queues",
                    value=queues,
                )
            queues = [queues]
        if queues is not None:
            if isinstance(queues, Mapping) or not isinstance(queues, Iterable):
                raise ValidationError(
                    f"queues must be a queue name or a list of them, got {safe_repr(queues)}",
                    parameter="queues",
                    value=queues,
                )
            queues = list(queues)
            if not queues or not all(isinstance(q, str) and q for q in queues):
                raise ValidationError(
                    f"queues must be a non-empty list of queue names, got {safe_repr(given_queues)}",
                    parameter="queues",
                    value=given_queues,
                )
            for name in queues:
                checks.queue_name(name, "queues")  # a name no store can hold would fail every reserve, forever
        target, _options, config_serializer = split_config(backend)
        self._owns_backend = not isinstance(target, Backend)
        self.backend = resolve_backend(backend)
        if self._owns_backend and getattr(self.backend, "is_memory", False) is True:
            # Worker("sqlite://") beside TaskQueue("sqlite://"): two databases, and the tasks never run
            logger.warning(
                "%r is an in-memory database of the worker's own, which no queue can reach; pass the "
                "queue's backend object instead (Worker(queue.backend)) so both use one database",
                self.backend,
            )
        chosen = serializer if serializer is not None else config_serializer
        self._only_serializer: Serializer | None = resolve_serializer(chosen) if chosen is not None else None
        self._serializers: dict[str, Serializer] = {}
        self._hard_stopping = asyncio.Event()  # a second signal: stop waiting for in-flight tasks
        self._hard_stop_cause = ""  # what set _hard_stopping ("a second SIGTERM"), for the log
        # why the last stop left tasks running (the shutdown timeout, a second signal), or None: it left none
        self._left_running_because: str | None = None
        self._wait_failures = 0  # wait_for_work failures in a row (logged, and paced by poll_interval)
        self._loading: set[_Running] = set()  # reserved, their function loading on a thread (_load)
        self._loaders: set[asyncio.Task[None]] = set()
        self._loaded: set[tuple[str, str]] = set()  # (serializer, function name) decoded once: later ones on the loop
        if self._only_serializer is not None:
            self._serializers[self._only_serializer.name] = self._only_serializer
        self.max_concurrency = max_concurrency
        self.poll_interval = poll_seconds
        self.queues: list[str] | None = queues
        self.lease_timeout = lease_seconds
        self.prefetch = prefetch
        self.batch_window = window
        self._pacer = CommitPacer(self.batch_window)
        self._mean_run_time = 1.0  # seconds; an EWMA of task run times, for the adaptive prefetch
        self.shutdown_timeout = shutdown_seconds
        if worker_id is not None:
            checks.worker_id(worker_id)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        self.processed = 0
        self.succeeded = 0
        self.failed = 0

        self._held: dict[str, _Running] = {}
        self._waiting: deque[_Running] = deque()
        self._executing = 0
        # monotonic time of the last log line about failing backend calls, per kind of call
        self._failing_logged: dict[str, float] = {}
        self._gave_up = 0  # outcomes given up on since the last line about them
        self._gave_up_ids: list[str] = []  # the first few of their task ids, named in that line
        self._gave_up_since = 0.0  # monotonic time the store began failing, for those outcomes
        self._unstarted_dropped = 0  # tasks not started (their leases ran out) since the last line about them
        self._renewals_failing = False  # the last lease renewal sent to the store failed
        self._loop_stall_seen = -math.inf  # monotonic time the loop watch last saw the loop stalled (or its end)
        self._outliving: list[str] = []  # task ids of timed-out sync calls whose threads still run (_outlive)
        self._hung_slots = 0  # slots held by such threads (not reserved for)
        self._outcomes: deque[tuple[_Running, Outcome, dict[str, Any]]] = deque()
        # task id -> (monotonic time, attempt, final outcome, extra): refused for a lost lease (_reported_late)
        self._late_outcomes: dict[str, tuple[float, _Running, Outcome, dict[str, Any]]] = {}
        # (task id, lease token) of outcomes sent in a report whose answer never came (cut short, failed):
        # it may have gone in, and a store refusing them again does not mean the lease was lost
        self._unanswered: set[tuple[str, str]] = set()
        self._unreleased: list[_Running] = []  # a give-back cut short by the loop's end (_give_back_all retries)
        self._single_reports = 0  # report outcomes one per backend call for this many calls (a refused batch)
        self._fairness: asyncio.Task[None] | None = None  # gives back prefetched tasks when runs turn slow
        # A task whose last worker died holding it (_crash_suspect) may be what killed that worker: it
        # runs alone here (for its first _SUSPECT_ALONE seconds), so a poison pill cannot take the tasks
        # beside it down with it again and again.
        self._suspect: _Running | None = None
        self._suspect_timer: asyncio.TimerHandle | None = None  # ends its isolation (_SUSPECT_ALONE)
        # (task id, monotonic time) of a suspect given back while tasks ran here (_isolate_suspects): nothing
        # is reserved until they have ended or _SUSPECT_WAIT has passed since that time
        self._deferred: tuple[str, float] | None = None
        self._deferred_timer: asyncio.TimerHandle | None = None  # wakes the reserving when _SUSPECT_WAIT is up
        self._batches: dict[ThreadBatch, list[_Running]] = {}  # sync batches running (or queued) in the pool
        self._handoff_timer: asyncio.TimerHandle | None = None  # looks again when a batch is old enough (_hand_off)
        self._one_at_a_time = False  # suspects came in a batch: reserve one task per call until they are through
        self._last_start = time.monotonic()  # when a task last started (any thread)
        self._wake: asyncio.Event | None = None
        self._reserved_more = asyncio.Event()  # set when tasks are reserved (the heartbeat watches them)
        self._closing = False
        self._stop_budget = limits._FINAL_REPORT_TIMEOUT  # seconds the stop's backend calls may still take, together
        self._fatal: BaseException | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._pool: TaskThreads | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._holds_backend = False  # counted in holders while running on a backend it did not open
        self._starting: asyncio.Future[None] | None = None  # set while start() connects
        self._stop_requested = False  # stop() arrived while start() was connecting
        self._stop_asked: asyncio.Future[None] | None = None  # resolved by that stop: start() stops waiting
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._stop_task: asyncio.Future[None] | None = None  # the stop in progress (it outlives a cancelled stop())
        # one future per stop() call going on, resolved as it returns (on its caller's loop): run() waits for those
        # on its own loop, so ``run_until_complete(run())`` does not stop the loop a step before they return
        self._stop_calls: set[asyncio.Future[None]] = set()
        self._teardown: asyncio.Future[None] | None = None  # giving back everything as the loop ends (_tear_down)
        self._exchange_settled = asyncio.Event()  # set once the exchange loop has ended (or was cancelled)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # the thread running the loop (whose stack a blocked-loop warning shows)
        self._watch: LoopWatch | None = None  # warns while the loop does not answer (no lease is renewed then)
        self._base_context = contextvars.copy_context()  # start()'s, for the tasks' own asyncio tasks

    # ---------------------------------------------------------------- control

    @property
    def running(self) -> bool:
        """True between ``start()`` and the end of ``stop()``."""
        return self._running

    async def start(self) -> None:
        """Begin processing in the background and return at once.

        A ``stop()`` that arrives while ``start()`` is still connecting wins
        at once (it does not wait out a store that is locked or slow to
        answer): the worker then never starts processing.
        """
        stopping = self._stop_task
        if stopping is not None and not stopping.done():
            # a stop whose caller gave up is still going on: let it end, then start afresh
            with contextlib.suppress(Exception):
                await asyncio.shield(stopping)
        if self._running:
            return
        if self._starting is not None:  # another start() is connecting: share its outcome
            await asyncio.shield(self._starting)
            return
        loop = asyncio.get_running_loop()
        starting = self._starting = loop.create_future()
        self._stop_requested = False
        self._stop_asked = loop.create_future()
        try:
            await self._connect_unless_stopped(self._stop_asked)
            if self._stop_requested:
                logger.info("worker %s: stopped before it started", self.worker_id)
                if self._owns_backend:
                    await self.backend.close()
                return
            self._begin()
            self._warn_if_others_can_plant_code()
        finally:
            self._starting = None
            if not starting.done():
                starting.set_result(None)

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

    async def stop(self, timeout: Seconds | None = None) -> None:
        """Stop reserving, give back unstarted tasks, wait for in-flight ones, then return.

        ``timeout`` bounds the wait; tasks still running then are cancelled
        (async) or abandoned (threads) and their leases released so another
        worker takes them at once. Does not close a backend passed in as an object.
        A caller that stops waiting (``asyncio.wait_for``, a cancellation)
        leaves the stop going on; a later ``stop()`` waits for its end.
        """
        seconds = None if timeout is None else checks.as_seconds(timeout)
        if timeout is not None and (seconds is None or not seconds >= 0):  # NaN fails too
            raise ValidationError(
                f"timeout must be a number of seconds >= 0, or None, got {safe_repr(timeout)}",
                parameter="timeout",
                value=timeout,
            )
        timeout = seconds  # a Fraction or Decimal as float
        call = asyncio.get_running_loop().create_future()
        self._stop_calls.add(call)
        try:
            await self._stop(timeout)
        finally:
            self._stop_calls.discard(call)
            call.set_result(None)

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
                await self.stop(timeout)
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
            self._let_go_of_backend()
            self._end_watch()
            self._running = False
            stopped.set()
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

    async def run(self, *, handle_signals: bool = True) -> None:
        """Process until ``stop()`` is called or SIGINT/SIGTERM arrives, then drain and return.

        The first signal drains (in-flight tasks finish, up to
        ``shutdown_timeout``); a second signal stops at once. The handlers
        are in place before the backend connects, so a signal during a slow
        connect stops the worker too. It returns no earlier than the
        ``stop()`` calls awaited on its loop (``_stops_returned``).
        """
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        signals_seen = 0
        background: set[asyncio.Future[None]] = set()

        def on_signal(signum: signal.Signals) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                logger.info("worker %s: %s received, draining", self.worker_id, signum.name)
                background.add(asyncio.ensure_future(self.stop(timeout=self.shutdown_timeout)))
            else:
                logger.warning("worker %s: second %s, stopping now", self.worker_id, signum.name)
                self._hard_stop(f"a second {signum.name}")
            app_handler = app_handlers.get(signum)
            if app_handler is not None:  # the application's own shutdown (aiohttp's run_app) hears it too
                loop.call_soon(app_handler[0], *app_handler[1])

        previous: dict[signal.Signals, Any] = {}
        app_handlers: dict[signal.Signals, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        # a child forked meanwhile (a task's fork pool) gets the previous handlers back: with the loop's, it
        # ignored SIGTERM and relayed every signal it got to this process, as if the worker had been signalled
        undo_in_children = forks.SignalSetup(wakeup_fd=True)
        not_installed: BaseException | None = None
        if handle_signals:
            undo_in_children.register()
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    handler = signal.getsignal(signum)
                    app_handler = _loop_signal_callback(loop, signum) if _is_loop_handler(handler) else None
                    loop.add_signal_handler(signum, on_signal, signum)
                    installed.append(signum)
                    previous[signum] = handler
                    if app_handler is not None:
                        app_handlers[signum] = app_handler
                    undo_in_children.installed(signum, signal.getsignal(signum), _handler_to_put_back(signum, handler))
                except (NotImplementedError, RuntimeError, ValueError) as exc:
                    not_installed = exc  # not the main thread (Python delivers signals only there), or no support
            if not_installed is not None:
                logger.debug(
                    "worker %s: no SIGINT/SIGTERM signal handlers installed (%s); stop it with stop()",
                    self.worker_id,
                    _describe(not_installed),
                )
        try:
            await self.start()
            if not self._running:  # stop() came while start() was connecting
                await self._stops_returned(loop)
                return
            assert self._stopped is not None
            await self._stopped.wait()
        finally:
            _restore_signal_handlers(loop, installed, previous, app_handlers)
            undo_in_children.unregister()
            if self._running:
                try:
                    await self.stop(timeout=self.shutdown_timeout)
                except asyncio.CancelledError:  # cancelled again while draining: stop now, as a second signal does
                    if self._running and self._stopped is not None:
                        self._hard_stop("run() was cancelled again")
                        # the stop's last report and give-back, bounded as in every stop (a third cancel: leave)
                        with contextlib.suppress(TimeoutError):
                            await within(
                                asyncio.shield(self._stopped.wait()), limits._FINAL_REPORT_TIMEOUT + _CANCEL_GRACE
                            )
                    raise
        await self._stops_returned(loop)
        if isinstance(self._fatal, StoreGoneError):
            raise WorkerError(
                f"worker {self.worker_id} stopped: {self._fatal.message}", worker_id=self.worker_id, cause=self._fatal
            )
        if self._fatal is not None:
            raise WorkerError(
                f"worker stopped after an internal error: {self._fatal!r}", worker_id=self.worker_id, cause=self._fatal
            )

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
            self._let_go_of_backend()
            self._end_watch()
            self._running = False
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
        pending = set(in_flight)
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


def _positive(name: str, value: Any, maximum: float = math.inf) -> float:
    """``value`` as float seconds when it is a number > 0 and at most ``maximum``, else ValidationError."""
    seconds = checks.as_seconds(value)
    if seconds is None or not 0 < seconds <= maximum:  # NaN fails too
        bound = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise ValidationError(
            f"{name} must be a number > 0{bound}, got {safe_repr(value)}", parameter=name, value=value
        )
    return seconds
