"""The connection side of ``SQLiteBackend``: its configuration, connect and close, and running jobs.

``_Connections`` holds the backend's state and everything between a call and
the database file: opening the file (and refusing one sitq cannot use, with
the reason), the connection thread, the read-only reader thread of the admin
reads, the inline connections of short calls, fork handling, the check that
the file at the path is still the one opened, and ``_retrying`` /
``_settle``, which wait out another connection's lock within
``busy_timeout`` and map SQLite's errors to sitq's. ``SQLiteBackend``
(backend.py) adds the storage operations on top.
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
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from pathlib import Path
from typing import Any, TypeVar

from sitq_core import forks
from sitq_core.backend import Backend, Capability, connecting_to_read_only
from sitq_core.checks import aware as _aware
from sitq_core.errors import BackendError, ConnectionError, SitqError, StoreGoneError, ValidationError

from .access import may, write_blockers
from .binding import register_fast_adapters
from .busy import _Busy, _BusyBudget, _Closing, _is_closed
from .dbthread import ConnectionClosedForFork, DbThread, DbThreadStopped, closing_here
from .groupcommit import GroupCommit
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
    _open_files_hint,
    _path_hint,
    _read_only_hint,
    _reader_hint,
)
from .inline import Fallback, InlinePath, is_busy, write_transaction
from .inserts import _ROW_LIMIT
from .options import MEMORY, _choice, _integer, _number, _validate_path
from .probes import _CannotWrite, _holds_sitq_tables, _idle_snapshot, _probe_write
from .schema import (
    SCHEMA_VERSION,
    ForeignSchemaError,
    SchemaTooNewError,
    SchemaVersionUnknownError,
    check_not_foreign,
    create_schema,
    missing_indexes,
    to_us,
)
from .undecodable import read_tolerantly
from .watcher import Wakeups, Watcher, _file_identity, _known_identity, file_opened_again, report_file_gone

log = logging.getLogger("sitq.sqlite")

T = TypeVar("T")

JOURNAL_MODES = ("WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY")
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# sitq's own statements store only statuses it checked (literals in the SQL, ``queued`` for new rows, outcome
# kinds checked by checks.check_outcomes); the schema's CHECK on ``status`` stays for every other writer. SQLite
# evaluates that ``IN (...)`` list through a temporary b-tree made for each row written (about 11,000 instructions,
# a third of inserting a ``tasks`` row), and again for each claim and finish that changes ``status``.
_OWN_WRITES_UNCHECKED = "PRAGMA ignore_check_constraints = ON"
_busy_clock: Callable[[], float] = time.monotonic  # the clock busy_timeout is counted with (tests control it)
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a WAL file is cut back to when it restarts
_YIELD_AFTER = 0.005  # seconds of back-to-back inline calls before the event loop gets a turn
_STREAK_GAP = 0.001  # a pause this long between inline calls starts a new streak
# Seconds between checks, on the write paths, that the file at the path is still the one opened (_check_file):
# a stat costs ~2 µs, a clock read 0.1 µs, so a loop of enqueues pays the clock read and a stat per 0.1 s.
_FILE_CHECK_INTERVAL = 0.1


class _ConnectAbandoned(Exception):
    """The caller that was connecting was cancelled: the callers waiting for it try again."""


class _OtherFile(Exception):
    """The reader's connection opened another file than the one connected to (the file was deleted or replaced)."""


def _checkpoint(conn: sqlite3.Connection) -> None:
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if row is not None and row[0]:
        log.debug("checkpoint at close was incomplete (another connection is reading)")


_is_busy = is_busy


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (asyncio warns about unretrieved ones)."""
    if not future.cancelled():
        future.exception()


class _Connections(Backend):
    """``SQLiteBackend``'s constructor and state, connect and close, and the plumbing every operation runs through.

    Only ``SQLiteBackend`` subclasses it; its docstring says what the
    constructor's options mean.
    """

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
                    operation="connect",
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
            refusal = self._schema_refusal(exc)
            if refusal is not None:
                raise ConnectionError(
                    f"SQLite database {self.path!r} {refusal}",
                    backend_type="sqlite",
                    operation="connect",
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
                    operation="connect",
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
        elif _is_corrupt(exc):
            hint = _DAMAGED_HINT
        elif reading:
            hint = _reader_hint(self.path, exc)
        else:
            hint = _read_only_hint(self.path) or _disk_full_hint(self.path, exc)
        hint = hint or _path_hint(self.path) or _open_files_hint(exc)
        return ConnectionError(
            f"cannot {'read' if reading else 'open'} SQLite database {self.path!r}: {exc}{hint}",
            backend_type="sqlite",
            operation="connect",
            connection_details=self.path,
            cause=exc,
        )

    @staticmethod
    def _schema_refusal(exc: BaseException) -> str | None:
        """What a setup refused for the file's schema says after the path (None: not such a refusal)."""
        if isinstance(exc, ForeignSchemaError):
            advice = (
                "put back what sitq needs (the schema is in docs/how-to/sqlite-backend.md) or restore a backup; "
                "columns of your own are fine where an insert may leave them out"
                if exc.changes
                else "use a file of its own for sitq"
            )
            return f"{exc.describe()}; {advice} (nothing in this one was changed)"
        if isinstance(exc, SchemaTooNewError):
            return (
                f"has schema version {exc.found}, newer than this sitq-sqlite understands ({SCHEMA_VERSION}); "
                "upgrade sitq-sqlite"
            )
        if isinstance(exc, SchemaVersionUnknownError):
            return (
                f"has schema version {exc.found} (PRAGMA user_version), which no sitq-sqlite writes (this one writes "
                f"{SCHEMA_VERSION}; 0 is a file restored from a dump); set it back (PRAGMA user_version = "
                f"{SCHEMA_VERSION}, when its tables were made by this sitq-sqlite) or restore a backup (nothing in "
                "this one was changed)"
            )
        return None

    def _cannot_write(self, exc: BaseException | None, causes: list[str]) -> ConnectionError:
        """A writing connect refused: the file can be read but not written, and ``causes`` say why (when known)."""
        why = "; ".join(causes) or _UNKNOWN_WRITE_BLOCKER
        return ConnectionError(
            f"SQLite database {self.path!r} can be read but not written by this process: {why}"
            + ("" if exc is None else f" (SQLite: {exc})")
            + "; workers and producers write the file and keep its -wal and -shm files beside it (sitq stats only "
            "reads it)",
            backend_type="sqlite",
            operation="connect",
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
                f"cannot read SQLite database {self.path!r}: {exc}"
                f"{_DAMAGED_HINT if _is_corrupt(exc) else _reader_hint(self.path, exc)}",
                backend_type="sqlite",
                operation="exists",
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
            hint = _open_files_hint(exc) or _disk_full_hint(self.path, exc)
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
