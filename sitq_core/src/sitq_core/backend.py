"""The ``Backend`` spec: the whole contract between sitq's core and a store.

A backend stores :class:`~sitq_core.models.Task` records and moves them
through ``queued -> running -> success | failed | cancelled``. The core
(queue and worker) decides *what* happens (retry or not, when, with which
value); a backend only makes each change atomically and durably, and refuses
changes presented with a stale lease token.

Rules that hold for every method:

- Every method is a coroutine. Construction is synchronous and cheap; the
  first method call connects when ``connect()`` was not awaited yet.
- Datetimes going in are timezone-aware, in any zone (a task's times, a
  ``retry_at``, an outcome's times, ``requeue``'s ``eta``); a naive one is
  invalid. The backend stores the same instant and returns it as an aware
  UTC datetime. "Now" is ``self.now()`` (so tests can drive a fake clock
  through ``backend.clock``).
- Unknown task ids are not errors: reads return ``None``, changes return
  ``False``. Invalid arguments raise ``ValidationError`` naming the parameter
  (``ValidationError(parameter="...")``, as each method says), checked before
  anything changes: a refused call loses or changes nothing stored.
  ``sitq_core.checks`` has the checks the built-in backends use.
  Contract: ``BadInputContract``.
- Store failures raise :class:`~sitq_core.errors.BackendError`; nothing that
  was committed before is lost by a failed call. A write that failed for
  want of room (the disk holding the store is full) raises its subclass
  :class:`~sitq_core.errors.StoreFullError`, with the store's own error as
  its ``cause``: the worker then reports a large result's task failed for that
  reason (retried as its policy allows) instead of retrying the report until
  the lease expires; a backend that cannot tell raises a plain ``BackendError``.
- Instances, and any store they share, work from several threads at once,
  each running its own event loop (a ``SyncTaskQueue`` runs its loop in a
  thread beside a ``Worker``'s): no asyncio lock, event, connection or pool
  bound to one event loop may live in state shared by instances or threads.
  Contract: ``ConcurrencyContract``.
- A store shared by several machines makes ``now()`` follow one clock (the
  PostgreSQL backend adds the server's measured offset to ``clock()``);
  otherwise a machine whose clock runs fast takes over live leases.

The conformance suite in :mod:`sitq_core.testing` checks each promise below
by name; a third-party backend that passes it works with sitq's queue and worker.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import enum
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from . import checks
from .errors import ConfigurationError
from .models import LeaseState, Outcome, ReservedTask, Result, Task, utcnow
from .notify import Notifier
from .textoptions import text_options_converted
from .urls import redacted

if TYPE_CHECKING:
    from .urls import BackendURL

__all__ = ["SPEC_VERSION", "Backend", "Capability", "connecting_to_read_only", "reading_only"]

SPEC_VERSION = 1

_WORK_KEY = ("sitq", "work")

_READING_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("sitq_reading_only", default=False)


@contextlib.contextmanager
def reading_only() -> Iterator[None]:
    """Connects made inside this block (in this task or thread) will only read: ``sitq stats`` uses it.

    A backend may check at ``connect()`` that it can write its store, so that
    a worker or a producer on a store it can read but not write (a read-only
    file) stops at once with ``ConnectionError`` instead of failing every call
    after. Inside this block it should not: a read-only tool must keep working
    there. A backend reads it with :func:`connecting_to_read_only`.
    """
    token = _READING_ONLY.set(True)
    try:
        yield
    finally:
        _READING_ONLY.reset(token)


def connecting_to_read_only() -> bool:
    """True inside :func:`reading_only`: the caller connecting now will only read."""
    return _READING_ONLY.get()


class Capability(str, enum.Enum):
    """Optional abilities a backend declares in ``Backend.capabilities``.

    The conformance suite skips the contracts for abilities a backend does not
    declare, and says so in the skip reason.
    """

    PERSISTENT = "persistent"
    """Tasks survive closing and reopening the backend (same location)."""
    MULTI_PROCESS = "multi_process"
    """Several processes may use one store at once."""
    CROSS_PROCESS_NOTIFY = "cross_process_notify"
    """``wait_for_work``/``wait_for_result`` wake on changes made by other processes."""
    CANCEL_RUNNING = "cancel_running"
    """``cancel`` of a running task is reported to its worker by ``heartbeat``."""
    STREAMED_BATCHES = "streamed_batches"
    """``enqueue_many`` accepts a lazy sequence (:class:`~sitq_core.batch.TaskBatch`) whose items are
    built when first read and may raise then; the backend reads them inside its transaction, so such
    an error stores nothing, and lets a ``SitqError`` raised by a read propagate unchanged."""


class Backend(abc.ABC):
    """Abstract storage backend; subclass it and implement the abstract methods.

    Class attributes: ``name`` (the registry name, such as ``"sqlite"``),
    ``capabilities`` and ``spec_version`` (the version of this spec the
    backend was written for; the registry refuses a newer one).
    """

    name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    spec_version: ClassVar[int] = SPEC_VERSION

    #: Returns "now" as an aware UTC datetime; tests may replace it per instance.
    clock: Callable[[], datetime] = staticmethod(utcnow)

    # ------------------------------------------------------------------ helpers

    def now(self) -> datetime:
        """The backend's idea of now (aware UTC), read from ``self.clock``."""
        return self.clock()

    @property
    def notifier(self) -> Notifier:
        """In-process wake-ups shared by every queue and worker on this object."""
        notifier: Notifier | None = self.__dict__.get("_sitq_notifier")
        if notifier is None:
            notifier = self.__dict__.setdefault("_sitq_notifier", Notifier())
        return notifier

    def notify_work(self) -> None:
        """Wake local ``wait_for_work`` callers; the queue calls it after each enqueue."""
        self.notifier.notify(_WORK_KEY)

    def notify_results(self, task_ids: Sequence[str]) -> None:
        """Wake local ``wait_for_result`` callers of these tasks; the worker calls it after finishing."""
        self.notifier.notify_many(("sitq", "result", task_id) for task_id in task_ids)

    # ---------------------------------------------------------------- lifecycle

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the store, creating its schema on first use.

        Idempotent: a second call while connected does nothing. After
        ``close()`` a backend may be connected again. A call may be cancelled
        (a worker stopped while its store was locked or out of reach): a later
        call must connect as if it had not happened, and other callers waiting
        for the same connect must not receive that cancellation.
        Contract: ``LifecycleContract``.
        """

    def abandon(self) -> None:
        """Let go of threads, connections and files now, without awaiting; optional (default: nothing).

        Called, on a thread of its own, when the ``TaskQueue`` that made this
        backend from a URL or config was garbage-collected without ``close()``
        while connected (a queue made per request and forgotten), so that such
        queues do not pile up threads and file descriptors for the life of the
        process. Nothing is written; work already committed stays. A later call
        connects again. Never called on a backend someone else still holds
        open (another queue, a running worker).
        """

    async def exists(self) -> bool | None:
        """Whether the store already holds sitq's data (its tables, file or keys); None when it cannot tell.

        Read-only tools (``sitq stats``) ask before connecting, so a mistyped
        path or schema is reported instead of created. It must create
        nothing and needs no ``connect()``. A store nobody has connected to
        yet answers False (or None), never True; once ``connect()`` has
        returned, the store exists (make it there, not at the first write)
        and the answer is True (or None), empty as it may be. The default
        returns None (unknown): the tool then connects as usual.
        Contract: ``LifecycleContract``.
        """
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource. Idempotent; committed data stays stored.

        Contract: ``LifecycleContract``.
        """

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ enqueue

    @abc.abstractmethod
    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store every task in one atomic step and return their ids in order.

        Each task is stored as a ``queued`` task, ready to reserve at its
        ``eta``, whatever its ``status`` field says; every other field is
        returned unchanged by ``get_task`` (times as aware UTC datetimes of the
        same instant). A task moved from another store keeps its counters:
        ``attempts`` and ``lease_expiries`` count on from what it brings
        (a new task brings 0). Either all tasks
        are stored or none is. An id that already exists, or an invalid task
        anywhere in the batch (see ``sitq_core.checks.check_task``: a naive
        time, a payload that is not bytes, ...), raises
        ``ValidationError(parameter="tasks")`` and stores none of the batch.
        An empty sequence returns ``[]``.

        Task ids and queue names are at most 255 characters
        (``checks.MAX_TASK_ID_LENGTH``, ``checks.MAX_QUEUE_NAME_LENGTH``):
        the core never passes a longer one (``TaskQueue`` makes short ids and
        refuses a longer ``queue_name`` up front), so a store may index both
        columns within that size. A ``Task`` built by hand may bring a
        longer one: ``check_task`` refuses it (``checks.task_names_fit``), as
        the built-in backends do. Reads and filters (``get_task``,
        ``list_tasks(queue=)``, ``reserve(queues=)``) are not limited.
        Contracts: ``EnqueueContract``, ``BadInputContract``.
        """

    async def enqueue(self, task: Task) -> str:
        """Store one task; same semantics as ``enqueue_many([task])``.

        The core never passes a task id or queue name longer than 255
        characters (see ``enqueue_many``).
        """
        ids = await self.enqueue_many([task])
        return ids[0]

    def enqueue_blocking(self, task: Task) -> str | None:
        """Optional fast path for ``SyncTaskQueue``: store one task on the calling thread, blocking.

        Called from a plain thread with no event loop, to spare a blocking
        caller two thread hops per enqueue. Store ``task`` exactly as
        ``enqueue`` would and return its id, or return None having stored
        nothing when that cannot be done cheaply now (not connected yet, the
        store busy, no such path): the caller then awaits ``enqueue`` on its
        loop. Must be safe to call from any thread; errors are those of
        ``enqueue``. The default returns None.

        Contract: ``EnqueueContract``.
        """
        return None

    # ------------------------------------------------------------------ reserve

    @abc.abstractmethod
    async def reserve(
        self,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> list[ReservedTask]:
        """Lease up to ``limit`` tasks that are due, atomically.

        A task is due when it is ``queued`` with ``eta <= now``, or ``running``
        with an expired lease (``lease_expires_at <= now``: its worker died).
        Order: highest ``priority`` first, then earliest due time (``eta``
        for a queued task, ``lease_expires_at`` for one whose lease expired),
        then arrival order (the order in which this store received the tasks; an
        ``enqueue_many`` batch in list order). ``queues`` limits the search
        to those queue names (``None``: every queue; ``queues=[]``: none, so
        nothing is reserved). A bare string such as ``queues="default"`` is
        a ``Sequence[str]`` of letters, not a list of names: it raises
        ``ValidationError(parameter="queues")`` (``checks.queue_names``).

        Each reserved task becomes ``running`` with ``worker_id``, a fresh
        unique ``lease_token``, ``lease_expires_at = now + lease_seconds``,
        ``attempts + 1``, and ``started_at = now``. ``now`` is read when the
        claim is made, after any wait for a lock or a connection: a lease
        counted from before such a wait could be handed out already expired. A task whose lease had
        expired also gets ``lease_expiries + 1`` and ``error = LEASE_EXPIRED_ERROR``
        (:data:`sitq_core.models.LEASE_EXPIRED_ERROR`: the worker runs such a task
        alone, as it may be what killed its last worker); if that reaches
        ``max_lease_expiries`` it is not handed out but ends ``failed`` with
        the error ``"lease expired after N attempts"`` (N = its attempts) and a
        result is stored (poison-pill protection). A task with an expired
        lease whose ``cancel_requested`` is set (its worker died before it
        could report the cancel) is not handed out either: it ends
        ``cancelled``, with a result (status ``cancelled``, error
        ``"cancelled"``). Nor is a ``queued`` task whose ``cancel_requested``
        is set (sitq before the rule in ``finish_many`` queued a retry or a
        release of a task cancelled while it ran with the request still set,
        and an old worker may still do so while a deploy rolls; a task moved
        from such a store brings it): its cancel was accepted, so it ends
        ``cancelled`` as ``cancel`` ends a queued task (a result with status
        ``cancelled`` and error ``"cancelled"``; its attempts unchanged, as it
        did not run). No worker reports the tasks a reserve ends itself:
        after storing the change (outside any lock or transaction), pass them,
        as they now are, to :func:`sitq_core.store_endings.report`, or
        ``store_endings.report_ids(self, ids)``, so that lifecycle observers
        hear ``sitq_task_failed`` / ``sitq_task_cancelled`` of them.

        While a lease is valid no other ``reserve`` call, in any process,
        returns the same task. ``limit < 1`` raises
        ``ValidationError(parameter="limit")`` and ``lease_seconds <= 0``
        ``ValidationError(parameter="lease_seconds")``, changing nothing.
        Returns ``[]`` when nothing is due.
        Contracts: ``ReserveContract``, ``LeaseContract``, ``ConcurrencyContract``, ``BadInputContract``.
        """

    @abc.abstractmethod
    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        """Extend each ``(task_id, lease_token)`` lease to ``now + lease_seconds`` (this call's length).

        Returns a state per task id: ``HELD`` (extended), ``LOST`` (the token is
        no longer current, the task is unknown, gone or final: nothing changed), or
        ``CANCEL_REQUESTED`` (extended, but ``cancel`` was called; the worker
        should stop the task and report ``cancelled``). A lease stays current
        until another ``reserve`` takes the task under a new token: one past
        its expiry that nobody took yet (a worker paused by a long GC or a
        slow disk) is extended (``HELD``), and ``finish_many`` accepts its
        outcome, so finished work is not thrown away for nothing. As in
        ``reserve``, ``now`` is read when the lease is extended, after any wait.

        ``lease_seconds`` that is not a number > 0 (``0``, ``-1``, NaN) raises
        ``ValidationError(parameter="lease_seconds")``; ``leases`` that is not
        a sequence of ``(task_id, lease_token)`` string pairs (a bare string,
        a 1-tuple) raises ``ValidationError(parameter="leases")``; both are
        checked before any lease changes (``checks.lease_seconds``,
        ``checks.lease_pairs``). ``heartbeat([])`` returns ``{}``.
        Contracts: ``LeaseContract``, ``CancelContract``, ``BadInputContract``.
        """

    # ------------------------------------------------------------------- finish

    @abc.abstractmethod
    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply each outcome if its lease token is still current; one bool per outcome.

        An outcome whose ``(task_id, lease_token)`` is not the task's current
        lease, or whose task is unknown or not ``running``, changes nothing and yields
        ``False`` (fencing: a late worker never overwrites a newer attempt).
        Accepted outcomes, by ``kind``:

        - ``success`` / ``failed`` / ``cancelled``: the task becomes final with
          that status, ``finished_at`` set, and a :class:`Result` is stored
          (value, error, traceback, enqueued/started/finished times, attempts;
          a ``value`` of ``b""`` reads back as ``b""``, not ``None``).
          The outcome's ``started_at`` and ``finished_at``, when given, are
          when the call really began and ended (a prefetched task starts
          after its reservation): store those; otherwise the reservation's
          ``started_at`` and ``now()``.
        - ``retry``: the task returns to ``queued`` with ``eta = retry_at``;
          ``error`` is kept on the task; attempts are not reset. A
          ``retry_at`` (like the outcome's ``started_at``/``finished_at``)
          may come in any zone: store the same instant and return it as
          aware UTC (``get_task``'s ``eta``, the result's times).
        - ``release``: the task returns to ``queued`` and the attempt is not
          counted (``attempts - 1``); its ``eta`` stays as it was (it is due
          already), so it keeps its place, and the worker can tell that no
          retry or requeue moved it since.
        - ``retry`` or ``release`` of a task whose cancel was requested
          (``cancel_requested``, see ``cancel``): it is not queued again but
          ends ``cancelled`` as a ``cancelled`` outcome would (error
          ``"cancelled"``, a result stored), and the outcome yields True.

        The lease ends in every accepted case. Outcomes are applied in order;
        a backend may commit them together (group commit).

        Every outcome is checked up front, before any outcome of the call is
        applied: ``outcomes`` that is not a sequence (a lone ``Outcome``), an
        item that is not an ``Outcome``, an unknown ``kind``, or a naive
        ``retry_at``/``started_at``/``finished_at`` raises
        ``ValidationError(parameter="outcomes")`` and changes nothing
        (``checks.check_outcomes``). ``finish_many([])`` returns ``[]``.
        No room left to store them (a full disk) raises ``StoreFullError``
        and changes nothing. Contracts: ``ResultContract``, ``LeaseContract``, ``RetryContract``, ``CancelContract``,
        ``BadInputContract``.
        """

    async def finish_and_reserve(
        self,
        outcomes: Sequence[Outcome],
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[ReservedTask]]:
        """``finish_many(outcomes)`` then ``reserve(...)``; the worker's steady-state call.

        Semantics are exactly those of the two calls in that order. The
        default makes the two calls; a backend that can do both in one
        transaction (one commit instead of two) should override it.
        """
        accepted = await self.finish_many(outcomes) if outcomes else []
        reserved = await self.reserve(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, queues=queues)
        return accepted, reserved

    async def complete(self, lease: ReservedTask, value: bytes | None) -> bool:
        """Mark a reserved task ``success`` with its serialised value (fenced)."""
        outcome = Outcome(lease.id, lease.lease_token, "success", value=value)
        return (await self.finish_many([outcome]))[0]

    async def fail(self, lease: ReservedTask, error: str, traceback: str | None = None) -> bool:
        """Mark a reserved task ``failed`` for good (fenced)."""
        outcome = Outcome(lease.id, lease.lease_token, "failed", error=error, traceback=traceback)
        return (await self.finish_many([outcome]))[0]

    async def retry(self, lease: ReservedTask, retry_at: datetime, error: str, traceback: str | None = None) -> bool:
        """Put a reserved task back to ``queued`` until ``retry_at`` (fenced)."""
        outcome = Outcome(lease.id, lease.lease_token, "retry", error=error, traceback=traceback, retry_at=retry_at)
        return (await self.finish_many([outcome]))[0]

    async def release(self, lease: ReservedTask) -> bool:
        """Give a reserved task back unstarted, without counting the attempt (fenced)."""
        outcome = Outcome(lease.id, lease.lease_token, "release")
        return (await self.finish_many([outcome]))[0]

    # ------------------------------------------------------------------- cancel

    @abc.abstractmethod
    async def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not finished.

        A ``queued`` task becomes ``cancelled`` at once, with a stored result
        (status ``cancelled``, error ``"cancelled"``), and returns True. A
        ``running`` task gets ``cancel_requested = True`` (reported by
        ``heartbeat``) and returns True; it becomes final when its worker
        reports (or as ``reserve`` describes, when its lease expires first).
        A backend that does not declare ``Capability.CANCEL_RUNNING`` returns
        False for a running task and changes nothing: its worker could never
        learn of the cancel. A final or unknown task returns False and
        changes nothing.
        Contracts: ``CancelContract``, ``BadInputContract``.
        """

    @abc.abstractmethod
    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        """Run a ``failed`` or ``cancelled`` task again.

        The task returns to ``queued`` (due at ``eta`` or now) with attempts,
        lease expiries, error and ``cancel_requested`` reset, ``started_at``,
        ``finished_at`` and ``worker_id`` cleared (``None``: it has not run
        since), and its result is deleted. Returns False (nothing changed) for
        a task that is not ``failed``/``cancelled`` or is unknown. ``eta`` may
        be in any zone (stored and returned as aware UTC); a naive ``eta``
        raises ``ValidationError(parameter="eta")``, checked before the task
        is looked up (``checks.aware_or_none``).
        Contracts: ``CancelContract``, ``BadInputContract``.
        """

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        """Run several ``failed`` or ``cancelled`` tasks again; one bool per id, in order, True where it was requeued.

        Each id gets what ``requeue(task_id, eta=eta)`` would give it, taken in
        list order: a ``failed`` or ``cancelled`` task returns to ``queued``
        (due at ``eta`` or now, the same instant for every id of the call) with
        attempts, lease expiries, error and ``cancel_requested`` reset,
        ``started_at``, ``finished_at`` and ``worker_id`` cleared, and its
        result deleted, and yields True; a task in any other status, or an
        unknown id, yields False and changes nothing. An id given twice is
        requeued at most once: its later places yield False (the task is
        ``queued`` by then, or was not requeuable at all).

        Every argument is checked before anything changes: ``task_ids`` that
        is not a sequence of task ids (a bare string, a set, an item that is
        not a non-empty string or that holds a NUL) raises
        ``ValidationError(parameter="task_ids")`` (``checks.task_ids``), and
        a naive ``eta`` raises ``ValidationError(parameter="eta")``
        (``checks.aware_or_none``), whatever the tasks' states.
        ``requeue_many([])`` returns ``[]`` without touching the store.

        Optional to override. The default checks the arguments, then awaits
        ``self.requeue`` for each id in turn: right for any backend whose
        ``requeue`` is, but one transaction per id, and not atomic (a
        ``BackendError`` part way leaves the ids before it requeued). A
        backend that can requeue many tasks in one transaction or statement
        should override it (``sitq requeue --failed`` calls it with pages of
        a few hundred ids), giving the same answers as the default. Workers
        of this process are woken by the caller (``TaskQueue`` calls
        ``notify_work()``); a backend that declares ``CROSS_PROCESS_NOTIFY``
        wakes other processes' workers once per call, as its ``requeue`` does
        per task.
        Contracts: ``CancelContract``, ``BadInputContract``.
        """
        ids = checks.task_ids(task_ids)
        when = checks.aware_or_none(eta, "eta")
        if ids and when is None:
            when = self.now()  # one instant for every id of the call, as the docstring says
        return [await self.requeue(task_id, eta=when) for task_id in ids]

    # -------------------------------------------------------------------- reads

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> Task | None:
        """The task with its current status and bookkeeping, or None when unknown.

        Contracts: ``EnqueueContract``, ``BadInputContract``.
        """

    @abc.abstractmethod
    async def get_result(self, task_id: str) -> Result | None:
        """The stored final result, or None while the task is not final (or unknown).

        Contracts: ``ResultContract``, ``BadInputContract``.
        """

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        """Return the result as soon as it exists; None when ``timeout`` seconds pass first.

        ``timeout=None`` waits forever, ``0`` checks once. The default waits on
        in-process notifications (``notify_results``) and re-checks with a
        growing interval (1 ms up to 50 ms) so results written by other
        processes are seen too. Backends that can be notified across processes
        override this; an unknown task waits like one not final yet.
        Contracts: ``ResultContract``, ``BadInputContract``.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        key = ("sitq", "result", task_id)
        interval = 0.001
        while True:
            with self.notifier.subscribe(key) as subscription:  # before the read: no notice falls between
                result = await self.get_result(task_id)
                if result is not None:
                    return result
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                await subscription.wait(interval if remaining is None else min(interval, remaining))
            interval = min(interval * 2, 0.05)

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until new work may be due, at most ``timeout`` seconds.

        Returning early is always allowed (the worker then reserves again).
        The default wakes on in-process enqueues (``notify_work``); backends
        that can see other processes' enqueues cheaply override this.
        """
        await self.notifier.wait(_WORK_KEY, timeout)

    async def next_eta(self, queues: Sequence[str] | None = None) -> datetime | None:
        """The earliest ``eta`` of a queued task (or lease expiry of a running one) in ``queues``.

        Lets a worker sleep exactly until scheduled work is due. The default
        returns None (unknown); the worker then sleeps its poll interval.
        """
        return None

    @abc.abstractmethod
    async def list_tasks(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks filtered by status and queue, oldest enqueued first.

        Ties (tasks sharing one ``enqueued_at``, as a ``TaskQueue.enqueue_many``
        batch does) come in arrival order, so paging with ``limit``/``offset``
        neither repeats nor skips a task.

        An unknown status raises ``ValidationError(parameter="status")``;
        ``limit < 0`` raises ``ValidationError(parameter="limit")`` and
        ``offset < 0`` ``ValidationError(parameter="offset")``.
        Contracts: ``StatsContract``, ``BadInputContract``.
        """

    @abc.abstractmethod
    async def counts(self, *, queue: str | None = None) -> dict[str, int]:
        """Number of tasks per status, with every status name as a key (0 when none).

        Contract: ``StatsContract``.
        """

    @abc.abstractmethod
    async def purge(self, *, older_than: datetime | None = None) -> int:
        """Delete final tasks (and their results) finished (``finished_at``) before ``older_than``.

        ``None`` deletes every final task. Queued and running tasks are never
        deleted. Returns how many tasks were deleted. A naive datetime raises
        ``ValidationError(parameter="older_than")``.
        Contracts: ``StatsContract``, ``BadInputContract``.
        """

    # ------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Self:
        """Build a backend from a config mapping (keys are ``__init__`` parameters).

        Unknown keys raise ``ConfigurationError`` listing the accepted ones.
        Values given as text (from a URL, the environment or the CLI) are
        converted for parameters annotated (or defaulting to) ``bool``,
        ``int`` or ``float``: ``"5"`` becomes 5 and ``"false"`` False.
        """
        accepted = cls.config_options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigurationError(
                f"unknown option {unknown[0]!r} for backend {cls.name or cls.__name__!r}; "
                f"expected one of: {', '.join(accepted) or '(none)'}",
                parameter=unknown[0],
                value=redacted(unknown[0], options[unknown[0]]),  # 'password': the value is a secret
                valid_options=accepted,
            )
        missing = [name for name in cls.required_options() if name not in options]
        if missing:  # a raw TypeError from __init__ named no option a URL or config could give
            raise ConfigurationError(
                f"backend {cls.name or cls.__name__!r} needs the option {missing[0]!r}"
                f"{' (and ' + ', '.join(map(repr, missing[1:])) + ')' if missing[1:] else ''}: give it in the "
                f"URL's query (?{missing[0]}=...) or the config mapping; its options: {', '.join(accepted)}",
                parameter=missing[0],
                value=None,
                valid_options=accepted,
            )
        return cls(**text_options_converted(cls, options))

    @classmethod
    def from_url(cls, url: BackendURL) -> Self:
        """Build a backend from a parsed URL; the default accepts only query options."""
        given = (url.host, url.port, url.username, url.password, url.database)
        if any(part is not None and part != "" for part in given) or url.more_hosts:  # port 0, ':pw@' too
            raise ConfigurationError(
                f"backend {cls.name!r} takes no host, port, user, password or path in its URL, only ?options; "
                f"got {url}",
                parameter="url",
                value=str(url),
            )
        return cls.from_config(dict(url.query))

    @classmethod
    def required_options(cls) -> list[str]:
        """The options ``from_config`` cannot do without: ``__init__`` keyword parameters with no default."""
        signature = inspect.signature(cls.__init__)
        return [name for name in cls.config_options() if signature.parameters[name].default is inspect.Parameter.empty]

    @classmethod
    def config_options(cls) -> list[str]:
        """The option names ``from_config`` accepts (the ``__init__`` keyword parameters)."""
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, parameter in signature.parameters.items()
            if name != "self"
            and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
