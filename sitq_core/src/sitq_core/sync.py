"""``SyncTaskQueue``: the queue for code without an event loop.

It runs a private event loop in one daemon thread and hands every call to it,
so a backend connection is always used from the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from types import CodeType, TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar, Unpack

from .backend import Backend
from .checks import Seconds
from .config import BackendSpec, SerializerSpec, split_config
from .errors import (
    SerializationError,
    SitqError,
    SyncTaskQueueError,
    TaskCancelledError,
    TaskExecutionError,
    ValidationError,
    describe_exception,
)
from .forks import forget_in_child, keep_inherited
from .holders import holders
from .models import Result, Task, TaskStatus, TaskStatusName
from .options import TaskOptionArgs, TaskOptions
from .queue import TaskQueue, TaskQueueView, _abandon, backend_not_ready, warn_dropped

__all__ = ["SyncTaskQueue", "SyncTaskQueueView"]

T = TypeVar("T")

log = logging.getLogger("sitq")

#: how long a close whose caller was interrupted gives what still runs on the loop to unwind
_UNWIND_SECONDS = 2.0


def _refuse_running_loop(operation: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    how = (
        # an async app's shutdown hook closing a SyncTaskQueue it shares with its threads
        "it blocks until the queue is closed: from async code call it on a thread "
        "(await asyncio.to_thread(queue.close)), or use TaskQueue in async code"
        if operation == "close"
        else f"use TaskQueue (await queue.{_async_twin(operation)}(...)) in async code"
    )
    raise RuntimeError(f"SyncTaskQueue.{operation}() was called inside a running event loop; {how}")


def _async_twin(operation: str) -> str:
    """The TaskQueue method that does what ``SyncTaskQueue.<operation>`` does (``enqueue`` for ``__enter__``)."""
    if operation == "get_result_record":  # TaskQueue.get_result returns the record itself
        return "get_result"
    return operation if not operation.startswith("_") and callable(getattr(TaskQueue, operation, None)) else "enqueue"


class _Latch:
    """A one-shot signal between threads that an exception from a signal handler cannot wedge.

    ``threading.Event`` and ``concurrent.futures.Future`` take their condition's
    lock through a Python-level ``__enter__``: a signal handler that raises just
    after the waiting thread acquired it (a SIGALRM request deadline) leaves it
    held for good, and the loop thread that sets them then blocks forever. A
    bare lock is acquired in one C call: interrupted, the waiter holds nothing.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Open the latch; only its owner calls this, and once."""
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latch is open (False: ``timeout`` seconds passed first); several threads may wait."""
        if timeout is None:
            with self._lock:  # released again by the with statement, even when a signal handler raises here
                return True
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True


class _Call(Generic[T]):
    """One call handed to the private loop: its outcome, and a latch its caller waits on.

    The coroutine is made on the loop thread, so an exception raised on the
    caller's thread while it hands the call over never leaves one un-awaited.
    """

    __slots__ = ("_done", "_error", "_guard", "_settled", "_value", "cancelled")

    def __init__(self) -> None:
        self._done = _Latch()
        self._guard = threading.Lock()  # the loop and a close() sweeping calls left on a stopped loop
        self._settled = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self.cancelled = False

    def settle(self, value: T | None = None, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        """Record the outcome once (a later one is ignored) and wake the caller."""
        with self._guard:
            if self._settled:
                return
            self._settled = True
            self._value, self._error, self.cancelled = value, error, cancelled
        self._done.set()

    def settle_from(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.settle(cancelled=True)
        elif (error := task.exception()) is not None:
            self.settle(error=error)
        else:
            self.settle(task.result())

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def error(self) -> BaseException | None:
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> T:
        """The call's value, or its exception raised (only once it has settled)."""
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # None when T admits it


def _handler_codes() -> set[CodeType]:
    """The code objects of the Python signal handlers installed now."""
    codes: set[CodeType] = set()
    for signum in signal.valid_signals():
        try:
            handler: Any = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        for _ in range(8):  # unwrap partials and bound methods, a few levels at most
            if isinstance(handler, functools.partial):
                handler = handler.func
            elif hasattr(handler, "__func__"):
                handler = handler.__func__
            else:
                break
        code = getattr(handler, "__code__", None)
        if code is None and callable(handler) and not isinstance(handler, type):  # an object with __call__
            code = getattr(type(handler).__call__, "__code__", None)
        if isinstance(code, CodeType):
            codes.add(code)
    return codes


def _from_signal_handler(exc: BaseException) -> BaseException | None:
    """The exception a signal handler raised on this thread, if ``exc`` is it or wraps it (its causes); else None.

    Such an exception (a request deadline's) is the caller's own, not an error
    of the queue's: it must reach the caller as it is. It is recognised by a
    frame of an installed handler in its traceback; only the main thread runs handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    codes: set[CodeType] | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback = current.__traceback__
        while traceback is not None:
            if codes is None:
                codes = _handler_codes()
                if not codes:
                    return None
            if traceback.tb_frame.f_code in codes:
                return current
            traceback = traceback.tb_next
        current = current.__cause__
    return None


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` from inside an ``except`` block as it was, not chained to the error being handled."""
    context, suppress = exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__context__, exc.__suppress_context__ = context, suppress


def _closed(operation: str, task_id: str | None, *, here: bool) -> SyncTaskQueueError:
    """The error of a call that a ``close()`` ended; ``here``: that close ran on the caller's own thread."""
    by = "on this same thread during the call (close() from a signal handler, say)" if here else "by another thread"
    return SyncTaskQueueError(
        f"{operation} was interrupted: the queue was closed {by}", task_id=task_id, operation=operation
    )


class SyncTaskQueue:
    """Blocking version of :class:`TaskQueue`; use ``with SyncTaskQueue(backend) as q:``."""

    def __init__(self, backend: BackendSpec, serializer: SerializerSpec = None) -> None:
        given, _options, _serializer = split_config(backend)  # a mapping may carry a backend object too
        self._start(TaskQueue(backend, serializer), owns_backend=not isinstance(given, Backend))

    def _start(self, queue: TaskQueue, *, owns_backend: bool = True, unpickled: bool = False) -> None:
        self._queue = queue
        self._unpickled = unpickled  # let go quietly when dropped: no caller made it, none could close it
        self._owns_backend = owns_backend  # made from a URL or config: closed with a queue dropped unclosed
        self._finalizer: weakref.finalize[Any, SyncTaskQueue] | None = None  # for the current private loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # guards the loop, _waiting and _closing
        self._calls: dict[asyncio.Task[Any], bool] = {}  # calls running on the private loop -> may wait forever
        self._waiting: set[_Call[Any]] = set()  # calls other threads wait on (guarded by _lock)
        self._closing = False  # close() is under way: new calls are refused, waiting ones ended
        self._closed_event: _Latch | None = None  # set when the close under way has finished
        self._closer: int | None = None  # the thread running that close
        self._enqueues = 0  # enqueues in progress: the blocking path is taken only by a caller alone
        self._blocking: int | None = None  # the thread storing an enqueue on itself (one at most: it was alone)
        self._close_deferred = False  # close() ran in a signal handler that interrupted that store
        self._users = 0  # with blocks open on it (any thread, nested too): the last one to end closes it
        self._here = threading.local()  # per thread: .closes, how many close() calls it has run
        forget_in_child(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: the private loop's thread is gone; the next call starts a loop of its own."""
        keep_inherited(self._loop, self._thread)
        if self._finalizer is not None:
            self._finalizer.detach()  # the parent's loop: not this process's to stop
        self._loop, self._thread, self._finalizer = None, None, None
        self._lock = threading.RLock()
        self._calls, self._waiting = {}, set()
        self._closing, self._closed_event, self._closer = False, None, None
        self._enqueues, self._blocking, self._close_deferred = 0, None, False
        # the parent's with blocks are not this process's: its own count from nothing, and the exit of
        # one it was forked inside (its only thread's) is its last
        self._users = 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a ``spawn`` pool's initializer, a copy) as its queue: the copy starts a loop of its own.

        Its backend travels as its configuration (an in-memory one refuses,
        as ``SQLiteBackend`` does); nothing of this process's thread or loop goes along.
        """
        return (_sync_queue_of, (self._queue,))

    def __copy__(self) -> SyncTaskQueue:
        """A copy with a queue (and loop) of its own over the same backend: closing it leaves this one's waits be."""
        return _sync_queue_of(copy.copy(self._queue), owns_backend=False)

    @property
    def backend(self) -> Backend:
        """The store the queue writes to: hand it to a ``Worker`` to run what is enqueued here."""
        return self._queue.backend

    @property
    def queue(self) -> TaskQueue:
        """The async queue underneath (for ``with_options`` and friends)."""
        return self._queue

    # ---------------------------------------------------------------- plumbing

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = _Latch()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()  # stopped by close(), or by _close_dropped: its selector's files go too

                thread = threading.Thread(target=run, name="sitq-sync-loop", daemon=True)
                try:
                    thread.start()
                except BaseException:
                    # a signal handler raised inside start(), which may have started the thread all the same:
                    # a loop stopped before it runs stops after one pass (and its thread closes it); the next
                    # call makes a loop of its own instead of waiting on one that may never run
                    loop.call_soon_threadsafe(loop.stop)
                    raise
                # known before the wait: a signal handler raising in it leaves the loop in use, not orphaned
                self._loop, self._thread = loop, thread
                finalizer = weakref.finalize(
                    self, _close_dropped, loop, self._queue, self._owns_backend, self._unpickled
                )
                finalizer.atexit = False  # a queue that lives as long as the program is not a leak
                self._finalizer = finalizer
                ready.wait()
            return self._loop

    def _run(
        self,
        operation: str,
        make: Callable[[], Coroutine[Any, Any, T]],
        task_id: str | None = None,
        *,
        closing: bool = False,
        waits: bool = False,
        closes: int | None = None,
    ) -> T:
        """Run a call on the private loop; ``closes``: this thread's close count when the public call began.

        An exception raised on this thread while it waits (a signal handler's:
        a request deadline) reaches the caller as it is, and the call goes on
        on the loop: a write is not cut off half-way (see ``_close_on_loop``).
        """
        if closes is None:
            closes = self._closes_here()
        _refuse_running_loop(operation)
        call: _Call[T] = _Call()
        try:
            with self._lock:  # close() sweeps _waiting under the same lock: no call slips between the two
                if self._closing and not closing:
                    raise _closed(operation, task_id, here=self._closer == threading.get_ident())
                if self._closes_here() != closes and not closing:
                    # a signal handler closed the queue in the middle of this call: do not open it again
                    raise _closed(operation, task_id, here=True)
                loop = self._ensure_loop()
                self._waiting.add(call)
                loop.call_soon_threadsafe(self._start_call, call, make, closing, waits)
            call.wait()
        finally:
            with self._lock:
                self._waiting.discard(call)
        if call.cancelled:  # a close() ended the call: on this thread, or another
            raise _closed(operation, task_id, here=self._closes_here() != closes)
        with self._errors(operation, task_id):
            return call.result()

    def _start_call(
        self, call: _Call[T], make: Callable[[], Coroutine[Any, Any, T]], closing: bool, waits: bool
    ) -> None:
        """On the loop: run ``make()`` as a task whose outcome settles ``call``."""
        if call.settled:  # a close() ended it before it started
            return
        task = asyncio.get_running_loop().create_task(self._tracked(make, closing=closing, waits=waits))
        task.add_done_callback(call.settle_from)

    async def _tracked(self, make: Callable[[], Coroutine[Any, Any, T]], *, closing: bool, waits: bool) -> T:
        """Run one call on the private loop, known to ``close()``; ``waits``: it may wait without end."""
        if self._closing and not closing:  # it reached the loop after close() began: it must not reopen
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        self._calls[task] = waits
        try:
            return await make()
        finally:
            del self._calls[task]

    async def _close_on_loop(self) -> None:
        """End the waits of other threads (a ``get_result`` could hang), let their writes finish, then close.

        A write is never cut off: it may already be committed, and its caller
        must get its real outcome, not an error that invites a duplicate.
        """
        current = asyncio.current_task()
        others = {task: waits for task, waits in self._calls.items() if task is not current}
        for task, waits in others.items():
            if waits:
                task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._queue.close()

    def _end_leftovers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel what still runs on the private loop and let it unwind (for a bounded time) before it stops.

        Stopped under them, a close still running on it (asyncpg closing its
        pool) was destroyed pending and failed later on the closed loop, with
        tracebacks printed at exit.
        """

        async def end_all() -> None:
            current = asyncio.current_task()
            running = [task for task in asyncio.all_tasks() if task is not current]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=_UNWIND_SECONDS)

        call: _Call[None] = _Call()
        try:
            loop.call_soon_threadsafe(self._start_call, call, end_all, True, False)
            # a timed wait: one more signal handler raising here could leave its latch held, but no other waits on it
            ended = call.wait(timeout=_UNWIND_SECONDS + 1)
        except RuntimeError:  # the loop has stopped already
            ended = False
        if not ended or call.cancelled or call.error is not None:  # the tasks would not end: stop it anyway
            log.debug("sitq: ending what ran on a SyncTaskQueue's loop as it closed failed", exc_info=call.error)

    def _enqueue(self, operation: str, build: Callable[[], Task], producer: TaskQueue | TaskQueueView) -> str:
        """Build the task here, then store it on this thread when the backend offers a cheap way.

        A caller alone takes the blocking path (``Backend.enqueue_blocking``), sparing
        it two thread hops; callers that overlap others go through the loop, where
        enqueues arriving together share a commit instead of queueing for the lock.
        """
        closes = self._closes_here()
        _refuse_running_loop(operation)
        with self._errors(operation, None):
            task = build()
        # connect first, then stamp again: a backend may learn its clock as it connects (queue.py)
        if backend_not_ready(producer._backend) and self._run(operation, producer._connect_first, closes=closes):
            with self._errors(operation, None):
                task = build()
        counted = False
        try:
            with self._lock:
                alone = self._enqueues == 0
                self._enqueues += 1
                counted = True  # no call between the two: a signal handler raising here cannot part them
            if alone and self._loop is not None and not self._closing:
                self._blocking = threading.get_ident()
                try:
                    with self._errors(operation, None):
                        task_id = producer._store_blocking(task)
                finally:
                    self._blocking = None
                if task_id is not None:
                    return task_id
            return self._run(operation, lambda: producer._store_one(task), closes=closes)
        finally:
            with self._lock:
                if counted:
                    self._enqueues -= 1
                deferred, self._close_deferred = self._close_deferred, False
            if deferred:
                self._close_after_interrupted_store()

    def _close_after_interrupted_store(self) -> None:
        """The ``close()`` a signal handler asked for in the middle of a blocking store, now that it has ended."""
        try:
            self.close()
        except Exception:  # the handler's close() has returned: there is no caller left to raise this to
            log.exception("sitq: closing the SyncTaskQueue, as a signal handler asked during an enqueue, failed")

    def _closes_here(self) -> int:
        return int(getattr(self._here, "closes", 0))

    @contextlib.contextmanager
    def _errors(self, operation: str, task_id: str | None) -> Iterator[None]:
        """Let bad input and task failures through; wrap the machinery's errors in SyncTaskQueueError.

        An exception a signal handler raised on this thread (while a task was
        built or stored here) is the caller's own: it goes through as it is,
        also when a serializer or the backend wrapped it on its way out.
        """
        try:
            yield
        except TaskExecutionError:
            raise
        except Exception as exc:
            if (own := _from_signal_handler(exc)) is not None:
                _reraise(own)
            if isinstance(exc, SitqError):
                bad_input = isinstance(exc, ValidationError) or (
                    isinstance(exc, SerializationError) and operation.startswith("enqueue")
                )
                if bad_input:
                    raise
                message = exc.message
            else:
                message = describe_exception(exc)
            raise SyncTaskQueueError(
                f"{operation} failed: {message}", task_id=task_id, operation=operation, cause=exc
            ) from exc

    # ---------------------------------------------------------------- lifecycle

    def connect(self) -> None:
        """Connect the backend now instead of on first use (``with`` does this), so a bad store fails here."""
        self._run("connect", self._queue.connect)

    def close(self) -> None:
        """Close the backend and stop the private loop thread (a second caller waits for the first).

        It closes now, whoever is still inside a ``with`` block (their waits end).
        """
        self._close()

    def _close(self, *, leaving: bool = False) -> None:
        """``close()``; ``leaving``: the end of a ``with`` block, which closes only when it was the last open one.

        The count and the start of the close are one step under the lock: a
        ``with`` entered meanwhile either keeps the queue open or finds the
        close under way and waits for it (``__enter__``).
        """
        _refuse_running_loop("close")
        with self._lock:
            if leaving:
                self._users = max(self._users - 1, 0)  # 0 already: a forked child leaving the block it inherited
                if self._users:
                    return
            if self._blocking == threading.get_ident():
                # a signal handler interrupted this thread's own enqueue while it stores the task on this
                # thread: the store holds this thread's connection, which closing the backend waits for;
                # the close runs as that enqueue returns, its task stored (or its error raised) first
                self._close_deferred = True
                return
            closed = self._closed_event
            if closed is not None:  # a close is under way
                if self._closer == threading.get_ident():
                    return  # called again by the closing thread itself (a signal handler): it is closing
                owner = False
            elif self._loop is None or self._loop.is_closed():
                return
            else:
                owner, closed = True, _Latch()
                self._closed_event, self._closer = closed, threading.get_ident()
                self._closing = True
                self._here.closes = self._closes_here() + 1  # calls this close ends on this thread say so
        if not owner:
            closed.wait()  # another thread is closing: return once it has finished
            return
        finished = False
        try:
            self._run("close", self._close_on_loop, closing=True)
            finished = True
        finally:
            loop, thread = self._loop, self._thread
            assert loop is not None  # checked when this close began
            try:
                if not finished:  # a second Ctrl-C, say, as it closed: do not stop the loop under a running close
                    self._end_leftovers(loop)
            finally:
                self._stop_loop(loop, thread, closed)

    def _stop_loop(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread | None, closed: _Latch) -> None:
        """The end of a close: stop and close the private loop, end the calls left waiting on it.

        A signal handler may raise anywhere in here (a SIGALRM deadline): the
        queue still ends closed, its state reset, so the next call opens it again
        and a ``close()`` waiting on another thread returns.
        """
        try:
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
        finally:
            try:  # the queue's own state first: the fewest steps in which a second signal can cut in
                with self._lock:  # calls that never got to run on the stopped loop: end their wait
                    self._closing = False  # the next call opens the queue again, on a loop of its own
                    self._closed_event, self._closer = None, None
                    if self._loop is loop:
                        self._loop, self._thread = None, None
                    waiting = list(self._waiting)
                closed.set()
                for call in waiting:
                    call.settle(cancelled=True)
            finally:
                # the loop's own thread closes it once it stops (run() above): never a second close at once
                if thread is None:
                    if not loop.is_running():
                        loop.close()
                elif thread.is_alive() and not loop.is_closed():
                    loop.call_soon_threadsafe(loop.stop)  # again: the first may have been cut short

    def __enter__(self) -> Self:
        """Connect, counted as one more user: threads sharing the queue each use ``with``; the last out closes it."""
        _refuse_running_loop("__enter__")
        counted = False
        try:
            with self._lock:
                self._users += 1
                counted = True  # no call between the two: a signal handler raising here cannot part them
            self._await_close()
            self.connect()
        except BaseException:
            # no __exit__ follows a failed __enter__: count out again, and when no other with block is
            # open stop the loop thread now (and do not warn later); the connect error is the one to
            # raise, not a failure of this clean-up
            if counted:
                with contextlib.suppress(Exception):
                    self._close(leaving=True)
            raise
        return self

    def _await_close(self) -> None:
        """Wait for a close under way on another thread (the last ``with`` block ending): ``connect`` opens again."""
        while True:
            with self._lock:
                closed = self._closed_event
                if closed is None or self._closer == threading.get_ident():
                    return
            closed.wait()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(leaving=True)

    # ------------------------------------------------------------- operations

    def enqueue(self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any) -> str:
        """Store a call and return its task id (see ``TaskQueue.enqueue``)."""
        return self._enqueue("enqueue", lambda: self._queue._call_task(func, args, kwargs, eta), self._queue)

    def enqueue_many(self, calls: Iterable[Any]) -> list[str]:
        """Store many calls in one transaction (see ``TaskQueue.enqueue_many``)."""
        items = list(calls) if isinstance(calls, Iterable) and not isinstance(calls, (str, bytes)) else calls
        return self._run("enqueue_many", lambda: self._queue.enqueue_many(items))

    def enqueue_call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Store ``func(*args, **kwargs)`` with the arguments as a tuple and a dict (see ``TaskQueue.enqueue_call``)."""
        return self._enqueue("enqueue_call", lambda: self._queue._call_task_of(func, args, kwargs), self._queue)

    def with_options(self, **options: Unpack[TaskOptionArgs]) -> SyncTaskQueueView:
        """A view whose enqueues apply these per-task options (see ``TaskQueue.with_options``)."""
        return SyncTaskQueueView(self, self._queue.with_options(**options))

    def get_result(self, task_id: str, timeout: Seconds | None = None) -> Any:
        """The task's return value; None when ``timeout`` passes first.

        A failed task raises :class:`TaskExecutionError` with the task's error
        (``.traceback`` holds the task's traceback); a cancelled one raises
        :class:`TaskCancelledError`.
        """
        result = self._run("get_result", lambda: self._queue.get_result(task_id, timeout), task_id, waits=True)
        if result is None:
            return None
        return self._value_of(result)

    def get_result_record(self, task_id: str, timeout: Seconds | None = None) -> Result | None:
        """The full :class:`Result` record (status, times, attempts) instead of the value."""
        return self._run("get_result_record", lambda: self._queue.get_result(task_id, timeout), task_id, waits=True)

    def _value_of(self, result: Result) -> Any:
        if result.status == "success":
            try:
                return self._queue.deserialize_result(result)
            except SitqError as exc:
                if (own := _from_signal_handler(exc)) is not None:
                    _reraise(own)
                # the queue's message names the task already ("cannot read the result of task ...")
                named = result.task_id in exc.message
                raise SyncTaskQueueError(
                    exc.message if named else f"cannot read the result of task {result.task_id}: {exc.message}",
                    task_id=result.task_id,
                    operation="get_result",
                    cause=exc,
                ) from exc
        error_class = TaskCancelledError if result.status == "cancelled" else TaskExecutionError
        task = None
        with contextlib.suppress(SitqError):  # only for the error's details: never hide the task's own failure
            task = self._run("get_task", lambda: self._queue.get_task(result.task_id), result.task_id)
        execution_time = None
        if result.started_at is not None and result.finished_at is not None:
            execution_time = max((result.finished_at - result.started_at).total_seconds(), 0.0)
        error = error_class(
            result.error or result.status,
            task_id=result.task_id,
            function_name=task.function_name if task is not None else None,
            execution_time=execution_time,
        )
        error.traceback = result.traceback
        raise error

    def get_task(self, task_id: str) -> Task | None:
        """The stored task (status, attempts, times, last error); None for an unknown id."""
        return self._run("get_task", lambda: self._queue.get_task(task_id), task_id)

    def cancel(self, task_id: str) -> bool:
        """Cancel a queued task (at once) or a running one (its worker is told); False when final or unknown."""
        return self._run("cancel", lambda: self._queue.cancel(task_id), task_id)

    def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        """Run a failed or cancelled task again (at ``eta``, or now); False for any other task."""
        return self._run("requeue", lambda: self._queue.requeue(task_id, eta=eta), task_id)

    def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        """Run failed or cancelled tasks again in one call to the store (see ``TaskQueue.requeue_many``)."""
        return self._run("requeue_many", lambda: self._queue.requeue_many(task_ids, eta=eta))

    def counts(self, *, queue: str | None = None) -> dict[str, int]:
        """Number of tasks per status (of one queue name when given): an admin read, not for a hot path."""
        return self._run("counts", lambda: self._queue.counts(queue=queue))

    def list_tasks(
        self,
        *,
        status: TaskStatus | TaskStatusName | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks filtered by status and queue name, oldest first: an admin read, paged by limit and offset."""
        return self._run(
            "list_tasks", lambda: self._queue.list_tasks(status=status, queue=queue, limit=limit, offset=offset)
        )

    def purge(self, *, older_than: datetime | timedelta | None = None) -> int:
        """Delete finished tasks and their results (finished before ``older_than`` when given); the number deleted."""
        return self._run("purge", lambda: self._queue.purge(older_than=older_than))

    def deserialize_result(self, result: Result) -> Any:
        """The Python value of a ``get_result_record`` result (None when it has none); bad bytes: SerializationError."""
        return self._queue.deserialize_result(result)


class SyncTaskQueueView:
    """Blocking enqueues with fixed per-task options; made by ``SyncTaskQueue.with_options``."""

    def __init__(self, owner: SyncTaskQueue, view: TaskQueueView) -> None:
        self._owner = owner
        self._view = view

    @property
    def options(self) -> TaskOptions:
        """The per-task options this view applies to each task it enqueues."""
        return self._view.options

    def enqueue(self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any) -> str:
        """Store a call with this view's options and return its task id (see ``TaskQueue.enqueue``)."""
        return self._owner._enqueue("enqueue", lambda: self._view._call_task(func, args, kwargs, eta), self._view)

    def enqueue_call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Store ``func(*args, **kwargs)`` with this view's options (see ``TaskQueue.enqueue_call``)."""
        return self._owner._enqueue("enqueue_call", lambda: self._view._call_task_of(func, args, kwargs), self._view)

    def enqueue_many(self, calls: Iterable[Any]) -> list[str]:
        """Store many calls with this view's options in one transaction (see ``TaskQueue.enqueue_many``)."""
        items = list(calls) if isinstance(calls, Iterable) and not isinstance(calls, (str, bytes)) else calls
        return self._owner._run("enqueue_many", lambda: self._view.enqueue_many(items))

    def with_options(self, **options: Unpack[TaskOptionArgs]) -> SyncTaskQueueView:
        """A further view with more options changed; ``None`` leaves an option as it is."""
        return SyncTaskQueueView(self._owner, self._view.with_options(**options))


def _close_dropped(loop: asyncio.AbstractEventLoop, queue: TaskQueue, owns_backend: bool, quiet: bool = False) -> None:
    """A ``SyncTaskQueue`` was garbage-collected unclosed: end its loop thread, and close a backend it made.

    Without this, each queue made per request and never closed kept two
    threads and several file descriptors for good. Nothing waits here (this
    may run inside the garbage collector on any thread); a backend object
    passed in by the caller may be shared, so it is left open.
    """
    warn_dropped("SyncTaskQueue", "`with SyncTaskQueue(...) as queue:`", quiet=quiet)

    def stop(_done: object = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop.call_soon_threadsafe(loop.stop)

    # a backend passed in stays open, but this queue no longer keeps it so, unless its close was asked for
    if not owns_backend and not queue._let_go() and holders.close_wanted(queue.backend):
        threading.Thread(target=_abandon, args=(queue.backend,), name="sitq-abandon", daemon=True).start()
    if loop.is_closed():
        return
    if not owns_backend:
        stop()
        return
    try:
        asyncio.run_coroutine_threadsafe(queue.close(), loop).add_done_callback(stop)
    except RuntimeError:  # the loop is closed already
        return


def _sync_queue_of(queue: TaskQueue, owns_backend: bool = True) -> SyncTaskQueue:
    """A ``SyncTaskQueue`` around an unpickled ``TaskQueue`` (see ``SyncTaskQueue.__reduce__``), or a copy's."""
    sync = SyncTaskQueue.__new__(SyncTaskQueue)
    sync._start(queue, owns_backend=owns_backend, unpickled=owns_backend)
    return sync
