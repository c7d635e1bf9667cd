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

Layout: ``SQLiteBackend`` (here: construction, enqueue, cancel and requeue,
the reads, wake-ups) builds on ``_Leases`` (``leases.py``: reserve,
heartbeat, finish), which builds on ``_Connections`` (``connections.py``:
constructor and state, connect and close, running jobs with busy retries
and error mapping). Their helpers each have a module: ``claims.py`` (the
claim index reads), ``inserts.py`` (task rows and INSERTs), ``rows.py``
(stored rows back to Task and Result), ``hints.py`` (what an error means
for the user), ``busy.py``, ``probes.py`` and ``options.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

from sitq_core import checks
from sitq_core.backend import Capability
from sitq_core.errors import BackendError, ConfigurationError, SitqError, ValidationError
from sitq_core.models import Result, Task
from sitq_core.notify import safety_pauses, take_mark
from sitq_core.textoptions import text_options_converted
from sitq_core.urls import redacted

from .access import others_can_write
from .busy import _Busy, _Closing, _marked_full, _store_failure
from .busy import _BusyBudget as _BusyBudget  # imported from here (tests)
from .claims import _CLAIM_SQL as _CLAIM_SQL  # imported from here (tests)
from .claims import _MIN_DUE_SCAN_SQL, _MIN_DUE_SQL, _lanes_or_scan, _queue_filters
from .connections import JOURNAL_MODES as JOURNAL_MODES  # public names of this module
from .connections import SYNCHRONOUS_MODES as SYNCHRONOUS_MODES
from .connections import _busy_clock, _retrieve
from .feed import InsertFeed
from .groupcommit import GroupCommit, others_ready
from .hints import _disk_full_hint as _disk_full_hint  # imported from here (tests)
from .hints import _read_only_hint as _read_only_hint  # imported from here (tests)
from .inline import Fallback
from .inserts import (
    _FRESH_TAIL,
    _INSERT_FRESH_SQL,
    _batch_id_taken,
    _insert_groups,
    _insert_rows,
    _insert_sql,
    _task_row,
)
from .leases import _ENDED_RESULT_SQL, _Leases
from .newresults import NewResults
from .options import MEMORY as MEMORY  # a public name of this module
from .rows import _RESULT_COLUMNS, _is_time, _row_to_result, _row_to_task, _status_counts
from .schema import TASK_COLUMNS, from_us, to_us
from .watcher import WORK_KEY, Wakeups, Watcher, _result_key

if TYPE_CHECKING:
    from sitq_core.urls import BackendURL

__all__ = ["SQLiteBackend"]

log = logging.getLogger("sitq.sqlite")

DEFAULT_PATH = "sitq.db"
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
# requeue and requeue_many: a failed or cancelled task queued again, its last run forgotten (eta, due bound)
_REQUEUE_SET_SQL = (
    "UPDATE tasks SET status = 'queued', eta = ?, due = ?, attempts = 0, lease_expiries = 0, error = NULL, "
    "cancel_requested = 0, lease_token = NULL, worker_id = NULL, started_at = NULL, finished_at = NULL"
)
_REQUEUE_CHUNK_IDS = 500  # ids per requeue_many statement: under the 999 bound variables of older SQLite builds
_PURGE_CHUNK_ROWS = 2000  # final tasks deleted per purge transaction (the write lock is free in between)
_INLINE_MAX_ROWS = 16  # larger enqueue batches go through the connection thread (the loop stays free)
_FEED_CHUNK_ROWS = 100  # rows per chunk handed to the connection thread by large enqueue_many calls
_STREAM_BUDGET = 0.05  # seconds of building a streamed batch may keep the write lock (projected)


class SQLiteBackend(_Leases):
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
        """The public signature, here so that a call with wrong arguments names ``SQLiteBackend.__init__()``
        (the TypeError named the private base class that checks and keeps them)."""
        super().__init__(
            path,
            journal_mode=journal_mode,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            cache_size_kib=cache_size_kib,
            watch_interval=watch_interval,
        )

    def open_to_others(self) -> str | None:
        """Why users other than this process's may change the database file, or None (always for ``:memory:``).

        A worker that unpickles tasks (cloudpickle) asks this when it starts:
        whoever can write the file can make it run any code (see
        ``docs/explanation/serializers.md``). A few ``stat`` calls (the file, its folder, -wal, -shm).
        """
        if self.is_memory:
            return None
        causes = others_can_write(self.path)
        if not causes:
            return None
        return f"SQLite database {self.path!r} can be changed by other users: {'; '.join(causes)}"

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    def _failed(self, operation: str, exc: sqlite3.Error) -> SitqError:
        """The error for a failed call, a ``StoreFullError`` when the disk had no room for it (``_marked_full``)."""
        return _marked_full(super()._failed(operation, exc), exc, self.path, memory=self.is_memory)

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

    # --------------------------------------------------------- cancel, requeue

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
                f"{_REQUEUE_SET_SQL} WHERE id = ? AND status IN ('failed', 'cancelled')", (due, due, task_id)
            )
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM results WHERE task_id = ?", (task_id,))
            return True

        done = await self._transaction("requeue", body)
        if done:
            self._wakeups.wake((WORK_KEY,))
        return done

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        """Every id in one write transaction (chunked statements), and one wake-up: see ``Backend.requeue_many``."""
        ids = checks.task_ids(task_ids)
        when = checks.aware_or_none(eta, "eta")
        if not ids:
            return []
        due = to_us(when) if when is not None else self._now_us()
        distinct = list(dict.fromkeys(ids))  # a repeated id is answered below: True in its first place only

        def body(conn: sqlite3.Connection) -> set[str]:
            requeued: set[str] = set()
            for start in range(0, len(distinct), _REQUEUE_CHUNK_IDS):
                chunk = distinct[start : start + _REQUEUE_CHUNK_IDS]
                rows = conn.execute(
                    f"{_REQUEUE_SET_SQL} WHERE id IN ({', '.join('?' * len(chunk))}) "
                    "AND status IN ('failed', 'cancelled') RETURNING id",
                    (due, due, *chunk),
                ).fetchall()
                done = [row[0] for row in rows]
                if done:
                    conn.execute(f"DELETE FROM results WHERE task_id IN ({', '.join('?' * len(done))})", done)
                requeued.update(done)
            return requeued

        requeued = await self._transaction("requeue", body)
        if requeued:
            self._wakeups.wake((WORK_KEY,))
        answers: list[bool] = []
        for task_id in ids:
            answers.append(task_id in requeued)
            requeued.discard(task_id)
        return answers

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
        if best is not None and self._passed_over:
            now = self._now_us()
            passed_over = self._passed_over_at(now)
            if best <= now and passed_over:  # most likely the row passed over: not before it is due
                best = min(passed_over.values())
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


def _configured(cls: type[SQLiteBackend], path: str, options: dict[str, Any]) -> SQLiteBackend:
    """A new, unconnected backend of ``cls`` with the given configuration (see ``SQLiteBackend.__reduce__``)."""
    backend = cls.__new__(cls)
    SQLiteBackend.__init__(backend, path, **options)
    return backend


# Argument checks shared with every backend (sitq_core.checks).
_aware = checks.aware
_lease_pairs = checks.lease_pairs
_queues = checks.queue_names
_task_id = checks.task_id
_check_outcomes = checks.check_outcomes
