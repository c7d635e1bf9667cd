"""One thread owning one ``sqlite3`` connection; whole transactions run there in one hop.

Each call ships a function to the thread and awaits its result: one
thread hop per transaction or batch, never per statement. The future
belongs to the *caller's* event loop and is resolved with
``call_soon_threadsafe``, so one backend object can be used from several
event loops (threads) at once. The thread is a daemon: a program that
forgets to close its backend still exits (committed data is safe in the WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from sitq_core import forks
from sitq_core.forks import gate

__all__ = ["ConnectionClosedForFork", "DbThread", "DbThreadStopped", "closing_here"]

T = TypeVar("T")

log = logging.getLogger("sitq.sqlite")
_END_WAIT = 1.0  # seconds a close waits for the connection thread to end once it has closed its connection

_here = threading.local()  # .thread: the DbThread whose thread this is (set on its own thread)

_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class ConnectionClosedForFork(Exception):
    """Raised by a job that let a fork through (``gate.stepped_out``) and found its connection closed by it.

    The job had rolled back (it waited for a lock): the thread runs it again
    on a new connection.
    """


class DbThreadStopped(RuntimeError):
    """The thread was stopped (its backend closed) before this job could be queued: connect again."""


class DbThread:
    """A daemon thread that opens a connection with ``opener`` and runs jobs on it in order."""

    def __init__(self, name: str, opener: Callable[[], sqlite3.Connection], *, in_memory: bool = False) -> None:
        self._opener = opener
        self._in_memory = in_memory  # its connection is the database: never closed for a fork
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._closed_callbacks: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stopping = threading.Lock()  # a job is queued before the stop mark or refused, never after it
        self._stopped = False
        self._closing = False  # close() has begun: a job waiting for a lock gives up (see closing_here)
        self._fork_lock = threading.Lock()  # two threads forking at once must not both close the connection
        # every live thread, not only its backend's current one: one still opening, or closing after its
        # backend let go of it, holds a connection too, and none may be open across a fork (forks.py);
        # registered before the thread starts
        forks.forget_in_child(self)
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Schedule ``fn(connection)`` on the thread; await the returned future for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._stopping:
            if self._stopped:  # queued behind the stop mark, it would never run and never be answered
                raise DbThreadStopped("the SQLite connection thread was stopped")
            self._jobs.put((fn, loop, future))
        return future

    def stop(self) -> None:
        """Close the connection after the jobs already queued, and end the thread."""
        with self._stopping:
            if not self._stopped:
                self._stopped = True
                self._jobs.put(None)

    def stop_waiting(self) -> None:
        """From now on a job waiting for another connection's lock gives up (``closing_here``), its queued
        followers too: a close must not wait out ``busy_timeout`` (a minute, configured so) behind them.
        Jobs that find the lock free still run."""
        self._closing = True

    async def shutdown(self) -> None:
        """``stop()``, returning once the connection is closed (its file handles with it) and the thread ended.

        The thread ends right after it says the connection is closed; waiting
        for that too means a queue closed before ``os.fork`` leaves no thread
        for CPython 3.12+ to warn about ("This process ... is multi-threaded").
        """
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        self._closed_callbacks.append((loop, closed))
        self.stop()
        await closed
        if threading.current_thread() is not self._thread:
            self._thread.join(_END_WAIT)  # at most the few steps after its last _deliver: no wait on the loop

    def close_for_fork(self) -> None:
        """Close the connection from the forking thread; the next job opens a new one.

        Only while ``forks.gate`` is quiet: then no job is inside the
        connection, and the thread reads ``_conn`` only inside the gate.
        """
        with self._fork_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _before_fork(self) -> list[Any]:
        if gate.quiet and not self._in_memory:
            try:
                self.close_for_fork()
            except sqlite3.Error:  # pragma: no cover - closing an idle connection does not fail
                log.warning("closing a connection before a fork failed", exc_info=True)
        return [self._conn]  # an in-memory database (or one a busy fork could not close): never closed in a child

    def _after_fork_in_child(self) -> None:
        """The child never uses this thread (it does not exist there) nor closes its connection."""
        forks.inherited_in_child(self)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _main(self) -> None:
        _here.thread = self
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, loop, future = job
            result: Any = None
            gate.enter()  # no fork in the middle of a transaction (forks.py)
            try:
                while True:
                    if self._conn is None:
                        self._conn = self._opener()
                    try:
                        result = fn(self._conn)
                        break
                    except ConnectionClosedForFork:
                        continue  # a fork closed the connection while the job waited: again, on a new one
            except BaseException as exc:  # delivered to the awaiting coroutine
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)
            finally:
                gate.leave()
            del job, fn, loop, future, result  # an idle thread kept the last rows it read (a large result) alive
        with gate.inside():  # checked inside: a fork may have closed it already
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    conn.close()
            except sqlite3.Error:  # pragma: no cover - closing never fails in practice
                log.exception("closing the SQLite connection failed")
        for loop, closed in self._closed_callbacks:
            _deliver(loop, closed, None, None)


def closing_here() -> bool:
    """True on a connection thread whose close has begun (``DbThread.stop_waiting``): stop retrying a busy lock."""
    thread: DbThread | None = getattr(_here, "thread", None)
    return thread is not None and thread._closing


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    # RuntimeError: the caller's loop is closed, so nobody waits for this any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the transaction already ran
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
