"""A task's lease in the tasks table: the claim, the fenced finish, and the endings the store writes itself.

A claim sets a batch's rows running under lease tokens (a random prefix plus
the row's seq in hex, so an outcome names its row without an index on the
token). Outcomes are written by set-based statements whose WHERE is the
fence: same seq, same id, same token, still running; a stale lease changes
nothing. A row whose lease expired too often, whose cancel was asked while
its worker was gone, or which cannot be read is ended by the store, with a
result saying why. ``_Leases``, a base class of ``SQLiteBackend``, runs
them: ``reserve``, ``heartbeat``, ``finish_many`` and ``finish_and_reserve``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any

from sitq_core import checks, store_endings
from sitq_core.checks import check_outcomes as _check_outcomes
from sitq_core.checks import lease_pairs as _lease_pairs
from sitq_core.checks import queue_names as _queues
from sitq_core.errors import SitqError, ValidationError
from sitq_core.models import LEASE_EXPIRED_ERROR, LeaseState, Outcome, ReservedTask
from sitq_core.notify import record_mark

from .claims import _MAX_VARIABLES, _claim_candidates, _expired_too_often, _work_due
from .connections import _Connections
from .inserts import _ROW_LIMIT, _byte_runs
from .rows import _MAX_US, _MIN_US, _RowProblems, _task_of_row
from .schema import TASK_COLUMNS, from_us, to_us
from .watcher import WORK_KEY, _result_key

log = logging.getLogger("sitq.sqlite")

_INLINE_CLAIM_MAX = 32  # reserves asking for more claim on the connection thread (the loop stays free)

# Set-based statements: one statement (one sqlite3_step, one GIL release) per chunk of rows instead
# of one per row; with the worker's other threads wanting the GIL, per-row steps cost twice as much.
# Claim: the lease token is the batch's random prefix plus the row's seq in hex (unique per claim);
# a row whose previous lease expired (still 'running') counts one more lease expiry, and says so in its error.
_LEASE_EXPIRED_SQL = "'" + LEASE_EXPIRED_ERROR.replace("'", "''") + "'"
_CLAIM_UPDATE = (
    "UPDATE tasks SET status = 'running', worker_id = ?, lease_token = ? || printf('%x', seq), due = ?, "
    "attempts = attempts + 1, lease_expiries = lease_expiries + (status = 'running'), started_at = ?, "
    f"error = CASE WHEN status = 'running' THEN {_LEASE_EXPIRED_SQL} ELSE error END "
    "WHERE seq IN ({}) RETURNING seq, "
)
_CLAIM_SQL_SET = _CLAIM_UPDATE + TASK_COLUMNS
# A claim of one task that does not return its payload, read next by a SELECT (see _reserve_singly).
_CLAIM_ONE_SQL = _CLAIM_UPDATE.format("?") + TASK_COLUMNS.replace("payload", "NULL", 1)
_PAYLOAD_SQL = "SELECT payload FROM tasks WHERE seq = ?"
_TAKING_SQL = "SELECT seq, id, function_name, length(payload) FROM tasks WHERE seq = ?"  # the payload not loaded
# A task that does not fit in this process's memory is passed over by its claims this long, then tried again.
_PASS_OVER_US = 60_000_000
# Finish: the final rows as a VALUES table; a row counts only while its lease (seq + token) still holds.
_FINAL_COLUMNS = 9
_FINAL_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_FINAL_VALUES = "WITH v(seq, id, token, kind, finished_at, error, started_at, value, traceback) AS (VALUES {}) "
_FENCE = "t.seq = v.seq AND t.id = v.id AND t.lease_token = v.token AND t.status = 'running'"
# The result first (it reads the task row while its lease is still there), then the task row.
_RESULTS_SQL_SET = (
    _FINAL_VALUES + "INSERT OR REPLACE INTO results (task_id, id, status, value, error, traceback, enqueued_at, "
    "started_at, finished_at, attempts, serializer) SELECT t.id, t.id, v.kind, v.value, v.error, v.traceback, "
    "t.enqueued_at, coalesce(v.started_at, t.started_at), v.finished_at, t.attempts, t.serializer "
    f"FROM v JOIN tasks AS t ON {_FENCE}"
)
_FINISH_SQL_SET = (
    _FINAL_VALUES + "UPDATE tasks AS t SET status = v.kind, due = NULL, lease_token = NULL, "
    "finished_at = v.finished_at, error = v.error, started_at = coalesce(v.started_at, t.started_at) "
    f"FROM v WHERE {_FENCE} RETURNING seq, id"
)
_RETRY_SQL = (  # not for a task whose cancel was requested: it ends cancelled instead (_cancelled_instead)
    "UPDATE tasks SET status = 'queued', eta = ?, due = ?, error = ?, lease_token = NULL "
    "WHERE seq = ? AND id = ? AND lease_token = ? AND status = 'running' AND cancel_requested = 0 RETURNING seq"
)
# Plain ? placeholders only, a value used twice bound twice: numbered ones (?1) bound from a tuple warn on Python
# 3.12.0-3.12.3 (python/cpython#117995), an error under -W error (see tests/sqlite/test_sqlite_placeholders.py).
_RELEASE_SQL = (  # a first attempt given back unstarted (no started_at) says so again: no start, no worker
    # parameters: now, started (three times), seq, id, lease token
    "UPDATE tasks SET status = 'queued', due = min(eta, ?), lease_token = NULL, attempts = max(attempts - 1, 0), "
    "started_at = CASE WHEN ? IS NOT NULL THEN ? WHEN attempts <= 1 THEN NULL ELSE started_at END, "
    "worker_id = CASE WHEN ? IS NULL AND attempts <= 1 THEN NULL ELSE worker_id END "
    "WHERE seq = ? AND id = ? AND lease_token = ? AND status = 'running' AND cancel_requested = 0 RETURNING seq"
)
_FINAL_ROWS_PER_STATEMENT = _MAX_VARIABLES // _FINAL_COLUMNS
_TOKEN_BYTES = 16  # a lease token: 128 random bits as 32 hex characters
_SEQ_HEX = re.compile(r"[0-9a-f]{1,16}")  # the seq part of a lease token (a SQLite rowid fits in 16)


def _lease_us(lease_seconds: Any) -> int:
    return max(1, round(checks.lease_seconds(lease_seconds) * 1_000_000))


_Claim = tuple[Sequence[Any], str, int]  # (task row as updated by the claim, lease token, lease expiry us)


def _end_expired(conn: sqlite3.Connection, seq: int, now: int, *, cancelled: bool) -> list[str]:
    """End a task whose lease expired instead of handing it out again, with a result saying why.

    ``cancelled``: a cancel was requested while it ran (its worker is gone, so
    nobody will report it); otherwise its lease expired ``max_lease_expiries``
    times (a poison pill): failed. Returns its id, or nothing when the id is
    not text that can be read (no one can ask for it by that id).
    """
    status, error = ("cancelled", "'cancelled'") if cancelled else ("failed", _POISON_ERROR)
    row = conn.execute(
        f"UPDATE tasks SET status = '{status}', due = NULL, lease_token = NULL, finished_at = ?, "
        f"error = {error}, lease_expiries = lease_expiries + 1 WHERE seq = ? "
        "RETURNING id, error, attempts, function_name",
        (now, seq),
    ).fetchone()
    task_id, error_text, attempts, function_name = row
    conn.execute(_ENDED_RESULT_SQL, (seq,))
    shown = checks.one_log_line(function_name) if isinstance(function_name, str) else repr(function_name)
    if cancelled:
        log.info("task %s (%s) cancelled (its worker is gone)", task_id, shown)
    else:  # as the worker logs a final failure: id, function, attempts and error
        log.warning("task %s (%s) failed after %s attempt(s): %s", task_id, shown, attempts, error_text)
    return [task_id] if type(task_id) is str else []


def _end_instead(conn: sqlite3.Connection, candidate: Sequence[Any], now: int) -> list[str] | None:
    """End a claim candidate the store ends itself instead of handing it out; None for one to claim.

    Returns the ids ended (see :func:`_end_expired`): a task cancelled while
    its worker was gone, one queued with its cancel requested, one whose
    lease expired ``max_lease_expiries`` times.
    """
    seq, _due, status, expiries, max_expiries, cancel_requested = candidate
    if cancel_requested and status == "running":  # cancelled while its worker was gone
        return _end_expired(conn, seq, now, cancelled=True)
    if cancel_requested:  # queued with its cancel requested (by older sitq): never run again
        return _end_cancelled_queued(conn, seq, now)
    if status == "running" and _expired_too_often(expiries, max_expiries):
        return _end_expired(conn, seq, now, cancelled=False)
    return None


class _ClaimOutOfMemory(MemoryError):
    """A claim of several tasks ran out of memory (a big payload): ``reserve`` claims again one task at a time."""


def _end_cancelled_queued(conn: sqlite3.Connection, seq: int, now: int) -> list[str]:
    """End a queued task that carries a cancel request instead of handing it out, as ``cancel()`` ends one.

    sitq before its cancel rule queued a task again on a retry or give-back
    of an attempt whose cancel was requested, leaving ``cancel_requested``
    set (so can an old worker still running during a rolling deploy). The
    cancel was accepted, so the task never runs again: ``cancelled``, with
    its attempts as they are. Returns its id, as :func:`_end_expired` does.
    """
    row = conn.execute(
        "UPDATE tasks SET status = 'cancelled', due = NULL, lease_token = NULL, finished_at = ?, "
        "error = 'cancelled' WHERE seq = ? RETURNING id, function_name",
        (now, seq),
    ).fetchone()
    task_id, function_name = row
    conn.execute(_ENDED_RESULT_SQL, (seq,))
    shown = checks.one_log_line(function_name) if isinstance(function_name, str) else repr(function_name)
    log.info("task %s (%s) cancelled without running again (its cancel was requested before)", task_id, shown)
    return [task_id] if type(task_id) is str else []


# The result of a task row just ended by the store itself (an expired lease, a cancel): copied by SQLite, so
# that a value Python cannot read or bind back (text that is not UTF-8) is kept as stored.
_ENDED_RESULT_SQL = (
    "INSERT OR REPLACE INTO results (task_id, id, status, value, error, traceback, enqueued_at, started_at, "
    "finished_at, attempts, serializer) SELECT id, id, status, NULL, error, NULL, enqueued_at, started_at, "
    "finished_at, attempts, serializer FROM tasks WHERE seq = ?"
)


_POISON_ERROR = "'lease expired after ' || attempts || ' attempts'"


def _leases(claims: list[_Claim]) -> tuple[list[ReservedTask], list[_UnreadableClaim]]:
    """ReservedTasks for claimed rows (built after COMMIT, outside the write lock), and the rows that cannot be.

    Each row is converted on its own: one holding a value of the wrong type
    (written around sitq: SQLite columns take any type) must not cost the
    other tasks of its batch their run. The caller ends those failed.
    """
    if not claims:
        return [], []
    leases: list[ReservedTask] = []
    unreadable: list[_UnreadableClaim] = []
    for row, token, expires in claims:
        try:
            task = _task_of_row(row)
        except _RowProblems as problems:
            unreadable.append((token, row[0], str(problems), "serializer" not in problems.columns))
            continue
        leases.append(ReservedTask(task=task, lease_token=token, lease_expires_at=from_us(expires)))
    return leases, unreadable


# (lease token, the row's id as stored, why it cannot be read, whether its serializer can be read)
_UnreadableClaim = tuple[str, Any, str, bool]

# A claimed row that cannot be read ends failed, fenced by its lease (seq and token, still running). Its result
# copies only what reads back (an unreadable enqueued_at is left NULL, a serializer that is not UTF-8 text empty),
# so that the result itself can be read.
_UNREADABLE_RESULT_SQL = (  # parameters: error, least and greatest time, now, serializer read, seq, lease token
    "INSERT OR REPLACE INTO results (task_id, id, status, value, error, traceback, enqueued_at, started_at, "
    "finished_at, attempts, serializer) SELECT id, id, 'failed', NULL, ?, NULL, "
    "CASE WHEN typeof(enqueued_at) = 'integer' AND enqueued_at BETWEEN ? AND ? THEN enqueued_at END, "
    "started_at, ?, CASE WHEN typeof(attempts) = 'integer' THEN attempts ELSE 0 END, "
    "CASE WHEN ? AND typeof(serializer) = 'text' THEN serializer ELSE '' END "
    "FROM tasks WHERE seq = ? AND lease_token = ? AND status = 'running'"
)
_UNREADABLE_FINISH_SQL = (  # parameters: now, error, seq, lease token
    "UPDATE tasks SET status = 'failed', due = NULL, lease_token = NULL, finished_at = ?, error = ? "
    "WHERE seq = ? AND lease_token = ? AND status = 'running' RETURNING id"
)


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _finish_one(conn: sqlite3.Connection, outcome: Outcome, seq: int, now: int) -> Any:
    """One final outcome, fenced: its result row, then its task row; the task's row, or None when refused."""
    return _finish_rows(conn, _final_parameters(outcome, seq, now)).fetchone()


def _finish_rows(conn: sqlite3.Connection, parameters: Sequence[Any]) -> sqlite3.Cursor:
    """The set-based finish of final rows (``_FINAL_COLUMNS`` parameters each): their result rows, then their
    task rows; a cursor over the (seq, id) of the rows accepted."""
    rows = len(parameters) // _FINAL_COLUMNS
    values = _FINAL_ROW if rows == 1 else ",".join([_FINAL_ROW] * rows)
    conn.execute(_RESULTS_SQL_SET.format(values), parameters)
    if rows == 1:  # the UPDATE reads neither value nor traceback: its cached statement keeps no copy of big ones
        parameters = (*parameters[:7], None, None)
    return conn.execute(_FINISH_SQL_SET.format(values), parameters)


def _cancelled_instead(outcome: Outcome) -> Outcome:
    """A retry or release of a task whose cancel was requested, as the cancelled outcome it becomes."""
    return Outcome(
        outcome.task_id,
        outcome.lease_token,
        "cancelled",
        error="cancelled",
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
    )


#: The status each final outcome kind stores, as literals (the kinds were checked by checks.check_outcomes).
_FINAL_STATUS = {kind: kind for kind in ("success", "failed", "cancelled")}


def _final_parameters(outcome: Outcome, seq: int, now: int) -> tuple[Any, ...]:
    """One VALUES row of the set-based finish statements."""
    finished_at = to_us(outcome.finished_at) if outcome.finished_at is not None else now
    return (
        seq,
        outcome.task_id,
        outcome.lease_token,
        _FINAL_STATUS[outcome.kind],  # a literal: the status CHECK is off on sitq's connections
        finished_at,
        outcome.error,
        _opt_us(outcome.started_at),
        outcome.value,
        outcome.traceback,
    )


def _token_seq(token: str) -> int | None:
    """The task row (seq) a lease token names: _TOKEN_BYTES random bytes in hex, then the seq in hex."""
    if not isinstance(token, str) or _SEQ_HEX.fullmatch(token, 2 * _TOKEN_BYTES) is None:
        return None
    return int(token[2 * _TOKEN_BYTES :], 16)


class _Leases(_Connections):
    """``SQLiteBackend``'s lease operations: reserve, heartbeat, finish_many and finish_and_reserve."""

    # rows this backend's claims pass over until a time (store µs): their payloads did not fit in memory.
    # Replaced, never changed in place (the class's stays empty), and only by _pass_over, on the event loop's
    # thread: a claim body on the connection thread only reads it (one writer: no entry lost to a race).
    _passed_over: dict[int, int] = {}
    _warned_unfit: frozenset[int] = frozenset()  # rows already warned of (once each); written as _passed_over

    async def reserve(
        self,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> list[ReservedTask]:
        lease_us, queue_list = _claim_arguments(worker_id, limit, lease_seconds, queues)
        if queue_list == []:
            return []
        record_mark(self, self._wakeups.work_seq)
        # also when nothing is due: an idle worker on a deleted file would wait for work that only the file
        # now at the path receives, and never hear of it (a stat at most every _FILE_CHECK_INTERVAL)
        self._check_file()
        try:
            return await self._reserve_batch(worker_id, limit, lease_us, queue_list)
        except _ClaimOutOfMemory:
            return await self._reserve_singly(worker_id, limit, lease_us, queue_list)

    async def _reserve_batch(
        self, worker_id: str, limit: int, lease_us: int, queue_list: list[str] | None
    ) -> list[ReservedTask]:
        """``reserve``'s claim of up to ``limit`` tasks in one transaction (the usual one)."""
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
                conn.execute(_UNREADABLE_RESULT_SQL, (error, _MIN_US, _MAX_US, now, serializer_read, seq, token))
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
            passed_over = self._passed_over_at(now)
            while len(handed) < limit:
                candidates = _claim_candidates(conn, queue_list, now, limit - len(handed) + len(passed_over))
                if passed_over:
                    candidates = [row for row in candidates if row[0] not in passed_over][: limit - len(handed)]
                if not candidates:
                    break
                claimed: list[int] = []
                ended = 0
                for candidate in candidates:
                    try:  # ending a row rewrites it whole, payload and all, as a claim does
                        ended_now = _end_instead(conn, candidate, now)
                    except MemoryError as exc:
                        raise _ClaimOutOfMemory from exc
                    if ended_now is None:
                        claimed.append(candidate[0])
                    else:
                        ended_ids.extend(ended_now)
                        ended += 1
                prefix = os.urandom(_TOKEN_BYTES).hex()  # this batch's lease tokens: prefix + seq in hex
                expires = now + lease_us
                order = {seq: position for position, seq in enumerate(claimed)}
                rows: list[tuple[Any, ...]] = []
                per = _MAX_VARIABLES - 4  # four leading parameters, then the seqs
                for start in range(0, len(claimed), per):
                    chunk = claimed[start : start + per]
                    sql = _CLAIM_SQL_SET.format(",".join("?" * len(chunk)))
                    try:
                        rows += conn.execute(sql, (worker_id, prefix, expires, now, *chunk))
                    except MemoryError as exc:  # SQLite rolled the transaction back (or the caller will)
                        raise _ClaimOutOfMemory from exc
                rows.sort(key=lambda row: order[row[0]])  # RETURNING order is unspecified; keep the claim order
                handed += [(row[1:], f"{prefix}{row[0]:x}", expires) for row in rows]
                if not ended:
                    break
            return handed

        return body, ended_ids

    def _passed_over_at(self, now: int) -> dict[int, int]:
        """The rows this backend's claims pass over at ``now`` (payloads that did not fit in its memory), with
        the time each is passed over until. Read only: called from the connection thread too."""
        passed_over = self._passed_over  # one read: _pass_over may replace it meanwhile
        if not passed_over:
            return {}
        return {seq: until for seq, until in passed_over.items() if until > now}

    async def _reserve_singly(
        self, worker_id: str, limit: int, lease_us: int, queue_list: list[str] | None
    ) -> list[ReservedTask]:
        """Claim up to ``limit`` tasks one at a time, after a claim of several ran out of memory.

        A claim returning the payloads of a batch holds several copies of each
        in memory at once (SQLite buffers the rows it returns: about seven
        times a 100 MB payload); a claim of one task that reads its payload by
        a SELECT afterwards needs about twice it (SQLite rewrites a whole row
        to change it). So a task whose payload is too big for the memory left
        costs the tasks claimed with it nothing: they go out as usual. That
        task, when its own claim runs out of memory too, stays queued for a
        worker with more memory, and this backend's claims pass over it for
        ``_PASS_OVER_US`` (then try again: memory held by the tasks running
        here now may be free by then). It cannot end failed here: changing its
        row needs the same memory. So is a row the store would end itself
        (its lease expired too often, its cancel was requested) when ending
        it runs out of memory: it is left as it is and passed over.
        """
        leases: list[ReservedTask] = []
        while len(leases) < limit:
            # (seq, id, function name, payload size) of the row the claim takes, then what it does to it
            taking: list[Any] = []
            body = self._claim_one_body(worker_id, lease_us, queue_list, taking)
            try:
                found = await self._run("reserve", functools.partial(self._write_lease, body=body))
            except MemoryError:
                if not taking:
                    raise
                if leases:  # this one is tried again on its own once these are out
                    break
                self._pass_over(*taking)
                continue
            if found is None:
                break
            claims, ended = found
            await self._report_store_endings(ended)
            leases += await self._handed_out(claims)
        return leases

    def _claim_one_body(
        self, worker_id: str, lease_us: int, queue_list: list[str] | None, taking: list[Any]
    ) -> Callable[[sqlite3.Connection], tuple[list[_Claim], list[str]] | None]:
        """One task's claim, its payload read by a SELECT of its own; None when nothing is due.

        ``taking`` gets the row's (seq, id, function name, payload size),
        read without loading the payload, before the claim that may run out
        of memory.
        """

        def body(conn: sqlite3.Connection) -> tuple[list[_Claim], list[str]] | None:
            taking.clear()
            now = self._now_us()
            passed_over = self._passed_over_at(now)
            candidates = _claim_candidates(conn, queue_list, now, 1 + len(passed_over))
            candidates = [row for row in candidates if row[0] not in passed_over]
            if not candidates:
                return None
            seq = candidates[0][0]
            taking.extend(conn.execute(_TAKING_SQL, (seq,)).fetchone())
            taking.append("ending it")
            ended = _end_instead(conn, candidates[0], now)
            if ended is not None:
                return [], ended
            taking[-1] = "claiming it"
            prefix = os.urandom(_TOKEN_BYTES).hex()
            expires = now + lease_us
            row = conn.execute(_CLAIM_ONE_SQL, (worker_id, prefix, expires, now, seq)).fetchone()
            payload = conn.execute(_PAYLOAD_SQL, (seq,)).fetchone()[0]
            return [((row[1], payload, *row[3:]), f"{prefix}{seq:x}", expires)], []

        return body

    def _pass_over(self, seq: int, task_id: Any, function_name: Any, size: Any, doing: str) -> None:
        """Leave a task as it is whose claim (or the store's ending of it) ran out of memory, and pass over it
        for a while; say so once. On the event loop's thread only (see ``_passed_over``)."""
        now = self._now_us()
        passed_over = self._passed_over_at(now)
        first = seq not in passed_over and seq not in self._warned_unfit
        self._passed_over = {**passed_over, seq: now + _PASS_OVER_US}
        shown = checks.one_log_line(function_name) if isinstance(function_name, str) else repr(function_name)
        if first:
            self._warned_unfit = self._warned_unfit | {seq}
        if doing == "claiming it":
            left, others = "left queued", "a worker with more memory can run it, or cancel it"
        else:  # its lease expired too often, or its cancel was requested: the store ends it, not a run
            left, others = "left as it is", "a worker with more memory ends it"
        (log.warning if first else log.debug)(
            "task %s (%s) %s: its payload (%s bytes) does not fit in this process's memory "
            "(MemoryError %s; changing its row rewrites it whole, which takes about twice the payload). "
            "This worker passes over it for %d s and then tries again; %s",
            task_id,
            shown,
            left,
            size,
            doing,
            _PASS_OVER_US // 1_000_000,
            others,
        )

    async def _report_store_endings(self, task_ids: list[str]) -> None:
        """Wake this process's waiters for tasks a reserve ended itself, and tell lifecycle observers of them."""
        if task_ids:
            self._wakeups.wake([_result_key(task_id) for task_id in task_ids])
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
        lease_us, queue_list = _claim_arguments(worker_id, limit, lease_seconds, queues)
        if queue_list == []:
            return await self.finish_many(outcomes), []
        record_mark(self, self._wakeups.work_seq)
        finish = self._finish_body(outcomes, self._now_us())
        claim, ended = self._reserve_body(worker_id, limit, lease_us, queue_list)

        def body(conn: sqlite3.Connection) -> tuple[tuple[list[bool], bool, list[str]], list[_Claim]]:
            return finish(conn), claim(conn)

        try:
            (accepted, requeued, finished), claims = await self._run(
                "finish_and_reserve", lambda conn: self._write(conn, body)
            )
        except _ClaimOutOfMemory:  # rolled back, the finish with it: the finish alone, then claims one by one
            accepted = await self.finish_many(outcomes)
            return accepted, await self._reserve_singly(worker_id, limit, lease_us, queue_list)
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
                    row = conn.execute(_RELEASE_SQL, (now, started, started, started, *fence)).fetchone()
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


def _claim_arguments(
    worker_id: Any, limit: Any, lease_seconds: Any, queues: Sequence[str] | None
) -> tuple[int, list[str] | None]:
    """``reserve``'s and ``finish_and_reserve``'s claim arguments checked: the lease in µs and the queue list."""
    if not isinstance(worker_id, str) or not worker_id:
        raise ValidationError("worker_id must be a non-empty string", parameter="worker_id", value=worker_id)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit must be an integer >= 1", parameter="limit", value=limit)
    return _lease_us(lease_seconds), _queues(queues)
