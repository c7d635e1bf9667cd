"""Writing new task rows: a ``Task`` checked and turned into its INSERT row, and the INSERT statements.

Rows go in multi-row ``INSERT ... VALUES`` statements (one SQLite step per
chunk, not per row), split to the bound-variable limit and to
``_STATEMENT_BYTES`` of values: sqlite3 caches each statement text with the
parameters bound last, so a statement holding big payloads would keep them
alive. Large batches whose rows differ only in id and payload bind the other
columns once per statement (``_insert_groups``).
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sitq_core import checks
from sitq_core.checks import aware as _aware
from sitq_core.errors import ValidationError
from sitq_core.models import Task, TaskStatus

from .schema import TASK_COLUMNS, to_us

_TASK_COLUMN_COUNT = 21  # parameters per task row (TASK_COLUMNS plus due)
_ERROR_COLUMN = 18  # the error's index in a task row (_task_row)
_PAYLOAD_OF = operator.itemgetter(1)
_ERROR_OF = operator.itemgetter(_ERROR_COLUMN)
_TASK_ROW = f"({', '.join('?' * _TASK_COLUMN_COUNT)})"
_FRESH_TAIL = ("queued", 0, 0, None, None, None, None, 0)  # row[12:20] of a never-run task
_INSERT_FRESH_SQL = (  # one never-run task: the state columns keep their defaults (8 fewer parameters to bind)
    "INSERT INTO tasks (id, payload, serializer, function_name, queue, priority, eta, max_retries, "
    "retry_backoff, timeout, max_lease_expiries, enqueued_at, due, status) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')"
)
_ROW_LIMIT = 1_000_000_000 - (1 << 20)  # SQLITE_MAX_LENGTH (a string, a blob or a whole row), less room for the rest
_INSERT_ROWS_PER_STATEMENT = 400  # multi-row INSERTs: one SQLite step per chunk, not per row
# Bytes of values (payloads, result values, errors, tracebacks; ids and names are not counted) a multi-row
# statement binds at most; a larger row is written by itself. sqlite3 caches each statement text with the
# parameters bound last (copies, kept until that text runs again), so multi-row statements of every row count
# would each keep a batch of big values: a worker returning 5 MB results grew by gigabytes. So each cached
# multi-row statement keeps at most this much, and each one-row statement (one fixed text per kind) one row.
_STATEMENT_BYTES = 256 * 1024


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert task rows with multi-row ``INSERT ... VALUES (...), (...)`` statements (about 3 µs/row less
    than ``executemany``), split to the bound-variable limit and to _STATEMENT_BYTES."""
    if len(rows) == 1:
        conn.execute(_insert_sql(1), rows[0])
        return
    per = min(_INSERT_ROWS_PER_STATEMENT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _TASK_COLUMN_COUNT)
    per = max(1, per)
    if len(rows) <= per and sum(map(len, map(_PAYLOAD_OF, rows))) <= _STATEMENT_BYTES and not any(map(_ERROR_OF, rows)):
        conn.execute(_insert_sql(len(rows)), [value for row in rows for value in row])  # the usual batch
        return
    sizes = [len(row[1]) + _text_size(row[_ERROR_COLUMN]) for row in rows]
    for start, end in _byte_runs(sizes, per):
        conn.execute(_insert_sql(end - start), [value for row in rows[start:end] for value in row])


def _insert_groups(conn: sqlite3.Connection, groups: list[tuple[tuple[Any, ...], list[Any]]]) -> None:
    """Insert groups of rows sharing every column but id and payload: 19 shared parameters plus 2 per row
    (binding parameters holds the GIL; this binds a tenth of what one row per VALUES tuple would)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(_INSERT_ROWS_PER_STATEMENT, (limit - _TASK_COLUMN_COUNT) // 2))
    for shared, pairs in groups:
        error = _text_size(shared[_ERROR_COLUMN - 2])  # bound once per statement
        payloads = pairs[1::2]
        if len(payloads) <= per and error + sum(map(len, payloads)) <= _STATEMENT_BYTES:  # the usual chunk
            conn.execute(_insert_shared_sql(len(payloads)), (*shared, *pairs))
            continue
        sizes = list(map(len, payloads))
        for start, end in _byte_runs(sizes, per, error):
            conn.execute(_insert_shared_sql(end - start), (*shared, *pairs[2 * start : 2 * end]))


def _text_size(value: Any) -> int:
    """The length of a task's stored error (whatever an application put there: most often None)."""
    return len(value) if isinstance(value, str | bytes) else 0


def _byte_runs(sizes: list[int], most: int, shared: int = 0) -> Iterator[tuple[int, int]]:
    """The rows of each statement, as (start, end) indexes: at most ``most`` rows, and values (``sizes`` per
    row plus ``shared`` per statement) of at most _STATEMENT_BYTES unless the statement holds one row."""
    start, total = 0, shared
    for end, size in enumerate(sizes):
        if end > start and (end - start == most or total + size > _STATEMENT_BYTES):
            yield start, end
            start, total = end, shared
        total += size
    if start < len(sizes):
        yield start, len(sizes)


@functools.lru_cache(maxsize=64)
def _insert_shared_sql(count: int) -> str:
    """INSERT of ``count`` rows given as (id, payload) VALUES pairs plus the shared other columns."""
    shared = ", ".join("?" * (_TASK_COLUMN_COUNT - 2))
    pairs = ",".join(["(?, ?)"] * count)
    return f"INSERT INTO tasks ({TASK_COLUMNS}, due) SELECT column1, column2, {shared} FROM (VALUES {pairs})"


@functools.lru_cache(maxsize=64)
def _insert_sql(count: int) -> str:
    """The INSERT statement for ``count`` task rows (built once per size: batches repeat sizes)."""
    return f"INSERT INTO tasks ({TASK_COLUMNS}, due) VALUES " + ",".join([_TASK_ROW] * count)


def _batch_id_taken(conn: sqlite3.Connection, ids: Sequence[str], exc: sqlite3.IntegrityError) -> ValidationError:
    """The error for a batch whose INSERT clashed with a stored id: names the first such id (the batch rolls back)."""
    placeholders = ",".join("?" * len(ids))
    taken = conn.execute(f"SELECT id FROM tasks WHERE id IN ({placeholders})", list(ids)).fetchone()
    return ValidationError(
        f"task id {taken[0] if taken else '?'!r} already exists; nothing of this batch was stored",
        parameter="tasks",
        value=taken[0] if taken else None,
        cause=exc,
    )


def _task_row(task: Any, times: dict[int, tuple[datetime, int]] | None = None) -> tuple[Any, ...]:
    """The INSERT row of a task, validated; ``times`` memoises datetime conversions within a batch."""
    if type(task) is not Task and not isinstance(task, Task):
        raise ValidationError(f"tasks must hold Task objects, got {type(task).__name__}", parameter="tasks")
    task_id = task.id
    if not isinstance(task_id, str) or not task_id:
        raise ValidationError("every task needs a non-empty string id", parameter="tasks", value=task_id)
    payload = task.payload
    if type(payload) is not bytes:
        if not isinstance(payload, _BYTES_LIKE):
            raise ValidationError(
                f"task {task.id!r}: payload must be bytes, got {type(task.payload).__name__}",
                parameter="tasks",
            )
        payload = bytes(payload)
    if len(payload) > _ROW_LIMIT:
        checks.task_fits(task, len(payload), _ROW_LIMIT, "a SQLite database")
    if not (  # the common case in one expression; the loop below names the offending field
        type(task.priority) is int
        and type(task.max_retries) is int
        and type(task.max_lease_expiries) is int
        and type(task.attempts) is int
        and type(task.lease_expiries) is int
    ):
        for name in ("priority", "max_retries", "max_lease_expiries", "attempts", "lease_expiries"):
            value = getattr(task, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"task {task.id!r}: {name} must be an int", parameter="tasks", value=value)
    queue = task.queue
    if not isinstance(queue, str) or not queue:
        raise ValidationError(f"task {task.id!r}: queue must be a non-empty string", parameter="tasks")
    if len(task_id) > _NAME_LIMIT or len(queue) > _NAME_LIMIT:  # refused as by PostgreSQL (checks.check_task)
        checks.task_names_fit(task)
    eta = _batch_us(task.eta, times)
    enqueued_at = eta if task.enqueued_at is task.eta else _batch_us(task.enqueued_at, times)
    return (
        task_id,
        payload,
        task.serializer,
        task.function_name,
        queue,
        task.priority,
        eta,
        task.max_retries,
        float(task.retry_backoff),
        None if task.timeout is None else float(task.timeout),
        task.max_lease_expiries,
        enqueued_at,
        _QUEUED,
        task.attempts,
        task.lease_expiries,
        None if task.started_at is None else _batch_us(task.started_at, None),
        None if task.finished_at is None else _batch_us(task.finished_at, None),
        task.worker_id,
        task.error,
        1 if task.cancel_requested else 0,
        eta,
    )


_BYTES_LIKE = (bytes, bytearray, memoryview)
_NAME_LIMIT = min(checks.MAX_TASK_ID_LENGTH, checks.MAX_QUEUE_NAME_LENGTH)
#: the microseconds of UTC's first and last datetimes (years 1 and 9999): a task time outside is refused
_MIN_US = to_us(datetime.min.replace(tzinfo=UTC))
_MAX_US = to_us(datetime.max.replace(tzinfo=UTC))
_QUEUED = TaskStatus.QUEUED.value


def _batch_us(value: Any, times: dict[int, tuple[datetime, int]] | None) -> int:
    """``to_us`` of a task time; tasks of one batch usually share the same datetime objects."""
    if times is not None:
        known = times.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
    converted = to_us(_aware(value, "tasks"))
    if not _MIN_US <= converted <= _MAX_US:  # year 9999 at -05:00: stored, it read back as 1970 (due at once)
        checks.in_utc_range(value)
    if times is not None:
        times[id(value)] = (value, converted)
    return converted
