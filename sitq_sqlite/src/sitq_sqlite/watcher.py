"""Cross-process change detection with ``PRAGMA data_version`` and in-process wake-ups.

``PRAGMA data_version`` returns a number that changes whenever *another*
connection commits to the database. The watcher thread reads it on its own
connection, only while somebody waits, and wakes the waiters when it
changed (``on_change`` gets the watcher's connection, so the owner can read
what changed, see ``newresults.py``); the waiters then run their real query
once. Reading it costs a few microseconds and touches no table.

When it reads it: every few milliseconds for a while after any activity; when
all is quiet and the platform reports file writes (Linux inotify, see
``fsevents.py``), the thread sleeps until the database or its WAL is written
and then polls again, so an idle worker costs almost no CPU. Without file
events it keeps ticking (every 2 ms, 4 ms after half a second of quiet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sitq_core import forks
from sitq_core.forks import gate

from .fsevents import FileChanges, open_changes

__all__ = ["Wakeups", "Watcher"]

log = logging.getLogger("sitq.sqlite")

WORK_KEY = ("sitq", "work")


def _result_key(task_id: str) -> tuple[str, str, str]:
    """The wake-up key of the waiters for ``task_id``'s result."""
    return ("sitq", "result", task_id)


_Entry = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Wakeups:
    """Waiters that register *before* checking, so no wake-up falls between check and wait.

    Works across event loops and threads. ``work_seq`` counts possible-new-work
    events, so ``wait_for_work`` can tell that something happened since the
    last ``reserve`` began.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, list[_Entry]] = {}
        self.work_seq = 0

    def register(self, key: Hashable) -> _Entry:
        loop = asyncio.get_running_loop()
        entry: _Entry = (loop, loop.create_future())
        with self._lock:
            self._waiters.setdefault(key, []).append(entry)
        return entry

    def unregister(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is None:
                return
            with contextlib.suppress(ValueError):
                waiters.remove(entry)
            if not waiters:
                del self._waiters[key]

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def waits_beyond(self, key: Hashable) -> bool:
        """True when somebody waits for a key other than ``key``."""
        with self._lock:
            return any(other != key for other in self._waiters)

    def wake(self, keys: Iterable[Hashable]) -> None:
        woken: list[_Entry] = []
        with self._lock:
            for key in keys:
                if key == WORK_KEY:
                    self.work_seq += 1
                woken.extend(self._waiters.get(key, ()))
        _resolve_all(woken)

    def wake_work(self) -> None:
        """``wake([WORK_KEY])`` without the generic loop (called after every enqueue)."""
        with self._lock:
            self.work_seq += 1
            waiters = self._waiters.get(WORK_KEY)
            woken = list(waiters) if waiters else None
        if woken:
            _resolve_all(woken)

    def wake_all(self) -> None:
        with self._lock:
            self.work_seq += 1
            woken = [entry for entries in self._waiters.values() for entry in entries]
        _resolve_all(woken)

    @staticmethod
    async def wait(entry: _Entry, timeout: float | None) -> bool:
        """Wait for ``entry`` to be woken; False when ``timeout`` seconds pass first."""
        future = entry[1]
        if future.done():
            return True
        done, _ = await asyncio.wait({future}, timeout=timeout)
        return bool(done)


def _resolve_all(entries: list[_Entry]) -> None:
    for loop, future in entries:
        with contextlib.suppress(RuntimeError):  # that loop is closed
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_QUIET_AFTER = 0.5  # seconds without a change before ticking slower
_QUIET_INTERVAL = 0.004  # the slower tick
# With file events (fsevents.py): keep polling this long after the last write or change, since a
# write event comes before its commit is visible; then block on events, waking at least every
# _SAFETY_TICK in case an event was missed.
_EVENT_WINDOW = 0.25
_SAFETY_TICK = 0.1
_FILE_CHECK_INTERVAL = 1.0  # seconds between checks that the database file is still the one opened
_reported_gone: set[str] = set()  # paths whose deletion or replacement was logged (once per process)


def file_opened_again(path: str) -> None:
    """A backend connected to the file now at ``path``: a later deletion of that one is logged again."""
    _reported_gone.discard(path)


def report_file_gone(path: str) -> None:
    """Log, once per path and process, that the database file was deleted or replaced under this process.

    Both the change watcher and the backend's write check find it; one ERROR says all of it.
    """
    if path in _reported_gone:
        return
    _reported_gone.add(path)
    log.error(
        "%s was deleted or replaced while this process had it open: this process still has the old file, which "
        "other processes no longer see, and its writes are refused from now on (restart this process, or close "
        "the backend and connect again)",
        path,
    )


_reported_open_failures: set[str] = set()  # paths the watcher could not open, logged (once per process)
# After a write event ends a quiet spell, tick this fast for this long (idle pickup latency).
_FIRST_COMMIT_TICK = 0.0003
_FIRST_COMMIT_WINDOW = 0.015


class Watcher:
    """A daemon thread polling ``PRAGMA data_version`` while anybody waits.

    It exits after ``idle_grace`` seconds without waiters; ``should_exit`` is
    evaluated under the owner's lock so a new waiter either keeps this thread
    alive or starts a new one.
    """

    def __init__(
        self,
        path: str,
        interval: float,
        on_change: Callable[[sqlite3.Connection], None],
        should_exit: Callable[[Watcher], bool],
        idle_grace: float = 2.0,
    ) -> None:
        self._path = path
        self._interval = interval
        self._on_change = on_change
        self._should_exit = should_exit
        self._idle_grace = idle_grace
        self._identity: tuple[int, int] | None = None  # the database file opened (see _check_file)
        # its own connection, opened by the thread; kept on the object: a fork closes it first, a forked
        # child must not close it (forks.py)
        self.conn: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._changes: FileChanges | None = None
        self._fork_lock = threading.Lock()  # two threads forking at once must not both close the connection
        # registered before its thread can open a connection (also once its backend let go of it)
        forks.forget_in_child(self)
        self._thread = threading.Thread(target=self._main, name="sitq-sqlite-watch", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the thread ended (it stopped, went idle, or could not open the file)."""
        return self._thread.is_alive()

    def stop(self, *, wait: bool = True) -> None:
        """End the thread (waiting up to a second for it, when ``wait``)."""
        self._stop.set()
        changes = self._changes
        if changes is not None:
            changes.interrupt()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(1.0)

    def _main(self) -> None:
        try:
            with gate.inside():
                self.conn = self._connect()
            self._identity = _known_identity(self._path)
        except sqlite3.Error:
            # said once per file: a new watcher tries again at the next wait, which must not flood the log
            if self._path in _reported_open_failures:
                log.debug("the change watcher still cannot open %s", self._path, exc_info=True)
            else:
                _reported_open_failures.add(self._path)
                log.exception("the change watcher could not open %s", self._path)
            return
        changes = self._changes = open_changes(self._path)
        if self._stop.is_set() and changes is not None:
            changes.interrupt()  # stop() ran before _changes was set
        try:
            self._loop(changes)
        finally:
            with gate.inside():
                conn, self.conn = self.conn, None
                if conn is not None:
                    conn.close()
            if changes is not None:
                changes.close()

    def _check_file(self) -> None:
        """Log (once) that the database file was deleted or replaced under this process: it would go on unseen."""
        if self._identity is None or self._path in _reported_gone:
            return
        try:
            if _file_identity(self._path) == self._identity:
                return
        except OSError as exc:  # not known either way (a failing NFS stat): looked at again at the next change
            log.debug("the change watcher cannot tell whether %s is still the file opened: %s", self._path, exc)
            return
        report_file_gone(self._path)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)

    def close_for_fork(self) -> None:
        """Close the connection from the forking thread (``forks.gate`` is quiet); the loop opens a new one."""
        with self._fork_lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def _before_fork(self) -> list[Any]:
        if gate.quiet:
            try:
                self.close_for_fork()
            except sqlite3.Error:  # pragma: no cover - closing an idle connection does not fail
                log.warning("closing a connection before a fork failed", exc_info=True)
        return [self.conn]

    def _after_fork_in_child(self) -> None:
        """The child never uses this thread (it does not exist there) nor closes its connection."""
        forks.inherited_in_child(self)

    def _loop(self, changes: FileChanges | None) -> None:
        last: int | None = None
        last_activity = time.monotonic()  # the last change seen, or the last write event
        checked_exit = checked_file = last_activity
        woke_by_event = 0.0  # when a file event last ended a blocking wait
        while True:
            quiet = time.monotonic() - last_activity
            if changes is not None and quiet >= _EVENT_WINDOW:
                # Nothing happened lately: block until a write (or the safety tick).
                if changes.wait(_SAFETY_TICK):
                    last_activity = woke_by_event = time.monotonic()
            else:
                # Tick fast right after activity, slower when quiet (half the idle CPU, pickup still ~3 ms).
                interval = self._interval if quiet < _QUIET_AFTER else max(self._interval, _QUIET_INTERVAL)
                if time.monotonic() - woke_by_event < _FIRST_COMMIT_WINDOW:
                    # The first write after a quiet spell: its commit becomes visible within an fsync or so.
                    interval = min(interval, _FIRST_COMMIT_TICK)
                # A plain sleep costs about half the CPU of Event.wait(timeout) per tick.
                time.sleep(interval)
                if changes is not None and changes.drain():
                    last_activity = time.monotonic()
            if self._stop.is_set():
                return
            now = time.monotonic()
            if now - checked_exit >= self._idle_grace:
                if self._should_exit(self):
                    return
                checked_exit = now
            if now - checked_file >= _FILE_CHECK_INTERVAL:
                self._check_file()
                checked_file = now
            with gate.inside():  # no fork in the middle of a read (forks.py)
                try:
                    conn = self.conn
                    if conn is None:  # closed for a fork: a new connection counts versions of its own
                        conn = self.conn = self._connect()
                        last = None
                    version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                except sqlite3.Error as exc:  # e.g. busy during recovery: try again next tick
                    log.debug("data_version check failed: %s", exc)
                    continue
                if version != last:
                    # The first reading also wakes: changes made before this thread
                    # started must not be missed by the waiter that started it.
                    last = version
                    last_activity = time.monotonic()
                    self._on_change(conn)


def _file_identity(path: str) -> tuple[int, int] | None:
    """The file's (device, inode), or None when it is not there (ENOENT, or a folder on the path is not one).

    Any other error of ``stat`` (EACCES, ESTALE or EIO on a network file
    system) is raised: it says nothing about whether the file is the one
    opened, so a caller must not take it for a deleted file.
    """
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


def _known_identity(path: str) -> tuple[int, int] | None:
    """``_file_identity``, or None (no later comparison) when ``stat`` fails for another reason than a gone file."""
    try:
        return _file_identity(path)
    except OSError as exc:
        log.debug("cannot stat %s (%s): whether it is deleted or replaced later will not be known", path, exc)
        return None
