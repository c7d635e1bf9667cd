"""Waiting out another connection's lock: how much of ``busy_timeout`` a job has left, and how it gives up.

Every job's SQLITE_BUSY is retried with short random pauses (see
``SQLiteBackend._retrying``). ``_BusyBudget`` counts the time spent so;
``_Busy`` and ``_Closing`` are the two ways a job stops waiting (the lock
outlasted ``busy_timeout``; the backend was closed meanwhile), which the
backend turns into a ``BackendError`` saying so.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from sitq_core.errors import BackendError, SitqError, StoreFullError

from .hints import _low_disk_free

log = logging.getLogger("sitq.sqlite")


_OWN_BUSY_WAIT = 0.25  # seconds of busy retries every job gets, however long it waited in the thread's queue
# seconds of one busy-retry step (an attempt and its pause: milliseconds) counted at most against busy_timeout;
# a longer one is this process stopped or starved (SIGSTOP, a paused VM), not another connection's lock
_LONGEST_BUSY_STEP = 1.0


class _Busy(Exception):
    """SQLITE_BUSY lasted longer than ``busy_timeout``."""


class _Closing(Exception):
    """The backend was closed while the job waited for another connection's lock: given up, rolled back."""


class _BusyBudget:
    """How much of ``busy_timeout`` a job has left for waiting out a busy lock.

    Counted from ``since`` (when the caller asked), with a short wait of its
    own for every job (``_OWN_BUSY_WAIT``): one queued behind slow work of this
    process (a big batch, a purge) would otherwise fail at its first conflict.
    Each step between two looks (an attempt and its pause, normally a few
    milliseconds) counts at most ``_LONGEST_BUSY_STEP``: a process stopped in
    the middle of a call (SIGSTOP, a paused VM, a starved machine) failed the
    first ordinary busy after it resumed, blaming a lock no other connection
    held for that long. A job that keeps meeting a busy lock still gives up:
    every step counts, if only up to that much.
    """

    __slots__ = ("_clock", "_last", "_left")

    def __init__(self, busy_timeout: float, since: float | None, clock: Callable[[], float]) -> None:
        now = clock()
        self._clock = clock
        self._last = now
        self._left = busy_timeout
        if since is not None:
            self._left = max(since + busy_timeout - now, min(busy_timeout, _OWN_BUSY_WAIT))

    def used_up(self) -> bool:
        """Count the time since the last look (a stall only up to one step's worth); True when none is left."""
        now = self._clock()
        step, self._last = now - self._last, now
        if step > _LONGEST_BUSY_STEP:
            log.debug(
                "one busy-retry step took %.1f s (this process was stopped or starved); counted as %.1f s of "
                "busy_timeout",
                step,
                _LONGEST_BUSY_STEP,
            )
            step = _LONGEST_BUSY_STEP
        self._left -= step
        return self._left <= 0


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.total_changes  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return True
    return False


def _store_failure(exc: Exception) -> bool:
    """True when an enqueue failed for the store's sake (locked, I/O), not for one of its tasks."""
    cause = exc.cause if isinstance(exc, BackendError) else exc
    return isinstance(cause, _Busy | _Closing | sqlite3.OperationalError)


def _marked_full(error: SitqError, exc: sqlite3.Error, path: str, *, memory: bool) -> SitqError:
    """``error`` as a ``StoreFullError`` when SQLite failed for want of room, else ``error`` as it is.

    Want of room: ``SQLITE_FULL`` ("database or disk is full"), or a bare
    "disk I/O error" while the disk holding ``path`` is nearly full (SQLite
    reports some full-disk writes so, growing the -shm file). An I/O error
    with room left is not: a failing disk, or a process's file size limit
    (``RLIMIT_FSIZE``, whose EFBIG SQLite reports as the same "disk I/O
    error"), which cannot be told apart. The free space decides, as for the
    hint ``_failed`` gave ``error`` (``_disk_full_hint``), not that hint: it
    names RLIMIT_FSIZE whenever the process has one, room or not. Only a
    plain ``BackendError`` is marked; one ``_failed`` made something else (a
    ``ValidationError``) stays. Its message, hint included, is kept as it is.
    """
    if type(error) is not BackendError:
        return error
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    nearly_full = code == sqlite3.SQLITE_IOERR and not memory and _low_disk_free(path) is not None
    if code != sqlite3.SQLITE_FULL and not nearly_full:
        return error
    return StoreFullError(
        error.message,
        operation=error.context.get("operation"),
        backend_type=error.context.get("backend_type"),
        cause=exc,
    )
