"""A task's lease in the tasks table: the claim, the fenced finish, and the endings the store writes itself.

A claim sets a batch's rows running under lease tokens (a random prefix plus
the row's seq in hex, so an outcome names its row without an index on the
token). Outcomes are written by set-based statements whose WHERE is the
fence: same seq, same id, same token, still running; a stale lease changes
nothing. A row whose lease expired too often, whose cancel was asked while
its worker was gone, or which cannot be read is ended by the store, with a
result saying why. The transactions around these statements are the
backend's.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sitq_core import checks
from sitq_core.models import LEASE_EXPIRED_ERROR, Outcome, ReservedTask

from .claims import _MAX_VARIABLES
from .rows import _RowProblems, _task_of_row
from .schema import TASK_COLUMNS, from_us, to_us

log = logging.getLogger("sitq.sqlite")

# Set-based statements: one statement (one sqlite3_step, one GIL release) per chunk of rows instead
# of one per row; with the worker's other threads wanting the GIL, per-row steps cost twice as much.
# Claim: the lease token is the batch's random prefix plus the row's seq in hex (unique per claim);
# a row whose previous lease expired (still 'running') counts one more lease expiry, and says so in its error.
_LEASE_EXPIRED_SQL = "'" + LEASE_EXPIRED_ERROR.replace("'", "''") + "'"
_CLAIM_SQL_SET = (
    "UPDATE tasks SET status = 'running', worker_id = ?, lease_token = ? || printf('%x', seq), due = ?, "
    "attempts = attempts + 1, lease_expiries = lease_expiries + (status = 'running'), started_at = ?, "
    f"error = CASE WHEN status = 'running' THEN {_LEASE_EXPIRED_SQL} ELSE error END "
    "WHERE seq IN ({}) RETURNING seq, " + TASK_COLUMNS
)
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
_RELEASE_SQL = (  # a first attempt given back unstarted (no started_at) says so again: no start, no worker
    "UPDATE tasks SET status = 'queued', due = min(eta, ?1), lease_token = NULL, attempts = max(attempts - 1, 0), "
    "started_at = CASE WHEN ?2 IS NOT NULL THEN ?2 WHEN attempts <= 1 THEN NULL ELSE started_at END, "
    "worker_id = CASE WHEN ?2 IS NULL AND attempts <= 1 THEN NULL ELSE worker_id END "
    "WHERE seq = ?3 AND id = ?4 AND lease_token = ?5 AND status = 'running' AND cancel_requested = 0 RETURNING seq"
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
_UNREADABLE_RESULT_SQL = (
    "INSERT OR REPLACE INTO results (task_id, id, status, value, error, traceback, enqueued_at, started_at, "
    "finished_at, attempts, serializer) SELECT id, id, 'failed', NULL, ?1, NULL, "
    "CASE WHEN typeof(enqueued_at) = 'integer' AND enqueued_at BETWEEN ?2 AND ?3 THEN enqueued_at END, "
    "started_at, ?4, CASE WHEN typeof(attempts) = 'integer' THEN attempts ELSE 0 END, "
    "CASE WHEN ?7 AND typeof(serializer) = 'text' THEN serializer ELSE '' END "
    "FROM tasks WHERE seq = ?5 AND lease_token = ?6 AND status = 'running'"
)
_UNREADABLE_FINISH_SQL = (
    "UPDATE tasks SET status = 'failed', due = NULL, lease_token = NULL, finished_at = ?1, error = ?2 "
    "WHERE seq = ?3 AND lease_token = ?4 AND status = 'running' RETURNING id"
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
