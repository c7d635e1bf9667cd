"""``SQLiteBackend``: sitq's embedded default store, one SQLite file in WAL mode.

Design (see ``docs/how-to/sqlite-backend.md``):

- Every method runs as ONE function on a dedicated connection thread
  (:class:`~sitq_sqlite.dbthread.DbThread`): one thread hop per transaction or
  batch. Write transactions start with ``BEGIN IMMEDIATE``; SQLITE_BUSY is
  retried with short randomized backoff until ``busy_timeout`` passes.
- Times are INTEGER microseconds since the epoch. The ``due`` column holds the
  eta of a queued task and the lease expiry of a running one, so a single
  partial index ``(queue, priority DESC, due, seq) WHERE status IN
  ('queued','running')`` serves every claim; the claim walks it with index
  seeks per (queue, priority), so its cost does not grow with queue depth.
- Other processes' commits are noticed by a watcher thread reading
  ``PRAGMA data_version`` every few ms while somebody waits.
- The admin reads (``list_tasks``, ``counts``) scan the whole table; on a WAL
  file they run on a read-only connection thread of their own (opened on
  first use), so a long one never holds up the calls queued behind it on the
  connection thread (enqueues, claims, lease renewals).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future as ThreadFuture
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from sitq_core import checks, forks, store_endings
from sitq_core.backend import Backend, Capability, connecting_to_read_only
from sitq_core.errors import (
    BackendError,
    ConfigurationError,
    ConnectionError,
    SitqError,
    StoreGoneError,
    ValidationError,
)
from sitq_core.models import LeaseState, Outcome, ReservedTask, Result, Task
from sitq_core.notify import record_mark, safety_pauses, take_mark
from sitq_core.textoptions import text_options_converted
from sitq_core.urls import redacted

from .access import may, others_can_write, write_blockers
from .binding import register_fast_adapters
from .busy import _Busy, _BusyBudget, _Closing, _is_closed, _store_failure
from .claims import _CLAIM_SQL as _CLAIM_SQL  # imported from here (tests)
from .claims import (
    _MAX_VARIABLES,
    _MIN_DUE_SCAN_SQL,
    _MIN_DUE_SQL,
    _claim_candidates,
    _expired_too_often,
    _lanes_or_scan,
    _queue_filters,
    _work_due,
)
from .dbthread import ConnectionClosedForFork, DbThread, DbThreadStopped, closing_here
from .feed import InsertFeed
from .groupcommit import GroupCommit, others_ready
from .hints import (
    _DAMAGED_HINT,
    _UNKNOWN_WRITE_BLOCKER,
    _cannot_write_hint,
    _disk_full_hint,
    _is_corrupt,
    _is_not_a_db,
    _is_read_only,
    _is_read_only_wal_hint,
    _may_read,
    _path_hint,
    _read_only_hint,
    _reader_hint,
)
from .inline import Fallback, InlinePath, is_busy, write_transaction
from .inserts import (
    _FRESH_TAIL,
    _INSERT_FRESH_SQL,
    _ROW_LIMIT,
    _batch_id_taken,
    _byte_runs,
    _insert_groups,
    _insert_rows,
    _insert_sql,
    _task_row,
)
from .leases import (
    _CLAIM_SQL_SET,
    _ENDED_RESULT_SQL,
    _FINAL_COLUMNS,
    _FINAL_ROWS_PER_STATEMENT,
    _RELEASE_SQL,
    _RETRY_SQL,
    _TOKEN_BYTES,
    _UNREADABLE_FINISH_SQL,
    _UNREADABLE_RESULT_SQL,
    _cancelled_instead,
    _Claim,
    _end_expired,
    _final_parameters,
    _finish_one,
    _finish_rows,
    _lease_us,
    _leases,
    _token_seq,
    _UnreadableClaim,
)
from .newresults import NewResults
from .options import MEMORY as MEMORY  # a public name of this module
from .options import _choice, _integer, _number, _validate_path
from .probes import _CannotWrite, _holds_sitq_tables, _idle_snapshot, _probe_write
from .rows import _MAX_US, _MIN_US, _RESULT_COLUMNS, _is_time, _row_to_result, _row_to_task, _status_counts
from .schema import (
    SCHEMA_VERSION,
    TASK_COLUMNS,
    ForeignSchemaError,
    SchemaTooNewError,
    check_not_foreign,
    create_schema,
    from_us,
    missing_indexes,
    to_us,
)
from .undecodable import read_tolerantly
from .watcher import WORK_KEY, Wakeups, Watcher, _file_identity, _known_identity, file_opened_again, report_file_gone

if TYPE_CHECKING:
    from sitq_core.urls import BackendURL

__all__ = ["SQLiteBackend"]

log = logging.getLogger("sitq.sqlite")

T = TypeVar("T")

DEFAULT_PATH = "sitq.db"
JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY")
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
STATUSES = checks.STATUSES
_FINAL_SQL = "status IN ('success', 'failed', 'cancelled')"
_OUTCOME_KINDS = checks.OUTCOME_KINDS
_URL_FORMS = (
    "sqlite:///relative/path.db (relative to the working directory)",
    "sqlite:////absolute/path.db",
    "sqlite:// or sqlite:///:memory: (in-memory)",
)

_SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks"
# counts(): every row and each status's rows, in one pass (no sort)
_COUNTS_SQL = "SELECT count(*), {} FROM tasks".format(
    ", ".join(f"count(*) FILTER (WHERE status = '{status}')" for status in STATUSES)
)
# sitq's own statements store only statuses it checked (literals in the SQL, ``queued`` for new rows, outcome
# kinds checked by checks.check_outcomes); the schema's CHECK on ``status`` stays for every other writer. SQLite
# evaluates that ``IN (...)`` list through a temporary b-tree made for each row written (about 11,000 instructions,
# a third of inserting a ``tasks`` row), and again for each claim and finish that changes ``status``.
_OWN_WRITES_UNCHECKED = "PRAGMA ignore_check_constraints = ON"
_busy_clock: Callable[[], float] = time.monotonic  # the clock busy_timeout is counted with (tests control it)
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a WAL file is cut back to when it restarts
_PURGE_CHUNK_ROWS = 2000  # final tasks deleted per purge transaction (the write lock is free in between)
_INLINE_MAX_ROWS = 16  # larger enqueue batches go through the connection thread (the loop stays free)
_INLINE_CLAIM_MAX = 32  # reserves asking for more claim on the connection thread (the loop stays free)
_FEED_CHUNK_ROWS = 100  # rows per chunk handed to the connection thread by large enqueue_many calls
_STREAM_BUDGET = 0.05  # seconds of building a streamed batch may keep the write lock (projected)
_YIELD_AFTER = 0.005  # seconds of back-to-back inline calls before the event loop gets a turn
_STREAK_GAP = 0.001  # a pause this long between inline calls starts a new streak
# Seconds between checks, on the write paths, that the file at the path is still the one opened (_check_file):
# a stat costs ~2 µs, a clock read 0.1 µs, so a loop of enqueues pays the clock read and a stat per 0.1 s.
_FILE_CHECK_INTERVAL = 0.1


class _ConnectAbandoned(Exception):
    """The caller that was connecting was cancelled: the callers waiting for it try again."""


class _OtherFile(Exception):
    """The reader's connection opened another file than the one connected to (the file was deleted or replaced)."""


class SQLiteBackend(Backend):
    """Tasks and results in one SQLite file (or an in-memory database).

    ``path``: a ``str``, an ``os.PathLike`` or ``":memory:"``; parent folders
    are created on first use. Options: ``journal_mode`` (``WAL``), ``synchronous``
    (``FULL``; ``NORMAL`` is faster and may lose the last commits on power
    loss, never corrupts), ``busy_timeout`` (seconds a write may wait for the
    file lock, retried inside the backend), ``cache_size_kib`` (page cache per
    connection) and ``watch_interval`` (seconds between cross-process change
    checks while somebody waits).

    An in-memory database lives as long as this object's connection: every
    queue and worker using the same object shares it (within one process);
    such an instance does not declare ``PERSISTENT``, ``MULTI_PROCESS`` or
    ``CROSS_PROCESS_NOTIFY``.
    """

    name: ClassVar[str] = "sqlite"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.MULTI_PROCESS,
            Capability.CROSS_PROCESS_NOTIFY,
            Capability.CANCEL_RUNNING,
            Capability.STREAMED_BATCHES,
        }
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        journal_mode: str = "WAL",
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        cache_size_kib: int = 8192,
        watch_interval: float = 0.002,
    ) -> None:
        self.path: str = _validate_path(path)
        self.is_memory = self.path == MEMORY
        self.journal_mode = _choice("journal_mode", journal_mode, JOURNAL_MODES)
        self.synchronous = _choice("synchronous", synchronous, SYNCHRONOUS_MODES)
        self.busy_timeout = _number("busy_timeout", busy_timeout, minimum=0.0, inclusive=True)
        self.cache_size_kib = _integer("cache_size_kib", cache_size_kib, minimum=1)
        self.watch_interval = _number("watch_interval", watch_interval, minimum=0.0, maximum=1.0)
        # claims and renewals skip the fsync (see _write_lease): safe only in WAL mode, useful only above NORMAL
        self._lease_writes_skip_sync = self.journal_mode == "WAL" and self.synchronous in ("FULL", "EXTRA")
        if self.is_memory:
            # Instance-level: an in-memory database is private to this object.
            setattr(self, "capabilities", frozenset({Capability.CANCEL_RUNNING, Capability.STREAMED_BATCHES}))  # noqa: B010
        self._lock = threading.Lock()
        self._inline_last = 0.0  # monotonic end of the last inline call (see _streak_long)
        self._set_up = False  # the file's journal mode and schema are in place (_setup ran once)
        self._only_reading = False  # connected inside reading_only() (sitq stats): no checkpoint at close
        # a reader that cannot write the file reads an idle WAL database as an immutable snapshot, which
        # creates no -wal/-shm files of its own (see _idle_snapshot): the file's state when that was decided
        self._snapshot: tuple[int, ...] | None = None
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file connected to (_check_file)
        self._file_checked = 0.0  # monotonic time of the last _check_file stat
        self._identity_warned = False  # a _check_file stat failed (EACCES, ESTALE, ...): warned once per connect
        self._file_gone = False  # the file was deleted or replaced since connect: writes are refused
        self._inline_streak = 0.0
        self._db: DbThread | None = None
        # the admin reads' own connection thread (see _read_apart), opened on first use; only on a WAL file
        self._reader: DbThread | None = None
        self._wal = False  # the file connected to is in WAL mode (set by _setup): readers never block the writer
        self._reads_here = False  # the reader's connection found another file at the path: reads stay on _db
        self._connecting: ThreadFuture[DbThread] | None = None
        self._watcher: Watcher | None = None
        self._wakeups = Wakeups()
        self._inline = None if self.is_memory else InlinePath(self._new_inline_connection)
        # One pending group of enqueues per event loop that uses this backend (groupcommit.py).
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()
        # Resets this object in a forked child. No connection may stay open across a fork (the child's own
        # connections would take no real file locks, and another process's close could then delete the WAL
        # under them): the connection thread, the watcher and the inline connections close theirs
        # themselves before every fork (each registers with forks), also while still opening or after
        # close() let go of them.
        forks.forget_in_child(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: the connection and watcher threads are gone; the next call connects anew.

        The parent's connections are kept but never used or closed here (SQLite
        forbids carrying a connection across fork). An in-memory database
        starts empty in the child: it lived in the parent's connection.
        """
        forks.keep_inherited(self._db, self._connecting, self._watcher, self._inline, self._reader)
        self._lock = threading.Lock()
        self._db, self._connecting, self._watcher, self._reader = None, None, None, None
        self._wakeups = Wakeups()
        self._inline = None if self.is_memory else InlinePath(self._new_inline_connection)
        self._groups = weakref.WeakKeyDictionary()
        self.notifier.after_fork_in_child()

    def open_to_others(self) -> str | None:
        """Why users other than this process's may change the database file, or None (always for ``:memory:``).

        A worker that unpickles tasks (cloudpickle) asks this when it starts:
        whoever can write the file can make it run any code (see
        ``docs/explanation/serializers.md``). Two ``stat`` calls.
        """
        if self.is_memory:
            return None
        causes = others_can_write(self.path)
        if not causes:
            return None
        return f"SQLite database {self.path!r} can be changed by other users: {'; '.join(causes)}"

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a ``spawn`` child, a copy) as its configuration: the copy connects on its own first use."""
        if self.is_memory:
            raise TypeError(
                "an in-memory SQLiteBackend cannot be sent to another process or copied: its database lives in "
                "this object's connection; use a file path"
            )
        options = {
            "journal_mode": self.journal_mode,
            "synchronous": self.synchronous,
            "busy_timeout": self.busy_timeout,
            "cache_size_kib": self.cache_size_kib,
            "watch_interval": self.watch_interval,
        }
        return (_configured, (type(self), self.path, options))

    # ---------------------------------------------------------- construction

    @classmethod
    def from_url(cls, url: BackendURL) -> Self:
        """``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite://`` / ``sqlite:///:memory:``."""
        if url.host or url.port is not None or url.username or url.password:
            raise ConfigurationError(
                f"a sqlite URL takes no host, port or user; got {url}. Valid forms: " + "; ".join(_URL_FORMS),
                parameter="url",
                value=str(url),
                valid_options=list(_URL_FORMS),
            )
        options: dict[str, Any] = dict(url.query)
        if "path" in options:
            raise ConfigurationError(
                "a sqlite URL names its file itself; give the path in the URL, not also as a 'path' option "
                "(or ?path=). Valid forms: " + "; ".join(_URL_FORMS),
                parameter="path",
                value=options["path"],
                valid_options=list(_URL_FORMS),
            )
        if url.database is None and url.path_given:  # 'sqlite:///' + an unset variable: not a silent in-memory
            raise ValidationError(
                f"the URL {url} names no file after 'sqlite:///' (an empty or unset variable?); give a file, "
                "or write sqlite:// or sqlite:///:memory: for an in-memory database",
                parameter="path",
                value=str(url),
            )
        options["path"] = url.database or MEMORY
        return cls.from_config(options)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Self:
        """Build from a mapping; option values given as strings are converted.

        Without a ``path`` option the database is ``sitq.db`` in the working
        directory, the file of sitq's default URL ``sqlite:///sitq.db``.
        """
        accepted = cls.config_options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigurationError(
                f"unknown option {unknown[0]!r} for backend 'sqlite'; expected one of: {', '.join(accepted)}",
                parameter=unknown[0],
                value=redacted(unknown[0], options[unknown[0]]),  # ?password=: the value is a secret
                valid_options=accepted,
            )
        values = dict(options)
        values.setdefault("path", DEFAULT_PATH)  # the bare name means the same file as sitq's default URL
        return cls(**text_options_converted(cls, values))

    # ------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        await self._ensure()

    async def _ensure(self) -> DbThread:
        """The connection thread, opened by the first caller; the others wait for that connect.

        A caller cancelled while it connects gives the connect up (its thread
        is stopped); the callers waiting for it then try again themselves,
        instead of all failing with the first caller's cancellation.
        """
        while True:
            db = self._db
            if db is not None:
                return db
            with self._lock:
                if self._db is not None:
                    return self._db
                owner = self._connecting is None
                if owner:
                    self._connecting = ThreadFuture()
                pending = self._connecting
                assert pending is not None
            if not owner:
                waiter = asyncio.wrap_future(pending)
                waiter.add_done_callback(_retrieve)  # read even when this waiter is cancelled meanwhile
                try:
                    return await asyncio.shield(waiter)
                except _ConnectAbandoned:
                    continue
            try:
                db = await self._open()
            except BaseException as exc:
                with self._lock:
                    self._connecting = None
                pending.set_exception(_ConnectAbandoned() if isinstance(exc, asyncio.CancelledError) else exc)
                raise
            with self._lock:
                self._db = db
                self._connecting = None
            pending.set_result(db)
            return db

    async def _open(self) -> DbThread:
        if not self.is_memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot create the folder for SQLite database {self.path!r}: {exc}",
                    backend_type="sqlite",
                    connection_details=self.path,
                    cause=exc,
                ) from exc
        self._opened, self._file_gone = None, False  # a new connect opens the file that is at the path now
        self._wal, self._reads_here = False, False
        reading = connecting_to_read_only()  # read here: the connection thread does not share this task's context
        # before the first connection opens: a reader sets no journal mode on it (_rollback_journal), and has
        # nothing of its own to checkpoint at close
        self._only_reading = reading
        self._snapshot = _idle_snapshot(self.path) if reading and not self.is_memory else None
        if not reading and not self.is_memory:
            refused = self._unwritable_file()  # two quick system calls, as _idle_snapshot makes
            if refused is not None:
                raise refused
        db = DbThread(f"sitq-sqlite:{os.path.basename(self.path)}", self._new_connection, in_memory=self.is_memory)
        try:
            found = await db.run(lambda conn: self._setup(conn, reading=reading))
            self._set_up = True
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                db.stop()  # the setup may still wait for a lock: the thread closes the connection after it
            else:
                # the setup has ended: close its connection (and end the thread) before the caller hears of the
                # refusal, so that a process exiting on it leaves no -wal/-shm files beside a file it refused
                await db.shutdown()
            if isinstance(exc, _CannotWrite):
                cause = exc.__cause__
                raise self._cannot_write(cause, write_blockers(self.path)) from cause
            if isinstance(exc, ForeignSchemaError):
                advice = (
                    "put back what sitq needs (the schema is in docs/how-to/sqlite-backend.md) or restore a backup; "
                    "columns of your own are fine where an insert may leave them out"
                    if exc.changes
                    else "use a file of its own for sitq"
                )
                raise ConnectionError(
                    f"SQLite database {self.path!r} {exc.describe()}; {advice} (nothing in this one was changed)",
                    backend_type="sqlite",
                    connection_details=self.path,
                ) from None
            if isinstance(exc, SchemaTooNewError):
                raise ConnectionError(
                    f"SQLite database {self.path!r} has schema version {exc.found}, newer than this "
                    f"sitq-sqlite understands ({SCHEMA_VERSION}); upgrade sitq-sqlite",
                    backend_type="sqlite",
                    connection_details=self.path,
                ) from None
            if isinstance(exc, _Busy):
                switching = (
                    f"; or journal_mode={self.journal_mode} was asked for while other connections have the file "
                    "open in another journal mode (it can change only while no other connection is open)"
                    if self.journal_mode != "WAL"
                    else ""
                )
                raise ConnectionError(
                    f"cannot open SQLite database {self.path!r}: it stayed locked for more than busy_timeout="
                    f"{self.busy_timeout}s while sitq opened it; another connection holds a long write "
                    f"transaction or an exclusive lock (a VACUUM, a migration, locking_mode=EXCLUSIVE): retry, "
                    f"or raise busy_timeout{switching}",
                    backend_type="sqlite",
                    connection_details=self.path,
                    cause=exc,
                ) from exc
            if isinstance(exc, sqlite3.Error):
                raise self._open_failed(exc, reading=reading) from exc
            raise
        if not self.is_memory:
            self._opened, self._file_checked = _known_identity(self.path), time.monotonic()
            self._identity_warned = False
            file_opened_again(self.path)  # the file at the path now: its own deletion is news again
        log.debug("connected to %s (schema version %s)", self.path, found)
        return db

    def _unwritable_file(self) -> ConnectionError | None:
        """The refusal of a writer whose database file is there but read-only for it, before SQLite opens it.

        SQLite would open it read-only and create -wal and -shm files (of the
        file's read-only mode) beside it, which a process that cannot write the
        file cannot remove at close: a refused worker left them behind. So
        this refuses only where SQLite would create one of them (not both are
        there already); elsewhere SQLite itself decides, and the write probe at
        connect refuses what it cannot write, with the same explanation. The
        modes are asked for the effective user (a setuid program may write
        what its real user may not). Only modes are asked, the file is never
        opened here: closing any descriptor of a file drops every POSIX lock
        this process holds on it, those of its other SQLite connections too.
        """
        if may(self.path, os.W_OK) or not _may_read(self.path):
            return None
        real = os.path.realpath(self.path)  # SQLite keeps the -wal and -shm beside the file a symlink points to
        if os.path.lexists(real + "-wal") and os.path.lexists(real + "-shm"):
            return None  # SQLite creates nothing: let it try (the modes may say less than the file system allows)
        return self._cannot_write(None, write_blockers(self.path))

    def _open_failed(self, exc: sqlite3.Error, *, reading: bool) -> ConnectionError:
        """The ConnectionError for a SQLite error while connecting, with what is known of its cause."""
        causes = [] if reading or not os.path.isfile(self.path) else write_blockers(self.path)
        if (_is_read_only(exc) or (causes and _is_read_only_wal_hint(exc))) and _may_read(self.path):
            return self._cannot_write(exc, causes)  # a read-only DELETE-mode file, folder (no -shm) or mount
        if _is_not_a_db(exc):
            hint = " (is it a SQLite database file?)"
        elif reading:
            hint = _reader_hint(self.path, exc)
        else:
            hint = _read_only_hint(self.path) or _disk_full_hint(self.path, exc)
        hint = hint or _path_hint(self.path)
        return ConnectionError(
            f"cannot {'read' if reading else 'open'} SQLite database {self.path!r}: {exc}{hint}",
            backend_type="sqlite",
            connection_details=self.path,
            cause=exc,
        )

    def _cannot_write(self, exc: BaseException | None, causes: list[str]) -> ConnectionError:
        """A writing connect refused: the file can be read but not written, and ``causes`` say why (when known)."""
        why = "; ".join(causes) or _UNKNOWN_WRITE_BLOCKER
        return ConnectionError(
            f"SQLite database {self.path!r} can be read but not written by this process: {why}"
            + ("" if exc is None else f" (SQLite: {exc})")
            + "; workers and producers write the file and keep its -wal and -shm files beside it (sitq stats only "
            "reads it)",
            backend_type="sqlite",
            connection_details=self.path,
            cause=exc if isinstance(exc, Exception) else None,
        )

    def _check_file(self) -> None:
        """Refuse a write when the file at ``path`` is no longer the one connected to (deleted or replaced).

        Writes would go on into the old file, which no other process sees and
        which is gone once this process closes it: an enqueue would return the
        id of a task nobody can ever see. Compared at most every
        ``_FILE_CHECK_INTERVAL`` (the hot path pays one clock read); logged
        once, refused until the backend connects again. Only a file that is
        not there or another file at the path is gone: a ``stat`` failing for
        another reason (EACCES, ESTALE or EIO on NFS) tells nothing, so writes
        go on and the file is looked at again (a warning the first time).
        """
        if not self._file_gone:
            now = time.monotonic()
            if now - self._file_checked < _FILE_CHECK_INTERVAL or self._opened is None:
                return
            self._file_checked = now
            try:
                if _file_identity(self.path) == self._opened:
                    return
            except OSError as exc:  # unknown, not gone (EACCES, ESTALE, EIO): looked at again at a later write
                (log.debug if self._identity_warned else log.warning)(
                    "cannot tell whether %s is still the file this process opened (%s); writes go on, and it is "
                    "looked at again",
                    self.path,
                    exc,
                )
                self._identity_warned = True
                return
            self._file_gone = True
            report_file_gone(self.path)
        raise StoreGoneError(
            f"SQLite database {self.path!r} was deleted or replaced while this process had it open: a write "
            "would go into the old file, which no other process sees and which is lost when this process closes "
            "it, so nothing was stored. Restart this process (or close() the queue or backend and connect "
            "again) to use the file now at that path; what was written to the old file is not in it",
            backend_type="sqlite",
            connection_details=self.path,
        )

    def _new_inline_connection(self) -> sqlite3.Connection:
        """A thread's inline connection, to the file connected to; ``Fallback`` when the path holds another now.

        A thread opens its inline connection at its first inline call, maybe
        long after connect: by path, it would open a file put there meanwhile,
        or create a new empty one where the file was deleted (a read then failed
        with "no such table: tasks" and left a 0-byte file behind). So it opens
        with ``mode=rw`` (never creates) and only while the file at the path is
        the one connected to (checked before and after the open); otherwise the
        call goes to the connection thread, which still has that file, and the
        write paths' next file check looks at once.
        """
        if self._file_gone:
            raise Fallback
        uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
        try:
            self._same_file()  # before opening too: a file put at the path would be read, not the one connected to
            try:
                conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, cached_statements=64, check_same_thread=False
                )
            except sqlite3.Error:
                self._same_file()  # deleted meanwhile: not there to open
                raise
            try:
                self._same_file()  # the file opened is the one at the path now
            except BaseException:
                conn.close()
                raise
        except _OtherFile as exc:
            self._file_checked = float("-inf")  # the write paths' next _check_file looks at the file now
            raise Fallback from exc
        try:
            conn.execute("PRAGMA busy_timeout = 0")  # never wait inline: fall back to the connection thread
            self._rollback_journal(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA cache_size = -2048")
            conn.execute(_OWN_WRITES_UNCHECKED)
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")  # as _configure: it restarts the WAL too
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    async def _inline_or_run(self, operation: str, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run a short call inline on this thread when possible (see ``inline.py``), else one hop."""
        if self._inline is not None and self._db is not None:
            if write:
                self._check_file()
            began = time.monotonic()
            try:
                result = self._inline.run(fn, write=write)
            except Fallback:
                pass
            except SitqError:
                raise
            except sqlite3.Error as exc:
                raise self._failed(operation, exc) from exc
            else:
                if self._streak_long(began):
                    await asyncio.sleep(0)
                return result
        if write:
            return await self._transaction(operation, fn)
        return await self._run(operation, fn)

    def _new_connection(self) -> sqlite3.Connection:
        """The connection thread's connection, configured (it is opened again after a fork closed it)."""
        register_fast_adapters()  # every other connection of this backend is opened after this one
        # not check_same_thread: a fork closes it from the forking thread while no call is inside (forks.py)
        if self._snapshot is not None:
            uri = f"{Path(self.path).absolute().as_uri()}?mode=ro&immutable=1"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, cached_statements=128, check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=128, check_same_thread=False)
        try:
            # not letting a fork through: this connection is not the thread's yet, so a fork would not close it
            self._retrying(conn, self._configure, let_forks_through=False)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        """This connection's own settings (the file's journal mode is first set in ``_setup``)."""
        conn.execute("PRAGMA busy_timeout = 0")  # busy is retried here, with jitter
        self._rollback_journal(conn)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute(f"PRAGMA cache_size = -{self.cache_size_kib}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(_OWN_WRITES_UNCHECKED)
        # a WAL swollen by one huge write (a purge, a VACUUM) shrinks back at its next restart instead of
        # keeping its peak size for as long as any process has the file open (steady use stays near 4 MiB)
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")

    def _rollback_journal(self, conn: sqlite3.Connection) -> None:
        """A rollback journal mode (DELETE, TRUNCATE, PERSIST, MEMORY) is per connection, unlike WAL: set it
        on every connection opened after ``_setup`` (a connection reopened after a fork, an inline one). Not for
        a reader: setting a journal mode can change the file's own (a WAL file leaves WAL mode for good)."""
        if self._set_up and not self.is_memory and self.journal_mode != "WAL" and not self._only_reading:
            conn.execute(f"PRAGMA journal_mode = {self.journal_mode}")

    def _setup(self, conn: sqlite3.Connection, *, reading: bool = False) -> int:
        """Check the file is sitq's, set its journal mode and make what is missing; returns the version found.

        A reader (``reading``: sitq stats) changes nothing in the file: not its
        journal mode (WAL stays a file's mode for good, so one ``sitq stats``
        switched a file its operator keeps in DELETE mode, and failed on one it
        may only read), not its schema or ``user_version``.
        """

        def pragmas(conn: sqlite3.Connection) -> int:
            found = check_not_foreign(conn)  # before the journal mode changes anything in the file
            if not self.is_memory and self._snapshot is None and not reading:
                mode = conn.execute(f"PRAGMA journal_mode = {self.journal_mode}").fetchone()[0]
                if str(mode).upper() != self.journal_mode:
                    log.warning("journal_mode %s requested, got %s", self.journal_mode, mode)
                if str(mode).upper() != "WAL":  # claims skip the fsync only where that is safe (_write_lease)
                    self._lease_writes_skip_sync = False
                self._wal = str(mode).upper() == "WAL"
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # again: set after the journal mode
            return found

        found = self._retrying(conn, pragmas)
        if reading:  # no write lock either, so a health check connects while another process holds a long one
            return found
        if found == SCHEMA_VERSION and not missing_indexes(conn):
            if not self.is_memory:
                _probe_write(conn)
            return SCHEMA_VERSION
        return self._retrying(conn, lambda c: self._write(c, create_schema))

    async def exists(self) -> bool | None:
        """True when the file holds sitq's tables (read-only look: a missing or other file stays as it is).

        A file that is there but cannot be read (a folder, no permission) raises ``ConnectionError``.
        """
        if self.is_memory:
            return None
        try:
            return await asyncio.to_thread(_holds_sitq_tables, self.path)
        except sqlite3.Error as exc:  # there, but unreadable: a folder, no permission, a WAL without its -shm
            raise ConnectionError(
                f"cannot read SQLite database {self.path!r}: {exc}{_reader_hint(self.path, exc)}",
                backend_type="sqlite",
                connection_details=self.path,
                cause=exc,
            ) from exc

    async def close(self) -> None:
        group = self._groups.get(asyncio.get_running_loop())
        if group is not None:  # enqueues already waiting for their group are written first
            await group.settle()
        with self._lock:
            db, self._db = self._db, None
            watcher, self._watcher = self._watcher, None
            reader, self._reader = self._reader, None
        for thread in (db, reader):  # a call waiting out another connection's lock gives up now (rolled back)
            if thread is not None:
                thread.stop_waiting()
        if watcher is not None:
            watcher.stop()
        if self._inline is not None:
            self._inline.close_all()
        if reader is not None:  # closed first: the checkpoint below would wait for its read snapshot
            await reader.shutdown()
        if db is None:
            return
        try:
            if not self.is_memory and not self._only_reading:  # a reader writes nothing, even at close
                await db.run(_checkpoint)
        except sqlite3.Error as exc:  # a read-only file (sitq stats) has nothing of this process's to checkpoint
            (log.debug if _is_read_only(exc) else log.warning)("checkpoint at close failed for %s: %s", self.path, exc)
        except (_Closing, _Busy) as exc:
            # the connection was closed for a fork meanwhile, and opening it again met another connection's lock,
            # which a close does not wait out: the WAL stays for the next connection to checkpoint
            log.debug("checkpoint at close skipped for %s: %s", self.path, exc)
        finally:
            await db.shutdown()  # returns once the connection (and its file handles) is closed
        self._wakeups.wake_all()  # waiters re-check (and reconnect) instead of sleeping on
        log.debug("closed %s", self.path)

    def abandon(self) -> None:
        """Stop the connection thread and the watcher and close the inline connections, without awaiting.

        For a backend whose queue was dropped unclosed (``Backend.abandon``):
        queued jobs still run first, nothing is checkpointed (the WAL is
        replayed by the next connection). A later call connects again.
        """
        with self._lock:
            db, self._db = self._db, None
            watcher, self._watcher = self._watcher, None
            reader, self._reader = self._reader, None
        if watcher is not None:
            watcher.stop(wait=False)
        if self._inline is not None:
            self._inline.close_all()
        if reader is not None:
            reader.stop()
        if db is not None:
            db.stop()
        log.debug("let go of %s (its queue was dropped unclosed)", self.path)

    # ------------------------------------------------------------ plumbing

    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection thread (one hop), mapping errors."""
        since = _busy_clock()  # busy_timeout counts from here, not from when the thread gets to it
        if self._snapshot is not None:
            fn = self._checked_snapshot(fn)
        return await self._settle(operation, await self._submit(lambda conn: self._retrying(conn, fn, since=since)))

    async def _read_apart(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a long read (``list_tasks``, ``counts``) on the reader thread, so that it holds up no other call.

        Every call of this backend on the connection thread runs in turn: a
        read of a million rows there (0.2-1.3 s) kept the enqueues, claims and
        lease renewals queued behind it waiting as long. On a WAL file a second
        connection reads its own snapshot, neither blocking the writer nor
        waiting for it. Elsewhere the read stays on the connection thread: an
        in-memory database is this backend's one connection (another would be
        another, empty, database), a rollback-journal file's readers do block
        its writer (which would then fail after ``busy_timeout`` instead of
        waiting its turn), and a read-only connect (``sitq stats``) makes no
        other calls to hold up.
        """
        since = _busy_clock()  # busy_timeout counts from here, as in _run
        while True:
            db = await self._ensure()
            reader = self._reader_of(db)
            if reader is None:
                return await self._run(operation, fn)
            try:
                future = reader.run(lambda conn: self._retrying(conn, fn, since=since))
            except DbThreadStopped:  # close() or a failed open stopped it meanwhile: try again
                with self._lock:
                    if self._reader is reader:
                        self._reader = None
                continue
            try:
                return await self._settle(operation, future)
            except _OtherFile:
                # the file at the path is not the one connected to: read the connected one, as the writes do
                with self._lock:
                    self._reads_here = True
                    if self._reader is reader:
                        self._reader = None
                reader.stop()

    def _reader_of(self, db: DbThread) -> DbThread | None:
        """The reader thread of connection ``db`` (started now if need be), or None: read on ``db`` itself."""
        if not self._wal or self.is_memory or self._only_reading or self._reads_here or self._file_gone:
            return None
        reader = self._reader
        if reader is not None:
            return reader
        with self._lock:
            if self._db is not db:  # closed meanwhile: the next call connects again
                return None
            if self._reader is None:
                self._reader = DbThread(f"sitq-sqlite-reads:{os.path.basename(self.path)}", self._new_read_connection)
            return self._reader

    def _new_read_connection(self) -> sqlite3.Connection:
        """The reader thread's connection: read-only (``query_only``), otherwise configured as the writer's.

        Opened on the reader thread at its first job, and again after a fork
        closed it. Raises ``_OtherFile`` when the file at the path is no longer
        the one this backend connected to (deleted or replaced): the reads then
        stay on the connection thread, which still has the file that is written.
        """
        self._same_file()  # before opening too: a deleted file would be made again, empty, at the path
        # mode=rw: never creates the file (it was there a moment ago); a file gone meanwhile fails the open
        uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, cached_statements=16, check_same_thread=False)
        except sqlite3.Error:
            self._same_file()
            raise
        try:
            self._retrying(conn, self._configure_reader, let_forks_through=False)
            self._same_file()  # the file opened is the one at the path now: checked after the open
        except BaseException:
            conn.close()
            raise
        return conn

    def _same_file(self) -> None:
        """Raise ``_OtherFile`` unless the file at the path is the one connected to (or that cannot be known)."""
        if self._opened is not None and _known_identity(self.path) != self._opened:
            raise _OtherFile(self.path)

    def _configure_reader(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout = 0")  # busy is retried in _retrying, with jitter
        conn.execute("PRAGMA query_only = ON")
        conn.execute(f"PRAGMA cache_size = -{self.cache_size_kib}")

    def _checked_snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """``fn`` on the immutable snapshot, trusted only while the file is still idle and unchanged after it.

        An immutable connection takes no locks, so a writer that started meanwhile
        (it creates the -wal file and, at its checkpoint, changes the file) could
        have changed pages under the read: then ``fn`` runs again on an ordinary
        connection opened for it alone (the writer's -wal/-shm files are there).
        """

        def checked(conn: sqlite3.Connection) -> T:
            found = fn(conn)
            if _idle_snapshot(self.path) == self._snapshot:
                return found
            log.debug("%s changed during an immutable read; reading it again through an ordinary connection", self.path)
            fresh = sqlite3.connect(self.path, isolation_level=None)
            fresh.text_factory = conn.text_factory  # tolerant_text too when this job is read again with it
            try:
                self._configure(fresh)
                return fn(fresh)
            finally:
                fresh.close()

        return checked

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` on the connection thread; when another thread closed that one meanwhile, on a new one."""
        while True:
            db = await self._ensure()
            try:
                return db.run(fn)
            except DbThreadStopped:
                with self._lock:  # close() clears _db before it stops the thread; make sure of it
                    if self._db is db:
                        self._db = None

    async def _settle(self, operation: str, future: asyncio.Future[T]) -> T:
        """Await a connection-thread job, mapping SQLite errors to sitq's."""
        try:
            return await future
        except SitqError:
            raise
        except _Busy as exc:
            raise BackendError(
                f"SQLite database {self.path!r} stayed locked for more than busy_timeout="
                f"{self.busy_timeout}s during {operation}; another connection holds the write lock: a long "
                "write transaction, a VACUUM, or a wal_checkpoint(FULL/RESTART/TRUNCATE) waiting for a reader",
                operation=operation,
                backend_type="sqlite",
                cause=exc,
            ) from exc
        except _Closing as exc:
            raise BackendError(
                f"SQLite {operation} on {self.path!r} was given up: the backend was closed while the call waited "
                "for another connection's write lock; nothing was changed (connect again to retry it)",
                operation=operation,
                backend_type="sqlite",
                cause=exc,
            ) from exc
        except sqlite3.Error as exc:
            raise self._failed(operation, exc) from exc

    def _failed(self, operation: str, exc: sqlite3.Error) -> SitqError:
        """The BackendError for a SQLite error (other than busy) during ``operation``.

        A value too big to store (``SQLITE_TOOBIG``) is the input's fault, not the
        store's: a ``ValidationError`` naming what was refused, which no retry cures.
        """
        refused = {"enqueue": "tasks", "finish": "outcomes", "finish_and_reserve": "outcomes"}.get(operation)
        if isinstance(exc, sqlite3.DataError) and refused is not None:
            return ValidationError(
                f"SQLite {operation} refused a value on {self.path!r}: {exc} (a SQLite row holds at most "
                f"{_ROW_LIMIT:,} bytes)",
                parameter=refused,
                cause=exc,
            )
        if _is_corrupt(exc):
            hint = _DAMAGED_HINT
        elif _is_read_only(exc):  # a reader (sitq stats) is not told that sitq writes to the file
            hint = _reader_hint(self.path, exc) if self._only_reading else _cannot_write_hint(self.path)
        else:
            hint = ""
        return BackendError(
            f"SQLite {operation} failed on {self.path!r}: {exc}{hint}",
            operation=operation,
            backend_type="sqlite",
            cause=exc,
        )

    def _retrying(
        self,
        conn: sqlite3.Connection,
        fn: Callable[[sqlite3.Connection], T],
        *,
        let_forks_through: bool = True,
        since: float | None = None,
    ) -> T:
        """Call ``fn``; on SQLITE_BUSY roll back, sleep a short random time and call it again.

        While it sleeps it holds no lock, so a fork may go ahead (``forks.gate``)
        instead of waiting out another process's long transaction; if that fork
        closed ``conn``, the connection thread runs the job again on a new one.
        ``busy_timeout`` counts from ``since`` (when the caller asked): jobs
        queued behind one that waited out a lock each waited a whole
        ``busy_timeout`` more, so the fourth of four failed after 20 s.
        It counts time spent retrying, not a stall of the process (see
        ``_BusyBudget``).
        """
        budget = _BusyBudget(self.busy_timeout, since, _busy_clock)
        attempt = 0
        text_factory: Any = None  # the connection's own, while it reads with tolerant_text
        try:
            while True:
                try:
                    return fn(conn)
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        conn.rollback()
                    if text_factory is None and (text_factory := read_tolerantly(conn, exc)) is not None:
                        # a TEXT value that is not UTF-8 (changed by hand, or damage): run the job again reading
                        # such values as Undecodable, which the row checks name; only this job pays for it
                        continue
                    if not _is_busy(exc):
                        raise
                    if closing_here():  # close() began: it must not wait out busy_timeout behind this job
                        raise _Closing(str(exc)) from exc
                    if budget.used_up():
                        raise _Busy(str(exc)) from exc
                    attempt += 1
                    pause = random.uniform(0.00002, min(0.004, 0.0001 * (2 ** min(attempt, 6))))
                    if not let_forks_through:
                        time.sleep(pause)
                        continue
                    with forks.gate.stepped_out():
                        time.sleep(pause)
                    if _is_closed(conn):
                        raise ConnectionClosedForFork from exc
        finally:
            if text_factory is not None:
                conn.text_factory = text_factory

    def _write(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """``write_transaction`` on the file connected to (see ``_check_file``)."""
        self._check_file()
        return write_transaction(conn, body)

    async def _transaction(self, operation: str, body: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(operation, lambda conn: self._write(conn, body))

    def _write_lease(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """``_write`` for claims and lease renewals: committed without waiting for the disk (WAL mode).

        Losing such a commit to a power failure only makes its tasks available
        again (as an expired lease would), which at-least-once delivery allows;
        enqueues, outcomes and cancel requests keep the configured
        ``synchronous``. WAL commits under ``NORMAL`` are atomic and never
        corrupt the file; the next ``FULL`` commit makes them durable too. It
        saves one fsync on every pickup of an idle worker (milliseconds on a VM
        disk after a quiet spell).
        """
        if not self._lease_writes_skip_sync:
            return self._write(conn, body)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return self._write(conn, body)
        finally:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")

    def _now_us(self) -> int:
        return to_us(_aware(self.now(), "clock"))

    # ---------------------------------------------------------------- enqueue

    async def enqueue(self, task: Task) -> str:
        """Store one task: one autocommit INSERT, inline when the file lock is free (the common case).

        Enqueues that arrive together (other coroutines ready to run, or a group
        already waiting) share one transaction instead (``groupcommit.py``).
        """
        if self._inline is None or self._db is None:
            return (await self._enqueue_small([task], inline=False))[0]
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if (group is not None and group.busy) or others_ready(loop):
            if group is None:
                group = self._groups[loop] = GroupCommit(self._enqueue_now, self._enqueue_group, _store_failure)
            return await group.submit(task)
        return await self._enqueue_now(task)

    async def _enqueue_group(self, tasks: Sequence[Task]) -> list[str]:
        return await self._enqueue_small(tasks, inline=len(tasks) <= _INLINE_MAX_ROWS)

    async def _enqueue_now(self, task: Task) -> str:
        """One task as one autocommit INSERT: inline when the lock is free, else through the connection thread."""
        began = time.monotonic()
        if not self._insert_here(task):  # the lock stayed busy (or inline calls are slow)
            return (await self._enqueue_small([task], inline=False))[0]
        if self._streak_long(began):
            await asyncio.sleep(0)
        return task.id

    def enqueue_blocking(self, task: Task) -> str | None:
        """One autocommit INSERT on the calling thread's own connection; None when the lock stays busy."""
        return task.id if self._insert_here(task) else None

    def _insert_here(self, task: Task) -> bool:
        """Insert ``task`` on this thread's inline connection; False (nothing stored) when that cannot run now."""
        inline = self._inline
        if inline is None or self._db is None:
            return False
        self._check_file()
        row = _task_row(task)
        try:
            if row[12:20] == _FRESH_TAIL:
                inline.execute(_INSERT_FRESH_SQL, (*row[:12], row[20]))
            else:
                inline.execute(_insert_sql(1), row)
        except Fallback:
            return False
        except sqlite3.IntegrityError as exc:
            raise ValidationError(
                f"task id {task.id!r} already exists; nothing was stored",
                parameter="tasks",
                value=task.id,
                cause=exc,
            ) from exc
        except sqlite3.Error as exc:
            raise self._failed("enqueue", exc) from exc
        self._wakeups.wake_work()
        return True

    def _streak_long(self, began: float) -> bool:
        """True when back-to-back inline calls have kept this thread's event loop busy for _YIELD_AFTER.

        Inline calls never suspend, so a loop of ``await queue.enqueue(...)`` would starve every
        other coroutine on the loop (a worker's heartbeats included); yielding once every few
        milliseconds of such a streak costs a fraction of a percent.
        """
        now = time.monotonic()
        if began - self._inline_last > _STREAK_GAP:
            self._inline_streak = began
        self._inline_last = now
        if now - self._inline_streak >= _YIELD_AFTER:
            self._inline_streak = now
            return True
        return False

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        if isinstance(tasks, Task) or not isinstance(tasks, Sequence):
            raise ValidationError(f"tasks must be a sequence of Task, got {type(tasks).__name__}", parameter="tasks")
        if not tasks:
            return []
        if len(tasks) > _INLINE_MAX_ROWS:
            return await self._enqueue_pipelined(tasks)
        return await self._enqueue_small(tasks, inline=True)

    async def _enqueue_small(self, tasks: Sequence[Task], *, inline: bool) -> list[str]:
        """A few tasks in one transaction: inline when ``inline`` and the lock is free, else one hop."""
        times: dict[int, tuple[datetime, int]] = {}
        rows = [_task_row(task, times) for task in tasks]
        ids = [task.id for task in tasks]
        seen: set[str] = set()
        for task_id in ids:
            if task_id in seen:
                raise ValidationError(
                    f"task id {task_id!r} appears twice in one batch", parameter="tasks", value=task_id
                )
            seen.add(task_id)

        def body(conn: sqlite3.Connection) -> None:
            try:
                _insert_rows(conn, rows)
            except sqlite3.IntegrityError as exc:
                raise _batch_id_taken(conn, ids, exc) from exc

        if inline:
            await self._inline_or_run("enqueue", body, write=True)
        else:
            await self._transaction("enqueue", body)
        self._wakeups.wake_work()
        return ids

    async def _enqueue_pipelined(self, tasks: Sequence[Task]) -> list[str]:
        """A large batch: rows are built here while the connection thread inserts earlier chunks (feed.py)."""
        self._check_file()  # before building the batch (the connection thread checks again in _write)
        # The connection thread holds the write lock while chunks are built: stream only when building
        # the whole batch looks cheap (plain arguments); otherwise build everything first.
        began = time.perf_counter()
        first = tasks[:_FEED_CHUNK_ROWS]  # built now if ``tasks`` is a lazy TaskBatch
        if (time.perf_counter() - began) / max(1, len(first)) * len(tasks) > _STREAM_BUDGET:
            tasks = list(tasks)
        feed = InsertFeed(_insert_groups)

        def body(conn: sqlite3.Connection) -> None:
            try:
                feed.insert_all(conn)
            except sqlite3.IntegrityError as exc:
                failing = [key for _shared, keys in feed.last_chunk() or [] for key in keys[::2]]
                raise _batch_id_taken(conn, failing, exc) from exc

        since = _busy_clock()  # busy_timeout counts from here, as in _run
        future = await self._submit(lambda conn: self._retrying(conn, lambda c: self._write(c, body), since=since))
        ids: list[str] = []
        try:
            times: dict[int, tuple[datetime, int]] = {}
            seen: set[str] = set()
            for start in range(0, len(tasks), _FEED_CHUNK_ROWS):
                # Rows that differ only in id and payload (the usual batch) share one set of parameters.
                groups: list[tuple[tuple[Any, ...], list[Any]]] = []
                shared: tuple[Any, ...] | None = None
                pairs: list[Any] = []
                for task in tasks[start : start + _FEED_CHUNK_ROWS]:
                    row = _task_row(task, times)
                    if row[0] in seen:
                        raise ValidationError(
                            f"task id {row[0]!r} appears twice in one batch", parameter="tasks", value=row[0]
                        )
                    seen.add(row[0])
                    ids.append(row[0])
                    rest = row[2:]
                    if rest != shared:
                        shared, pairs = rest, []
                        groups.append((rest, pairs))
                    pairs += (row[0], row[1])
                feed.put(groups)
        except BaseException:
            # The connection thread holds the write lock while it waits for chunks: always release it.
            feed.abort()
            future.add_done_callback(_retrieve)  # its Aborted error is expected, not worth a warning
            raise
        feed.finish()
        await self._settle("enqueue", future)
        self._wakeups.wake_work()
        return ids

    # ---------------------------------------------------------------- reserve

    async def reserve(
        self,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> list[ReservedTask]:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValidationError("worker_id must be a non-empty string", parameter="worker_id", value=worker_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be an integer >= 1", parameter="limit", value=limit)
        lease_us = _lease_us(lease_seconds)
        queue_list = _queues(queues)
        if queue_list == []:
            return []
        record_mark(self, self._wakeups.work_seq)
        # also when nothing is due: an idle worker on a deleted file would wait for work that only the file
        # now at the path receives, and never hear of it (a stat at most every _FILE_CHECK_INTERVAL)
        self._check_file()
        body, ended = self._reserve_body(worker_id, limit, lease_us, queue_list)
        if self._inline is not None and self._db is not None:
            # An idle worker's polls and wake-ups mostly find nothing or a few tasks: look first without
            # the write lock (a WAL reader never waits for a writer, so a poll does not queue behind a
            # producer's fsync), then claim right here when the lock is free (no thread hops).
            if not await self._inline_or_run(
                "reserve", lambda conn: _work_due(conn, queue_list, self._now_us()), write=False
            ):
                return []
            if limit <= _INLINE_CLAIM_MAX:
                claims = await self._inline_or_run("reserve", lambda conn: self._write_lease(conn, body), write=False)
                await self._report_store_endings(ended)
                return await self._handed_out(claims)
        claims = await self._run("reserve", lambda conn: self._write_lease(conn, body))
        await self._report_store_endings(ended)
        return await self._handed_out(claims)  # built here, off the connection thread (the busier one)

    async def _handed_out(self, claims: list[_Claim]) -> list[ReservedTask]:
        """The leases of claimed rows; a row that cannot be read ends failed, and the others go out as usual."""
        leases, unreadable = _leases(claims)
        if unreadable:
            await self._fail_unreadable(unreadable)
        return leases

    async def _fail_unreadable(self, claims: list[_UnreadableClaim]) -> None:
        """End claimed rows that cannot be read as failed, each fenced by its lease, saying which value is wrong.

        SQLite columns take a value of any type, so a row changed around sitq
        (``UPDATE tasks SET timeout = 'ten'``) can hold one no Task can carry.
        Such a task can never run; it fails at once, alone (as a payload that
        cannot be deserialised does), instead of its batch being dropped. When
        this write fails, the lease runs out and the next claim tries again.
        """
        now = self._now_us()

        def body(conn: sqlite3.Connection) -> list[Any]:
            ended: list[Any] = []
            for token, _task_id, error, serializer_read in claims:
                seq = _token_seq(token)
                conn.execute(_UNREADABLE_RESULT_SQL, (error, _MIN_US, _MAX_US, now, seq, token, serializer_read))
                row = conn.execute(_UNREADABLE_FINISH_SQL, (now, error, seq, token)).fetchone()
                if row is not None:
                    ended.append(row[0])
            return ended

        try:
            ended = await self._transaction("reserve", body)
        except SitqError as exc:
            log.warning("could not end %d claimed task row(s) that cannot be read: %s", len(claims), exc)
            return
        for _token, task_id, error, _serializer_read in claims:
            if task_id in ended:
                log.warning("task %r failed without running: %s (was its row changed outside sitq?)", task_id, error)
        readable = [task_id for task_id in ended if isinstance(task_id, str)]
        if readable:
            self._wakeups.wake([_result_key(task_id) for task_id in readable])
            await self._report_store_endings(readable)

    def _reserve_body(
        self, worker_id: str, limit: int, lease_us: int, queue_list: list[str] | None
    ) -> tuple[Callable[[sqlite3.Connection], list[_Claim]], list[str]]:
        """The claim transaction's body (shared by ``reserve`` and ``finish_and_reserve``).

        It returns raw rows; :func:`_leases` turns them into ``ReservedTask``s
        after COMMIT, so the write lock is not held while Python builds objects.
        The clock is read inside, once the write lock is held: a lease counted
        from before a long wait for the lock could be granted already expired,
        and another worker would take the task while this one runs it. The
        list returned beside it gets the ids of tasks the body ended instead
        of handing out (for :meth:`_report_store_endings` after COMMIT).
        """
        ended_ids: list[str] = []

        def body(conn: sqlite3.Connection) -> list[_Claim]:
            ended_ids.clear()  # a body run again after a busy rollback starts afresh
            now = self._now_us()
            handed: list[_Claim] = []
            while len(handed) < limit:
                candidates = _claim_candidates(conn, queue_list, now, limit - len(handed))
                if not candidates:
                    break
                claimed: list[int] = []
                ended = 0
                for seq, _due, status, expiries, max_expiries, cancel_requested in candidates:
                    if status == "running" and cancel_requested:  # cancelled while its worker was gone
                        ended_ids.extend(_end_expired(conn, seq, now, cancelled=True))
                        ended += 1
                    elif status == "running" and _expired_too_often(expiries, max_expiries):
                        ended_ids.extend(_end_expired(conn, seq, now, cancelled=False))
                        ended += 1
                    else:
                        claimed.append(seq)
                prefix = os.urandom(_TOKEN_BYTES).hex()  # this batch's lease tokens: prefix + seq in hex
                expires = now + lease_us
                order = {seq: position for position, seq in enumerate(claimed)}
                rows: list[tuple[Any, ...]] = []
                per = _MAX_VARIABLES - 4  # four leading parameters, then the seqs
                for start in range(0, len(claimed), per):
                    chunk = claimed[start : start + per]
                    sql = _CLAIM_SQL_SET.format(",".join("?" * len(chunk)))
                    rows += conn.execute(sql, (worker_id, prefix, expires, now, *chunk))
                rows.sort(key=lambda row: order[row[0]])  # RETURNING order is unspecified; keep the claim order
                handed += [(row[1:], f"{prefix}{row[0]:x}", expires) for row in rows]
                if not ended:
                    break
            return handed

        return body, ended_ids

    async def _report_store_endings(self, task_ids: list[str]) -> None:
        """Tell lifecycle observers of tasks a reserve ended itself (no worker reports those)."""
        await store_endings.report_ids(self, task_ids)

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        lease_us = _lease_us(lease_seconds)
        pairs = _lease_pairs(leases)
        if not pairs:
            return {}

        def body(conn: sqlite3.Connection) -> dict[str, LeaseState]:
            now = self._now_us()  # with the write lock held: a renewal counts from now, not from before the wait
            states: dict[str, LeaseState] = {}
            for task_id, token in pairs:
                row = conn.execute(
                    "UPDATE tasks SET due = ? WHERE id = ? AND lease_token = ? AND status = 'running' "
                    "RETURNING cancel_requested",
                    (now + lease_us, task_id, token),
                ).fetchone()
                if row is None:
                    states[task_id] = LeaseState.LOST
                else:
                    states[task_id] = LeaseState.CANCEL_REQUESTED if row[0] else LeaseState.HELD
            return states

        return await self._run("heartbeat", lambda conn: self._write_lease(conn, body))

    # ----------------------------------------------------------------- finish

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        _check_outcomes(outcomes)
        checks.outcomes_fit(outcomes, _ROW_LIMIT, "a SQLite database")
        if not outcomes:
            return []
        body = self._finish_body(outcomes, self._now_us())
        accepted, requeued, finished = await self._transaction("finish", body)
        self._after_finish(requeued, finished)
        return accepted

    async def finish_and_reserve(
        self,
        outcomes: Sequence[Outcome],
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[ReservedTask]]:
        """``finish_many`` then ``reserve`` in ONE transaction: one commit (one fsync) per worker cycle."""
        _check_outcomes(outcomes)
        checks.outcomes_fit(outcomes, _ROW_LIMIT, "a SQLite database")
        if not outcomes:
            return [], await self.reserve(worker_id=worker_id, limit=limit, lease_seconds=lease_seconds, queues=queues)
        if not isinstance(worker_id, str) or not worker_id:
            raise ValidationError("worker_id must be a non-empty string", parameter="worker_id", value=worker_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be an integer >= 1", parameter="limit", value=limit)
        lease_us = _lease_us(lease_seconds)
        queue_list = _queues(queues)
        if queue_list == []:
            return await self.finish_many(outcomes), []
        record_mark(self, self._wakeups.work_seq)
        finish = self._finish_body(outcomes, self._now_us())
        claim, ended = self._reserve_body(worker_id, limit, lease_us, queue_list)

        def body(conn: sqlite3.Connection) -> tuple[tuple[list[bool], bool, list[str]], list[_Claim]]:
            return finish(conn), claim(conn)

        (accepted, requeued, finished), claims = await self._run(
            "finish_and_reserve", lambda conn: self._write(conn, body)
        )
        self._after_finish(requeued, finished)
        await self._report_store_endings(ended)
        return accepted, await self._handed_out(claims)  # built here, off the connection thread

    def _after_finish(self, requeued: bool, finished: list[str]) -> None:
        keys: list[Hashable] = [("sitq", "result", task_id) for task_id in finished]
        if requeued:
            keys.append(WORK_KEY)
        if keys:
            self._wakeups.wake(keys)

    def _finish_body(
        self, outcomes: Sequence[Outcome], now: int
    ) -> Callable[[sqlite3.Connection], tuple[list[bool], bool, list[str]]]:
        """The finish transaction's body (shared by ``finish_many`` and ``finish_and_reserve``).

        Parameters are built here, before the write lock is taken. Inside it,
        final outcomes cost two set-based statements whose WHERE is the fence
        (same seq, same id, same lease token, still running): the results rows
        are copied first, then the task rows are updated, RETURNING the rows
        that were accepted. The seq comes from the lease token (see
        _CLAIM_SQL_SET). A task with outcomes under different tokens in one
        batch, and retries and releases, go one outcome at a time, in order.
        """
        first_token: dict[str, str] = {}
        conflicted: set[str] = set()
        for outcome in outcomes:
            if first_token.setdefault(outcome.task_id, outcome.lease_token) != outcome.lease_token:
                conflicted.add(outcome.task_id)
        finals: list[Any] = []  # flat VALUES parameters, _FINAL_COLUMNS per row
        sizes: list[int] = []  # bytes of each final row's value, error and traceback
        in_set: list[tuple[int, int, str]] = []  # (index, seq, task id) of outcomes in the set statements
        singles: list[tuple[int, Outcome, int]] = []  # (index, outcome, seq), run one by one in order
        seen: set[tuple[str, str]] = set()
        for index, outcome in enumerate(outcomes):
            lease = (outcome.task_id, outcome.lease_token)
            seq = _token_seq(outcome.lease_token)
            if lease in seen or seq is None:
                continue  # a second outcome for the same lease is stale; an unreadable token matches nothing
            seen.add(lease)
            final = outcome.kind != "retry" and outcome.kind != "release"
            if final and outcome.task_id not in conflicted:
                finals += _final_parameters(outcome, seq, now)
                sizes.append(len(outcome.value or b"") + len(outcome.error or "") + len(outcome.traceback or ""))
                in_set.append((index, seq, outcome.task_id))
            else:
                singles.append((index, outcome, seq))
        runs = list(_byte_runs(sizes, _FINAL_ROWS_PER_STATEMENT))

        def body(conn: sqlite3.Connection) -> tuple[list[bool], bool, list[str]]:
            accepted = [False] * len(outcomes)
            taken: set[tuple[int, str]] = set()
            for start, end in runs:
                taken.update(_finish_rows(conn, finals[start * _FINAL_COLUMNS : end * _FINAL_COLUMNS]))
            for index, seq, task_id in in_set:
                accepted[index] = (seq, task_id) in taken
            requeued = False
            cancelled_instead: list[str] = []
            for index, outcome, seq in singles:
                fence = (seq, outcome.task_id, outcome.lease_token)
                if outcome.kind == "retry":
                    due = to_us(outcome.retry_at) if outcome.retry_at is not None else now
                    row = conn.execute(_RETRY_SQL, (due, due, outcome.error, *fence)).fetchone()
                    requeued = requeued or row is not None
                elif outcome.kind == "release":
                    started = None if outcome.started_at is None else to_us(outcome.started_at)
                    row = conn.execute(_RELEASE_SQL, (now, started, *fence)).fetchone()
                    requeued = requeued or row is not None
                else:
                    row = _finish_one(conn, outcome, seq, now)
                if row is None and outcome.kind in ("retry", "release"):
                    # its cancel was requested while it ran (or waited here): it ends cancelled, never queued again
                    row = _finish_one(conn, _cancelled_instead(outcome), seq, now)
                    if row is not None:
                        cancelled_instead.append(outcome.task_id)
                accepted[index] = row is not None
            finished = [
                outcome.task_id
                for outcome, ok in zip(outcomes, accepted, strict=True)
                if ok and outcome.kind != "retry" and outcome.kind != "release"
            ]
            return accepted, requeued, finished + cancelled_instead

        return body

    # ----------------------------------------------------------------- cancel

    async def cancel(self, task_id: str) -> bool:
        _task_id(task_id)
        now = self._now_us()

        def body(conn: sqlite3.Connection) -> bool | None:
            row = conn.execute(
                "UPDATE tasks SET status = 'cancelled', due = NULL, finished_at = ?, error = 'cancelled' "
                "WHERE id = ? AND status = 'queued' RETURNING seq",
                (now, task_id),
            ).fetchone()
            if row is not None:
                conn.execute(_ENDED_RESULT_SQL, row)
                return None  # final now: wake result waiters
            cur = conn.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (task_id,))
            return cur.rowcount > 0

        outcome = await self._transaction("cancel", body)
        if outcome is None:
            self._wakeups.wake([("sitq", "result", task_id)])
            return True
        return outcome

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        _task_id(task_id)
        due = to_us(_aware(eta, "eta")) if eta is not None else self._now_us()

        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE tasks SET status = 'queued', eta = ?, due = ?, attempts = 0, lease_expiries = 0, "
                "error = NULL, cancel_requested = 0, lease_token = NULL, worker_id = NULL, "
                "started_at = NULL, finished_at = NULL "
                "WHERE id = ? AND status IN ('failed', 'cancelled')",
                (due, due, task_id),
            )
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM results WHERE task_id = ?", (task_id,))
            return True

        done = await self._transaction("requeue", body)
        if done:
            self._wakeups.wake((WORK_KEY,))
        return done

    # ------------------------------------------------------------------ reads

    async def get_task(self, task_id: str) -> Task | None:
        _task_id(task_id)

        def read(conn: sqlite3.Connection) -> Task | None:
            row = conn.execute(f"{_SELECT_TASK} WHERE id = ?", (task_id,)).fetchone()
            return None if row is None else _row_to_task(row)

        return await self._inline_or_run("get_task", read, write=False)

    async def get_result(self, task_id: str) -> Result | None:
        _task_id(task_id)

        def read(conn: sqlite3.Connection) -> Result | None:
            row = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM results WHERE task_id = ?",
                (task_id,),
            ).fetchone()
            return None if row is None else _row_to_result(row)

        return await self._inline_or_run("get_result", read, write=False)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        status = checks.status_filter(status)
        if queue is not None and not isinstance(queue, str):
            raise ValidationError("queue must be a string or None", parameter="queue", value=queue)
        limit, offset = checks.page(limit, offset)
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if queue is not None:
            clauses.append("queue = ?")
            params.append(queue)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # The page is picked by sorting only the keys (seq, enqueued_at) of the matching rows, and only its rows
        # are read in full: sorting whole rows (payloads too) into the skipped part cost 4x more at deep offsets.
        # There is no index on enqueued_at (one more b-tree for every enqueue to update): each call sorts the
        # matching rows, and an offset is read through (see docs/how-to/sqlite-backend.md).
        sql = (
            f"{_SELECT_TASK} WHERE seq IN (SELECT seq FROM tasks{where} ORDER BY enqueued_at, seq LIMIT ? OFFSET ?) "
            "ORDER BY enqueued_at, seq"
        )
        params += [limit, offset]

        def read(conn: sqlite3.Connection) -> list[Task]:
            # every row read first: a row that cannot be taken must not leave the statement open (it holds a
            # read lock on the table, and the checkpoint at close then fails with 'database table is locked')
            return [_row_to_task(row) for row in conn.execute(sql, params).fetchall()]

        return await self._read_apart("list_tasks", read)

    async def counts(self, *, queue: str | None = None) -> dict[str, int]:
        if queue is not None and not isinstance(queue, str):
            raise ValidationError("queue must be a string or None", parameter="queue", value=queue)

        where, params = ("", ()) if queue is None else (" WHERE queue = ?", (queue,))

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            # one pass counting each status, with no sort (GROUP BY status sorted every row first: 2-3x slower)
            total, *numbers = conn.execute(_COUNTS_SQL + where, params).fetchone()
            if total == sum(numbers):
                return _status_counts(self.path, list(zip(STATUSES, numbers, strict=True)))
            # a row of a status sitq never writes (a damaged row or page): found and named
            rows = conn.execute(f"SELECT status, count(*) FROM tasks{where} GROUP BY status", params).fetchall()
            return _status_counts(self.path, rows)  # all read: a raise there leaves no statement open

        return await self._read_apart("counts", read)

    async def purge(self, *, older_than: datetime | None = None) -> int:
        cutoff = None if older_than is None else to_us(_aware(older_than, "older_than"))
        where = _FINAL_SQL + ("" if cutoff is None else " AND finished_at < ?")
        params: tuple[Any, ...] = () if cutoff is None else (cutoff,)

        # In chunks, each its own transaction: a purge of millions of rows in one took 11-36 s of the
        # file's only write lock (enqueues failed past busy_timeout; heartbeats too, so leases ran out).
        # The oldest rows come first in rowid order, so each chunk's scan stops early.
        # Each chunk goes on from where the last one stopped (seq > last), so the rows a purge keeps (a queued
        # backlog, recent results) are scanned once in all, not once per chunk.
        chunk = f"SELECT seq, id FROM tasks WHERE seq > ? AND {where} ORDER BY seq LIMIT {_PURGE_CHUNK_ROWS}"

        def body(after: int) -> Callable[[sqlite3.Connection], tuple[int, int]]:
            def delete_chunk(conn: sqlite3.Connection) -> tuple[int, int]:
                rows = conn.execute(chunk, (after, *params)).fetchall()
                ids = [(task_id,) for _seq, task_id in rows if type(task_id) is str]
                conn.executemany("DELETE FROM results WHERE task_id = ?", ids)
                if len(ids) < len(rows):  # an id changed by hand (not text, or not UTF-8 text: no str binds it)
                    odd = [(seq,) for seq, task_id in rows if type(task_id) is not str]
                    conn.executemany("DELETE FROM results WHERE task_id = (SELECT id FROM tasks WHERE seq = ?)", odd)
                conn.executemany("DELETE FROM tasks WHERE seq = ?", [(seq,) for seq, _task_id in rows])
                return len(rows), (rows[-1][0] if rows else after)

            return delete_chunk

        deleted, last = 0, 0
        while True:
            count, last = await self._transaction("purge", body(last))  # moved on only once committed
            deleted += count
            if count < _PURGE_CHUNK_ROWS:
                break
        if deleted:
            log.info("purged %d final tasks from %s", deleted, self.path)
        return deleted

    async def next_eta(self, queues: Sequence[str] | None = None) -> datetime | None:
        queue_list = _queues(queues)
        if queue_list == []:
            return None

        def read(conn: sqlite3.Connection) -> int | None:
            # a due that is not a time (a row changed around sitq) is never reached by a claim: not waited for
            dues: list[Any] = []

            def fits(most: int) -> bool:  # the least due of every task, when there are fewer than ``most``
                dues.clear()
                counted = 0
                for where, names in _queue_filters(queue_list):
                    count, due = conn.execute(_MIN_DUE_SCAN_SQL.format(where), (*names, most - counted)).fetchone()
                    counted += count
                    dues.append(due)
                    if counted >= most:
                        return False
                return True

            lanes = _lanes_or_scan(conn, queue_list, fits)
            if lanes is None:  # many shallow lanes: one pass over the index beats a seek per lane
                return min((due for due in dues if _is_time(due)), default=None)
            best: int | None = None
            for queue, priority, due, _seq in lanes:
                if due is None:  # sorts first in the index: the lane's least due is further in
                    due = conn.execute(_MIN_DUE_SQL, (queue, priority)).fetchone()[0]
                if _is_time(due) and (best is None or due < best):
                    best = due
            return best

        best = await self._inline_or_run("next_eta", read, write=False)  # an idle worker asks after each empty reserve
        return None if best is None else from_us(best)

    # ------------------------------------------------------------- wake-ups

    def notify_work(self) -> None:
        super().notify_work()
        self._wakeups.wake_work()

    def notify_results(self, task_ids: Sequence[str]) -> None:
        super().notify_results(task_ids)
        self._wakeups.wake([_result_key(task_id) for task_id in task_ids])

    def _ensure_watcher(self) -> None:
        """Start the change watcher unless one runs (one that died, say it could not open the file, is replaced)."""
        if self.is_memory or (self._watcher is not None and self._watcher.alive):
            return
        with self._lock:
            if (self._watcher is None or not self._watcher.alive) and self._db is not None:
                new_results = NewResults()  # this watcher thread's view of the results table
                self._watcher = Watcher(
                    self.path,
                    self.watch_interval,
                    lambda conn: self._on_change(conn, new_results),
                    self._watcher_idle,
                )

    def _watcher_idle(self, watcher: Watcher) -> bool:
        """Called by the watcher thread after a quiet spell: exit when nobody waits."""
        with self._lock:
            if self._wakeups or self._watcher is not watcher:
                return self._watcher is not watcher
            self._watcher = None
            return True

    def _on_change(self, conn: sqlite3.Connection, new_results: NewResults) -> None:
        """Another connection committed: wake the work waiters and the waiters of results that appeared."""
        if not self._wakeups.waits_beyond(WORK_KEY):
            new_results.forget()
            self._wakeups.wake_work()
        else:
            try:
                task_ids = new_results.scan(conn)
            except sqlite3.Error as exc:  # e.g. busy during recovery: wake everybody to re-check
                log.debug("reading new results failed: %s", exc)
                task_ids = None
            if task_ids is None:
                self._wakeups.wake_all()
            else:
                self._wakeups.wake([WORK_KEY, *(_result_key(task_id) for task_id in task_ids)])
        super().notify_work()

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be due (this or another process), or after ``timeout`` seconds."""
        entry = self._wakeups.register(WORK_KEY)
        try:
            mark = take_mark(self)
            if mark is not None and mark != self._wakeups.work_seq:
                return  # something was enqueued (or the watcher saw a commit) since this caller's reserve began
            await self._ensure()
            self._ensure_watcher()
            await Wakeups.wait(entry, None if timeout is None else max(0.0, timeout))
        finally:
            self._wakeups.unregister(WORK_KEY, entry)

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        """The result as soon as it is stored by any process; None after ``timeout`` seconds."""
        _task_id(task_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, timeout)
        key = _result_key(task_id)
        pauses = safety_pauses(_RECHECK_FIRST, _RECHECK_MAX, loop.time)
        locked_before = False
        while True:
            entry = self._wakeups.register(key)
            try:
                try:
                    result = await self.get_result(task_id)
                except BackendError as exc:
                    # a lock held elsewhere past busy_timeout (a rollback journal mode, a maintenance
                    # script): the result is not readable yet; wait on, within the caller's timeout
                    if not isinstance(exc.__cause__, _Busy | _Closing):  # closed: re-checked on a new connection
                        raise
                    if not locked_before:
                        log.warning("waiting for the result of %s: %s; still waiting", task_id, exc)
                    locked_before, result = True, None
                if result is not None:
                    return result
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                self._ensure_watcher()
                pause = next(pauses)  # the re-check is only a safety net: wake-ups normally come first
                await Wakeups.wait(entry, pause if remaining is None else min(remaining, pause))
            finally:
                self._wakeups.unregister(key, entry)


# ---------------------------------------------------------------- helpers

# A result waiter re-checks on its own after 1 s, then 2 s, 4 s, ... at most every 5 s.
_RECHECK_FIRST = 1.0
_RECHECK_MAX = 5.0


def _result_key(task_id: str) -> tuple[str, str, str]:
    """The wake-up key of the waiters for ``task_id``'s result."""
    return ("sitq", "result", task_id)


def _configured(cls: type[SQLiteBackend], path: str, options: dict[str, Any]) -> SQLiteBackend:
    """A new, unconnected backend of ``cls`` with the given configuration (see ``SQLiteBackend.__reduce__``)."""
    backend = cls.__new__(cls)
    SQLiteBackend.__init__(backend, path, **options)
    return backend


def _checkpoint(conn: sqlite3.Connection) -> None:
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if row is not None and row[0]:
        log.debug("checkpoint at close was incomplete (another connection is reading)")


_is_busy = is_busy
# Argument checks shared with every backend (sitq_core.checks).
_aware = checks.aware
_lease_pairs = checks.lease_pairs
_queues = checks.queue_names
_task_id = checks.task_id
_check_outcomes = checks.check_outcomes


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (asyncio warns about unretrieved ones)."""
    if not future.cancelled():
        future.exception()
