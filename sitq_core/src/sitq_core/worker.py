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
import contextlib
import contextvars
import inspect
import math
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import Any

from . import checks, forks
from ._worker import limits
from ._worker.backlog import ResultBacklog
from ._worker.delays import heartbeat_retry_delay as heartbeat_retry_delay
from ._worker.delays import retry_delay as retry_delay
from ._worker.delays import store_retry_delay as store_retry_delay
from ._worker.dispatch import Dispatching
from ._worker.exchange import StoreExchange
from ._worker.execution import Executing
from ._worker.failures import _describe
from ._worker.finishing import Finishing
from ._worker.heartbeat import Heartbeat
from ._worker.lifecycle import Lifecycle
from ._worker.limits import _CANCEL_GRACE
from ._worker.log import logger
from ._worker.release import Releasing
from ._worker.reserving import Reserving
from ._worker.running import _Running as _Running
from ._worker.signals import (
    _application_handler,
    _handler_to_put_back,
    _is_loop_handler,
    _loop_signal_callback,
    _restore_signal_handlers,
)
from ._worker.state import WorkerState
from ._worker.watch import LoopWatching
from .backend import Backend
from .bounded import within
from .checks import Seconds
from .config import BackendSpec, SerializerSpec, resolve_backend, resolve_serializer, split_config
from .errors import StoreGoneError, ValidationError, WorkerError, safe_repr
from .loopwatch import LoopWatch
from .models import Outcome
from .pacing import CommitPacer
from .serializers import Serializer
from .taskthreads import TaskThreads
from .thread_batch import ThreadBatch

__all__ = ["Worker", "retry_delay"]


class Worker(
    Lifecycle,
    StoreExchange,
    Reserving,
    Dispatching,
    Releasing,
    Executing,
    Finishing,
    ResultBacklog,
    Heartbeat,
    LoopWatching,
    WorkerState,
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
        self._sending: list[tuple[_Running, Outcome, dict[str, Any]]] = []  # the outcomes of the report on its way
        # value bytes of the outcomes in _outcomes and _sending: over limits._MAX_PENDING_RESULT_BYTES, no task
        # starts (backlog.py)
        self._pending_bytes = 0
        # bytes of the largest recent result, decaying as smaller ones come: sizes sync batches (backlog.py)
        self._result_size = 0.0
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

    async def run(self, *, handle_signals: bool = True) -> None:
        """Process until ``stop()`` is called or SIGINT/SIGTERM arrives, then drain and return.

        The first signal drains (in-flight tasks finish, up to
        ``shutdown_timeout``); a second signal stops at once. The handlers
        are in place before the backend connects, so a signal during a slow
        connect stops the worker too. The application's own handler for the
        signal (set with ``loop.add_signal_handler`` or ``signal.signal``) is
        called too on each one and put back at the end; a SystemExit or
        KeyboardInterrupt from the latter is raised once the worker has
        stopped. It returns no earlier than the ``stop()`` calls awaited on
        its loop (``_stops_returned``).
        ``handle_signals`` must be a bool (a string such as ``"no"`` is true).
        """
        if not isinstance(handle_signals, bool):
            raise ValidationError(
                f"handle_signals must be True or False, got {safe_repr(handle_signals)}",
                parameter="handle_signals",
                value=handle_signals,
            )
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
            python_handler = python_handlers.get(signum)
            if python_handler is not None:  # as does one it set with signal.signal (uvicorn's)
                try:
                    python_handler(signum, inspect.currentframe())
                except (SystemExit, KeyboardInterrupt) as exc:  # it would have ended the program: once stopped
                    logger.info(
                        "worker %s: the application's %s handler raised %r; run() raises it once the worker stops",
                        self.worker_id,
                        signum.name,
                        exc,
                    )
                    app_exits.append(exc)
                except BaseException:
                    logger.exception(
                        "worker %s: the application's %s handler %s raised (the worker stops all the same)",
                        self.worker_id,
                        signum.name,
                        safe_repr(python_handler),
                    )

        def raise_app_exit() -> None:
            if app_exits:
                raise app_exits[0]

        previous: dict[signal.Signals, Any] = {}
        app_handlers: dict[signal.Signals, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        python_handlers: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {}
        app_exits: list[BaseException] = []  # SystemExit or KeyboardInterrupt from the app's handler
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
                    python_handler = _application_handler(signum, handler)
                    if python_handler is not None:
                        python_handlers[signum] = python_handler
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
                raise_app_exit()
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
        raise_app_exit()
        if isinstance(self._fatal, StoreGoneError):
            raise WorkerError(
                f"worker {self.worker_id} stopped: {self._fatal.message}", worker_id=self.worker_id, cause=self._fatal
            )
        if self._fatal is not None:
            raise WorkerError(
                f"worker stopped after an internal error: {self._fatal!r}", worker_id=self.worker_id, cause=self._fatal
            )


def _positive(name: str, value: Any, maximum: float = math.inf) -> float:
    """``value`` as float seconds when it is a number > 0 and at most ``maximum``, else ValidationError."""
    seconds = checks.as_seconds(value)
    if seconds is None or not 0 < seconds <= maximum:  # NaN fails too
        bound = "" if maximum == math.inf else f" and at most {maximum:g}"
        raise ValidationError(
            f"{name} must be a number > 0{bound}, got {safe_repr(value)}", parameter=name, value=value
        )
    return seconds
