"""Short SQLite calls run right on the caller's thread when that is cheaper than a thread hop.

A hop to the connection thread costs 30-300 µs of wake-ups (the high end on
a VM whose idle cores sleep deeply); a primary-key read costs ~10 µs and a
one-row insert 40-300 µs (mostly the WAL fsync under ``synchronous=FULL``).
So single enqueues and result reads run inline on a per-thread connection,
under three guards:

- writes wait for the file lock at most ``busy_wait`` (1 ms, in sleeps of
  20-100 µs: another process's commit usually ends within that); when the
  lock stays taken longer the call falls back to the connection thread
  (which retries with backoff), so the event loop is never parked on a lock
  for longer than a slow fsync would park it;
- when inline calls are slow on average (a moving average of their
  durations above ``budget``: a slow disk, a long fsync), inline calls are
  switched off for ``cooldown`` seconds, so a slow disk cannot stall the loop
  repeatedly. One outlier (the WAL auto-checkpoint every ~1000 pages takes a
  few milliseconds) does not switch them off: that would send the next second
  of calls through the slower thread hop for nothing;
- in-memory databases never go inline (another connection would be another
  database).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sitq_core import forks
from sitq_core.forks import gate

from .undecodable import read_tolerantly

__all__ = ["Fallback", "InlinePath", "is_busy", "write_transaction"]

T = TypeVar("T")

_SMOOTHING = 0.1  # weight of the newest duration in the moving average

log = logging.getLogger("sitq.sqlite")


class Fallback(Exception):
    """The inline attempt did not run; use the connection thread instead."""


class InlinePath:
    """Per-thread connections for short calls, with the guards described above."""

    def __init__(
        self,
        opener: Callable[[], sqlite3.Connection],
        *,
        budget: float = 0.002,
        cooldown: float = 1.0,
        busy_wait: float = 0.001,
    ):
        self._opener = opener
        self._busy_wait = busy_wait
        self._budget = budget
        self._cooldown = cooldown
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()  # one per thread that has a connection
        self._generation = 0
        self._paused_until = 0.0
        self._average = 0.0  # seconds; moving average of inline call durations
        forks.forget_in_child(self)  # its connections close before every fork (forks.py)

    def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` now on this thread's connection, or raise :class:`Fallback`."""
        if time.monotonic() < self._paused_until:
            raise Fallback
        # no fork in the middle of a transaction (forks.py); while one is pending, the connection thread
        # (awaited, not blocking this thread's event loop) takes the call instead
        if not gate.try_enter():
            raise Fallback
        try:
            slot = self._slot()
            with slot.lock:  # close_all() from another thread waits for the call to end
                if slot.closed:  # close_all() came between taking the slot and locking it
                    raise Fallback
                result, began = self._run_on(slot.conn, fn, write=write)
        finally:
            gate.leave()
        elapsed = time.perf_counter() - began
        self._average += (elapsed - self._average) * _SMOOTHING
        if self._average > self._budget:
            self._paused_until = time.monotonic() + self._cooldown
            log.debug(
                "inline calls take %.1f ms on average; using the connection thread for %.1f s",
                self._average * 1e3,
                self._cooldown,
            )
            self._average = 0.0
        return result

    def _run_on(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], *, write: bool
    ) -> tuple[T, float]:
        """``fn`` on ``conn``, waiting out a busy lock for at most ``busy_wait``; returns it and its start time."""
        began = time.perf_counter()
        text_factory: Any = None  # the connection's own, while it reads with tolerant_text
        try:
            while True:
                try:
                    return (write_transaction(conn, fn) if write else fn(conn)), began
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        conn.rollback()
                    if text_factory is None and (text_factory := read_tolerantly(conn, exc)) is not None:
                        continue  # a TEXT value that is not UTF-8: again, reading such values as Undecodable
                    if not is_busy(exc):
                        raise
                    if time.perf_counter() - began >= self._busy_wait:
                        raise Fallback from exc
                    time.sleep(random.uniform(0.00002, 0.0001))
        finally:
            if text_factory is not None:
                conn.text_factory = text_factory

    def execute(self, sql: str, parameters: Sequence[Any]) -> None:
        """Run one write statement as its own (autocommit) transaction, or raise :class:`Fallback`.

        A single statement is atomic by itself, so this skips the two round
        trips of ``BEGIN IMMEDIATE`` / ``COMMIT``; it cannot deadlock on a lock
        upgrade because it holds no read lock before it writes.
        """
        self.run(lambda conn: conn.execute(sql, parameters), write=False)

    def _slot(self) -> _Slot:
        """This thread's connection, opened on first use (and again after ``close_all``)."""
        local: Any = self._local
        slot: _Slot | None = getattr(local, "slot", None)
        if slot is None or slot.generation != self._generation:
            try:
                conn = self._opener()
            except sqlite3.OperationalError as exc:
                # a rollback-journal file locked by another writer refuses even the setup PRAGMAs
                if is_busy(exc):
                    raise Fallback from exc
                raise
            with self._lock:
                slot = _Slot(conn, self._generation)
                self._slots.add(slot)
            # the thread's locals go when the thread ends: its connection is closed with them
            # not at interpreter exit: a forked child exiting must not close what it inherited (forks.py)
            weakref.finalize(slot, _close_when_no_fork, conn).atexit = False
            local.slot = slot
        return slot

    def close_all(self) -> None:
        """Close every inline connection (threads open new ones on their next call).

        A connection in use by another thread is closed once that call ends:
        closing it under a running statement would crash the process.
        """
        with self._lock:
            slots = list(self._slots)
            self._generation += 1
        for slot in slots:
            with gate.inside(), slot.lock:  # the order run() takes them in
                slot.closed = True
                _close_quietly(slot.conn)

    def _before_fork(self) -> list[Any]:
        """Close every thread's connection when no call is inside; keep them all referenced (see forks.py).

        The slots taken here stay referenced through the fork, so none of them
        can die now; one that died a moment before may have reached the orphans
        after their own hook ran (hooks run in no set order): they are closed
        here too.
        """
        slots: list[Any] = self.slots()
        if gate.quiet:
            self.close_for_fork()
            slots.extend(_orphans.close_waiting())
        return slots

    def _after_fork_in_child(self) -> None:
        """The child never uses or closes these connections: its backend makes a new InlinePath there."""
        forks.inherited_in_child(self)

    def close_for_fork(self) -> None:
        """``close_all`` from the forking thread, while ``forks.gate`` keeps every call out."""
        with self._lock:
            slots = list(self._slots)
            self._generation += 1
        for slot in slots:
            if slot.lock.acquire(blocking=False):  # always free while the gate is quiet
                try:
                    slot.closed = True
                    _close_quietly(slot.conn)
                finally:
                    slot.lock.release()

    def slots(self) -> list[Any]:
        """Every thread's connection slot (kept alive across a fork, see ``forks.py``)."""
        return list(self._slots)

    def connection_count(self) -> int:
        """How many threads hold an inline connection now (threads that ended have given theirs back)."""
        return len(self._slots)


class _Slot:
    """One thread's inline connection, the lock held while it runs a call, and whether it was closed."""

    __slots__ = ("__weakref__", "closed", "conn", "generation", "lock")

    def __init__(self, conn: sqlite3.Connection, generation: int) -> None:
        self.conn = conn
        self.generation = generation
        self.lock = threading.Lock()
        self.closed = False


class _Orphans:
    """Connections of threads that ended while a fork was pending: closed by that fork's hook, never carried.

    A thread's inline connection is closed when the thread ends (its slot's
    finalizer), at any moment and on any thread, even the forking one in the
    middle of its hooks. It must not be closed outside ``forks.gate`` (a fork
    could carry it half-closed), nor wait at the gate (that can be the fork
    itself waiting): when the gate is shut it is left here instead.
    """

    def __init__(self) -> None:
        self.waiting: list[sqlite3.Connection] = []
        forks.forget_in_child(self)

    def _before_fork(self) -> list[Any]:
        if gate.quiet:
            return self.close_waiting()
        waiting, self.waiting = self.waiting, []
        return waiting  # referenced in a child, never closed there

    def close_waiting(self) -> list[sqlite3.Connection]:
        """Close the connections left here (the gate is quiet); returns them, to be kept referenced."""
        waiting, self.waiting = self.waiting, []
        for conn in waiting:
            _close_quietly(conn)
        return waiting

    def _after_fork_in_child(self) -> None:
        self.waiting = []


_orphans = _Orphans()


def _close_when_no_fork(conn: sqlite3.Connection) -> None:
    if gate.try_enter():
        try:
            _close_quietly(conn)
        finally:
            gate.leave()
    else:
        _orphans.waiting.append(conn)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:  # pragma: no cover - closing an idle connection does not fail
        log.debug("closing an inline SQLite connection failed", exc_info=True)


def write_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error).

    IMMEDIATE takes the write lock up front, so a transaction never has to
    upgrade a read lock (the classic unrecoverable "database is locked").
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


def is_busy(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED (another connection holds the lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text
