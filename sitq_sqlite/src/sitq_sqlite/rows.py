"""Stored rows read back as ``Task`` and ``Result``, each value checked.

SQLite columns take a value of any type, so a row changed around sitq (or a
damaged page) can hold one no Task or Result can carry. The quick check here
takes the common row in one expression; a row that fails it is looked at
column by column (``_RowProblems`` names each value and its storage class).
The reads (``get_task``, ``list_tasks``, ``get_result``) then show such a row
with ``error`` saying what is wrong; a claim ends it failed instead. A value
the schema's own constraints forbid reads as damage.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sitq_core.checks import STATUSES
from sitq_core.errors import BackendError
from sitq_core.models import FINAL_STATUSES, Result, Task, TaskStatus

from .hints import _DAMAGED_HINT
from .schema import TASK_COLUMNS, from_us, to_us
from .undecodable import Undecodable


def _status_counts(path: str, rows: list[tuple[Any, int]]) -> dict[str, int]:
    """``counts()``'s answer from its (status, count) rows: every status a key; one sitq never writes raises."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, number in rows:
        if status not in counts:  # the schema's CHECK allows only the five: a damaged row (or page)
            raise BackendError(
                f"SQLite database {path!r}: {number} task row(s) read back with status {status!r}, "
                f"which sitq never writes{_DAMAGED_HINT}",
                operation="counts",
                backend_type="sqlite",
            )
        counts[status] = number
    return counts


class _RowProblems(Exception):
    """The values of a stored row that sitq cannot take, each named (``str()`` is the whole message).

    ``damage``: a value the schema's own constraints forbid (a NULL in a NOT
    NULL column, a task status outside the five): SQLite wrote no such row, so
    the file is damaged. Any other problem is a value of the wrong type.
    """

    def __init__(self, table: str, problems: list[tuple[str, str]], *, damage: bool) -> None:
        super().__init__(f"{table} row cannot be read: " + "; ".join(message for _column, message in problems))
        self.columns = {column for column, _message in problems}
        self.damage = damage


_MIN_US = to_us(datetime.min.replace(tzinfo=UTC))
_MAX_US = to_us(datetime.max.replace(tzinfo=UTC))
_TASK_STATUS = {status.value: status for status in TaskStatus}
_RESULT_STATUSES = frozenset(status.value for status in FINAL_STATUSES)


def _is_time(value: Any) -> bool:
    return type(value) is int and _MIN_US <= value <= _MAX_US


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int


# what a stored value must be: (the words for it, its test, the value a read puts in place of one that is not)
_KINDS: dict[str, tuple[str, Callable[[Any], bool], Any]] = {
    "text": ("text", lambda value: type(value) is str, ""),
    "bytes": ("bytes", lambda value: type(value) is bytes, b""),
    "integer": ("an integer", lambda value: type(value) is int, 0),
    "number": ("a number", _is_number, 0.0),
    "time": ("a time (integer microseconds since 1970, in years 1 to 9999)", _is_time, 0),
    "status": (f"one of {', '.join(_TASK_STATUS)}", lambda value: value in _TASK_STATUS, None),
    "final": (f"one of {', '.join(sorted(_RESULT_STATUSES))}", lambda value: value in _RESULT_STATUSES, "failed"),
}
_KIND_OF = {
    "id": "text",
    "task_id": "text",
    "payload": "bytes",
    "value": "bytes",
    "serializer": "text",
    "function_name": "text",
    "queue": "text",
    "worker_id": "text",
    "error": "text",
    "traceback": "text",
    "priority": "integer",
    "max_retries": "integer",
    "max_lease_expiries": "integer",
    "attempts": "integer",
    "lease_expiries": "integer",
    "cancel_requested": "integer",
    "retry_backoff": "number",
    "timeout": "number",
    "eta": "time",
    "enqueued_at": "time",
    "started_at": "time",
    "finished_at": "time",
}
_NULLABLE = frozenset({"timeout", "started_at", "finished_at", "worker_id", "error", "value", "traceback"})
_TASK_FIELDS = [(name, "status" if name == "status" else _KIND_OF[name]) for name in TASK_COLUMNS.split(", ")]
_RESULT_COLUMNS = (
    "id, task_id, status, value, error, traceback, enqueued_at, started_at, finished_at, attempts, serializer"
)
_RESULT_NULLABLE = _NULLABLE | {"enqueued_at"}
_RESULT_FIELDS = [(name, "final" if name == "status" else _KIND_OF[name]) for name in _RESULT_COLUMNS.split(", ")]
_STORAGE_CLASS = {str: "text", bytes: "blob", int: "integer", float: "real", Undecodable: "text"}


def _row_problems(
    table: str, row: Sequence[Any], fields: list[tuple[str, str]], nullable: frozenset[str]
) -> _RowProblems:
    """What is wrong with ``row``, column by column (the slow path: only for a row that failed the quick check)."""
    problems: list[tuple[str, str]] = []
    damage = False
    for (name, kind), value in zip(fields, row, strict=True):
        if value is None:
            if name not in nullable:
                problems.append((name, f"stored {name} is NULL, which its NOT NULL column cannot hold"))
                damage = True
            continue
        expected, fits, _instead = _KINDS[kind]
        if kind == "text" and type(value) is Undecodable:  # read with tolerant_text: bytes that are not UTF-8
            problems.append((name, f"stored {name} is not valid UTF-8: {_shown(value)}"))
        elif not fits(value):
            problems.append((name, f"stored {name} is not {expected}: {_shown(value)}"))
            damage = damage or kind == "status"  # the tasks table's CHECK allows only the five
    return _RowProblems(table, problems, damage=damage)


def _shown(value: Any) -> str:
    """A stored value for a message: its repr (cut short) and its SQLite storage class."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_STORAGE_CLASS.get(type(value), type(value).__name__)})"


def _with_marker(
    row: Sequence[Any], fields: list[tuple[str, str]], nullable: frozenset[str], problems: _RowProblems
) -> list[Any]:
    """``row`` with each value it cannot take replaced (NULL where allowed, else empty, zero or 1970).

    Text that is not UTF-8 is shown instead, each bad byte as a backslash escape (``a\\xff``).
    """
    fixed = list(row)
    for index, (name, kind) in enumerate(fields):
        if name in problems.columns:
            if kind == "text" and type(row[index]) is Undecodable:
                fixed[index] = str(row[index])
            else:
                fixed[index] = None if name in nullable else _KINDS[kind][2]
    return fixed


def _marked_error(problems: _RowProblems, stored: Any) -> str:
    """The ``error`` a read gives a row it cannot take in full: why, then the stored error (when readable)."""
    marker = str(problems)
    if isinstance(stored, str) and stored and stored != marker:
        return f"{marker} (its stored error: {stored})"
    return marker


def _row_to_task(row: Sequence[Any]) -> Task:
    """A Task for the reads (get_task, list_tasks); one row that cannot be taken in full does not fail them.

    A value of the wrong type reads as empty and ``error`` says which column
    held what; a row the schema's constraints forbid reads as damage.
    """
    try:
        return _task_of_row(row)
    except _RowProblems as problems:
        if problems.damage:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {problems}") from None
        fixed = _with_marker(row, _TASK_FIELDS, _NULLABLE, problems)
        if "id" in problems.columns:  # it still names its row
            fixed[0] = row[0].decode("utf-8", "backslashreplace") if isinstance(row[0], bytes) else str(row[0])
        fixed[18] = _marked_error(problems, fixed[18])
        return _task_of_row(fixed)


def _task_of_row(row: Sequence[Any]) -> Task:
    """A Task from a tasks row (TASK_COLUMNS order); raises ``_RowProblems`` naming each value it cannot take."""
    (
        task_id,
        payload,
        serializer,
        function_name,
        queue,
        priority,
        eta,
        max_retries,
        retry_backoff,
        timeout,
        max_lease_expiries,
        enqueued_at,
        status,
        attempts,
        lease_expiries,
        started_at,
        finished_at,
        worker_id,
        error,
        cancel_requested,
    ) = row
    if not (  # every type in one expression (the common case); _row_problems names what is wrong
        type(task_id) is str
        and type(payload) is bytes
        and type(serializer) is str
        and type(function_name) is str
        and type(queue) is str
        and type(priority) is int
        and type(eta) is int
        and _MIN_US <= eta <= _MAX_US
        and type(max_retries) is int
        and (type(retry_backoff) is float or type(retry_backoff) is int)
        and (timeout is None or type(timeout) is float or type(timeout) is int)
        and type(max_lease_expiries) is int
        and type(enqueued_at) is int
        and _MIN_US <= enqueued_at <= _MAX_US
        and status in _TASK_STATUS
        and type(attempts) is int
        and type(lease_expiries) is int
        and (started_at is None or _is_time(started_at))
        and (finished_at is None or _is_time(finished_at))
        and (worker_id is None or type(worker_id) is str)
        and (error is None or type(error) is str)
        and type(cancel_requested) is int
    ):
        raise _row_problems("task", row, _TASK_FIELDS, _NULLABLE)
    return Task(
        id=task_id,
        payload=payload,
        serializer=serializer,
        function_name=function_name,
        queue=queue,
        priority=priority,
        eta=from_us(eta),
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        timeout=timeout,
        max_lease_expiries=max_lease_expiries,
        enqueued_at=from_us(enqueued_at),
        status=_TASK_STATUS[status],
        attempts=attempts,
        lease_expiries=lease_expiries,
        started_at=None if started_at is None else from_us(started_at),
        finished_at=None if finished_at is None else from_us(finished_at),
        worker_id=worker_id,
        error=error,
        cancel_requested=bool(cancel_requested),
    )


def _row_to_result(row: Sequence[Any]) -> Result:
    """A Result from a results row; one it cannot take in full reads with ``error`` saying why.

    A success whose value (or serializer) cannot be read reads as failed: it
    cannot be delivered. A NULL in a NOT NULL column reads as damage.
    """
    try:
        return _result_of_row(row)
    except _RowProblems as problems:
        if problems.damage:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {problems}") from None
        fixed = _with_marker(row, _RESULT_FIELDS, _RESULT_NULLABLE, problems)
        if fixed[2] == "success" and problems.columns & {"value", "serializer"}:
            fixed[2] = "failed"
        fixed[4] = _marked_error(problems, fixed[4])
        return _result_of_row(fixed)


def _result_of_row(row: Sequence[Any]) -> Result:
    """A Result from a results row (_RESULT_COLUMNS order); raises ``_RowProblems`` naming what it cannot take."""
    task_id, of_task, status, value, error, traceback, enqueued_at, started_at, finished_at, attempts, serializer = row
    if not (
        type(task_id) is str
        and type(of_task) is str
        and status in _RESULT_STATUSES
        and (value is None or type(value) is bytes)
        and (error is None or type(error) is str)
        and (traceback is None or type(traceback) is str)
        and (enqueued_at is None or _is_time(enqueued_at))
        and (started_at is None or _is_time(started_at))
        and (finished_at is None or _is_time(finished_at))
        and type(attempts) is int
        and type(serializer) is str
    ):
        raise _row_problems("result", row, _RESULT_FIELDS, _RESULT_NULLABLE)
    return Result(
        id=task_id,
        task_id=of_task,
        status=status,
        value=value,
        error=error,
        traceback=traceback,
        enqueued_at=None if enqueued_at is None else from_us(enqueued_at),
        started_at=None if started_at is None else from_us(started_at),
        finished_at=None if finished_at is None else from_us(finished_at),
        attempts=attempts,
        serializer=serializer,
    )
