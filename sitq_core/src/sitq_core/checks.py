"""Argument checks shared by backends, so every store rejects bad input the same way.

Each check raises :class:`~sitq_core.errors.ValidationError` naming the
parameter and what was expected, before anything is written. Backends call
them at the top of the matching ``Backend`` method; third-party backends may
use them too (they are part of the plugin API, see ``plugins.md``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeAlias, cast

from .errors import ValidationError, describe_exception, safe_repr
from .models import Outcome, Task, TaskStatus

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_LEASE_SECONDS",
    "MAX_QUEUE_NAME_LENGTH",
    "MAX_TASK_ID_LENGTH",
    "OUTCOME_KINDS",
    "STATUSES",
    "Seconds",
    "as_seconds",
    "aware",
    "aware_or_none",
    "check_outcomes",
    "check_task",
    "lease_pairs",
    "lease_seconds",
    "new_queue_name",
    "outcomes_fit",
    "page",
    "queue_name",
    "queue_names",
    "reserve_limit",
    "status_filter",
    "storable",
    "table_changes",
    "task_id",
    "task_ids",
    "task_names_fit",
    "worker_id",
]

STATUSES = tuple(status.value for status in TaskStatus)
OUTCOME_KINDS = ("success", "failed", "cancelled", "retry", "release")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_LEASE_SECONDS = 10 * 365 * 86400  #: the longest lease any backend must accept (ten years)
#: the longest queue name and task id (in characters) a new task may have: both are indexed, and PostgreSQL's
#: btree index refuses an entry past about 2,700 bytes, where SQLite stores any length (255 of the widest
#: characters, four UTF-8 bytes each, fit). Lookups and filters take any length (a name stored before the limit).
MAX_QUEUE_NAME_LENGTH = 255
MAX_TASK_ID_LENGTH = 255


def aware(value: Any, parameter: str) -> datetime:
    """``value`` if it is a timezone-aware datetime; ``None`` is refused too (see :func:`aware_or_none`)."""
    if not isinstance(value, datetime):
        raise ValidationError(
            f"{parameter}: expected a timezone-aware datetime, got {type(value).__name__}",
            parameter=parameter,
            value=value,
        )
    if _utc_offset(value, parameter) is None:
        raise ValidationError(
            f"{parameter}: naive datetime {safe_repr(value)}; pass an aware one (e.g. tzinfo=timezone.utc)",
            parameter=parameter,
            value=value,
        )
    return value


def aware_or_none(value: Any, parameter: str) -> datetime | None:
    """``value`` if it is None or a timezone-aware datetime: for optional times (``requeue``'s ``eta``)."""
    return None if value is None else aware(value, parameter)


def _utc_offset(value: datetime, parameter: str) -> timedelta | None:
    """``value.utcoffset()`` (None when naive); a tzinfo that cannot give one -> ValidationError naming ``parameter``.

    The tzinfo is the caller's code: one that raises, returns something other
    than a timedelta or an offset of a day or more is bad input like a naive
    datetime, not an error of sitq's to let out as it is.
    """
    try:
        return value.utcoffset()  # checks the type and range of what the tzinfo returns
    except Exception as exc:
        zone = type(value.tzinfo).__name__  # not its repr: more of the tzinfo's own code
        raise ValidationError(
            f"{parameter}: its tzinfo ({zone}) cannot give a UTC offset ({describe_exception(exc)})",
            parameter=parameter,
            value=value,
            cause=exc,
        ) from exc


#: a duration as the public API takes it: any real number of seconds (int and numpy scalars pass as float for
#: type checkers; Decimal and Fraction are named so that code passing them type-checks) or a timedelta, used as
#: float seconds
Seconds: TypeAlias = float | Decimal | Fraction | timedelta


def as_seconds(value: object) -> float | None:
    """``value`` as float seconds when it is a real number or a timedelta, else None (the caller names the parameter).

    int and float, and the other real numbers users hold (``Fraction``,
    ``Decimal``, numpy's scalars), so a duration read from a config file or a
    computation is taken as it is; a ``timedelta`` as its ``total_seconds()``,
    as ``purge(older_than=...)`` takes one. bool is not a number of seconds. A
    number past a float's range becomes infinity of its sign; NaN stays NaN
    (each caller decides about both).
    """
    if isinstance(value, float):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    try:
        return float(value)
    except OverflowError:  # an int or Fraction too large for a float
        return math.inf if cast(Any, value) > 0 else -math.inf
    except (ValueError, TypeError, ArithmeticError):  # a signalling NaN Decimal, or a Real that will not convert
        return None


def lease_seconds(value: Any) -> float:
    """A lease length: a number of seconds > 0 (and below ten years)."""
    seconds = as_seconds(value)
    if seconds is None or not seconds > 0:
        raise ValidationError("lease_seconds must be a number > 0", parameter="lease_seconds", value=value)
    if seconds > MAX_LEASE_SECONDS:
        raise ValidationError("lease_seconds is unreasonably large", parameter="lease_seconds", value=value)
    return seconds


def lease_pairs(leases: Any) -> list[tuple[str, str]]:
    """``heartbeat``'s leases: a sequence of ``(task_id, lease_token)`` string pairs."""
    if not isinstance(leases, Sequence) or isinstance(leases, str):
        raise ValidationError("leases must be a sequence of (task_id, lease_token)", parameter="leases")
    pairs: list[tuple[str, str]] = []
    for item in leases:
        if not isinstance(item, tuple | list) or len(item) != 2 or not all(isinstance(x, str) for x in item):
            raise ValidationError(
                f"each lease must be a (task_id, lease_token) pair of strings, got {safe_repr(item)}",
                parameter="leases",
                value=item,
            )
        pairs.append((item[0], item[1]))
    return pairs


def queue_names(queues: Any) -> list[str] | None:
    """``reserve``'s queues: None (every queue) or a sequence of names, deduplicated in order."""
    if queues is None:
        return None
    if isinstance(queues, str) or not isinstance(queues, Sequence | set | frozenset):
        raise ValidationError(
            "queues must be a sequence of queue names or None (a single name goes in a list)",
            parameter="queues",
            value=queues,
        )
    names = list(dict.fromkeys(queues))
    if not all(isinstance(name, str) for name in names):
        raise ValidationError("queue names must be strings", parameter="queues", value=queues)
    for name in names:
        queue_name(name, "queues")
    return names


def queue_name(value: Any, parameter: str = "queue") -> str:
    """One queue name: a non-empty string a store can hold (no NUL, no lone surrogate)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{parameter}: a queue name must be a non-empty string", parameter=parameter, value=value)
    if not storable(value):
        raise ValidationError(
            f"{parameter}: a queue name must not contain NUL characters or lone surrogates, got {safe_repr(value)}",
            parameter=parameter,
            value=value,
        )
    return value


def new_queue_name(value: Any, parameter: str = "queue_name") -> str:
    """A queue name for tasks about to be enqueued: :func:`queue_name`, at most 255 characters, unpadded.

    Longer names are refused (``MAX_QUEUE_NAME_LENGTH``): PostgreSQL cannot
    index them, and every store should take the same tasks.

    ``sitq worker -q``, ``sitq stats --queue`` and ``sitq tasks --queue``
    strip the names they are given, so tasks enqueued under ``"mail "`` could
    not be served or seen through them: ``with_options`` and ``@task`` refuse
    such a name. What reads or serves stored tasks (``Worker(queues=...)``,
    ``counts``, the backends) keeps taking any storable name, so tasks
    already stored under one stay reachable.
    """
    name = queue_name(value, parameter)
    if len(name) > MAX_QUEUE_NAME_LENGTH:
        raise ValidationError(
            f"{parameter}: a queue name may have at most {MAX_QUEUE_NAME_LENGTH} characters, got one of {len(name):,}",
            parameter=parameter,
            value=value,
        )
    if name != name.strip():
        raise ValidationError(
            f"{parameter}: a queue name must not begin or end with whitespace, got {safe_repr(value)}; the CLI "
            "strips queue names (sitq worker -q, sitq stats --queue, sitq tasks --queue), so tasks in such a queue "
            "could not be served or seen from it",
            parameter=parameter,
            value=value,
        )
    return name


def storable(text: str) -> bool:
    """True when every store can hold ``text``: no NUL character and no lone surrogate (PostgreSQL, SQLite)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_log_line(text: str) -> str:
    """``text`` with control characters (newlines included) escaped: a stored name cannot forge log lines."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def escaped_for_store(text: str) -> str:
    """``text`` as every store accepts it: NULs and lone surrogates escaped (for names and messages shown)."""
    if storable(text):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def task_id(value: Any) -> str:
    """A task id: a non-empty string without NUL characters or lone surrogates (no store can hold them)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("task_id must be a non-empty string", parameter="task_id", value=value)
    if not storable(value):
        raise ValidationError(
            f"task_id must not contain NUL characters or lone surrogates, got {safe_repr(value)}",
            parameter="task_id",
            value=value,
        )
    return value


def given_task_id(value: Any) -> str:
    """A task id as callers hand it to ``TaskQueue`` and the CLI: not blank, and one every store can hold."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            f"task_id must be a non-empty string, got {safe_repr(value)}", parameter="task_id", value=value
        )
    return task_id(value)


def task_ids(value: Any, each: Callable[[Any], str] = task_id, *, parameter: str = "task_ids") -> list[str]:
    """``requeue_many``'s ids: a sequence of task ids (each as ``each`` checks it), as a list in the given order.

    A bare string is refused (it is a sequence of letters, not of ids), and so is a set (no order to answer in).
    The error names ``parameter`` and, for a bad item, its position.
    """
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise ValidationError(
            f"{parameter} must be a sequence of task ids (a single id goes in a list), got {type(value).__name__}",
            parameter=parameter,
            value=value,
        )
    ids = list(value)
    for position, item in enumerate(ids):
        try:
            each(item)
        except ValidationError as exc:
            raise ValidationError(
                f"{parameter}[{position}]: {exc.message}", parameter=parameter, value=item, cause=exc
            ) from exc
    return ids


def worker_id(value: Any) -> str:
    """A worker id: a non-empty string every store can hold (no NUL, no lone surrogate)."""
    if not isinstance(value, str) or not value:
        raise ValidationError("worker_id must be a non-empty string", parameter="worker_id", value=value)
    if not storable(value):
        raise ValidationError(
            f"worker_id must not contain NUL characters or lone surrogates, got {safe_repr(value)}",
            parameter="worker_id",
            value=value,
        )
    return value


def reserve_limit(value: Any) -> int:
    """``reserve``'s limit: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("limit must be an integer >= 1", parameter="limit", value=value)
    return value


def status_filter(status: Any) -> str | None:
    """``list_tasks``' status: None or one of the status names."""
    if status is None:
        return None
    name = str(status.value if isinstance(status, TaskStatus) else status)
    if name not in STATUSES:
        raise ValidationError(
            f"unknown status {safe_repr(status)}; expected one of: {', '.join(STATUSES)}",
            parameter="status",
            value=status,
            valid_options=STATUSES,
        )
    return name


def page(limit: Any, offset: Any) -> tuple[int, int]:
    """``list_tasks``' limit and offset: integers from 0 to 2**63-1."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
            raise ValidationError(f"{name} must be an integer from 0 to 2**63-1", parameter=name, value=value)
    return limit, offset


def check_task(task: Any) -> Task:
    """One task of ``enqueue_many``: a ``Task`` whose fields have the documented types."""
    if not isinstance(task, Task):
        raise ValidationError(f"tasks must hold Task objects, got {type(task).__name__}", parameter="tasks")
    if not isinstance(task.id, str) or not task.id:
        raise ValidationError("every task needs a non-empty string id", parameter="tasks", value=task.id)
    if not isinstance(task.payload, bytes | bytearray | memoryview):
        raise ValidationError(
            f"task {safe_repr(task.id)}: payload must be bytes, got {type(task.payload).__name__}", parameter="tasks"
        )
    for name in ("priority", "max_retries", "max_lease_expiries", "attempts", "lease_expiries"):
        value = getattr(task, name)
        if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError(
                f"task {safe_repr(task.id)}: {name} must be a 64-bit int", parameter="tasks", value=value
            )
    for name in ("serializer", "function_name"):
        if not isinstance(getattr(task, name), str):
            raise ValidationError(f"task {safe_repr(task.id)}: {name} must be a string", parameter="tasks")
    if not isinstance(task.queue, str) or not task.queue:
        raise ValidationError(f"task {safe_repr(task.id)}: queue must be a non-empty string", parameter="tasks")
    task_names_fit(task)
    if isinstance(task.retry_backoff, bool) or not isinstance(task.retry_backoff, int | float):
        raise ValidationError(f"task {safe_repr(task.id)}: retry_backoff must be a number", parameter="tasks")
    if task.timeout is not None and (isinstance(task.timeout, bool) or not isinstance(task.timeout, int | float)):
        raise ValidationError(f"task {safe_repr(task.id)}: timeout must be a number or None", parameter="tasks")
    for name in ("eta", "enqueued_at", "started_at", "finished_at"):
        value = getattr(task, name)
        if value is None and name in ("started_at", "finished_at"):
            continue
        in_utc_range(aware(value, "tasks"), f"task {safe_repr(task.id)}: {name}")
    try:
        TaskStatus(task.status)
    except ValueError as exc:
        raise ValidationError(
            f"task {safe_repr(task.id)}: unknown status {safe_repr(task.status)}", parameter="tasks"
        ) from exc
    return task


def in_utc_range(value: datetime, what: str = "a task time") -> datetime:
    """``value`` if it is a UTC instant within years 1 to 9999, which every store can keep; else ValidationError.

    Year 9999 at -05:00 is past the last UTC datetime: PostgreSQL refused it
    with its own error, and SQLite stored it as 1970 (due at once).
    """
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValidationError(
            f"{what} {value.isoformat()} is outside the datetimes UTC can express (years 1 to 9999)",
            parameter="tasks",
            value=value,
            cause=exc,
        ) from exc
    return value


def check_outcomes(outcomes: Any) -> list[Outcome]:
    """``finish_many``'s outcomes: ``Outcome`` objects of a known kind with aware times."""
    if isinstance(outcomes, Outcome) or not isinstance(outcomes, Sequence):
        raise ValidationError("outcomes must be a sequence of Outcome", parameter="outcomes")
    for outcome in outcomes:
        # an exact str: a subclass can compare equal to a kind and still bind as something else (__conform__)
        kind: object = getattr(outcome, "kind", None)
        if not isinstance(outcome, Outcome) or type(kind) is not str or kind not in OUTCOME_KINDS:
            raise ValidationError(
                f"each outcome must be an Outcome with kind in {OUTCOME_KINDS}, got {safe_repr(outcome)}",
                parameter="outcomes",
                value=outcome,
            )
        for name in ("retry_at", "started_at", "finished_at"):
            value = getattr(outcome, name)
            if value is not None:
                aware(value, "outcomes")
    return list(outcomes)


def task_names_fit(task: Task) -> None:
    """Refuse a task whose id or queue name is longer than 255 characters (``parameter="tasks"``).

    Part of :func:`check_task`; a backend that checks a task's fields its own
    way calls it when ``len(task.id)`` or ``len(task.queue)`` is over the
    limit. ``TaskQueue`` never builds such a task (its ids are short, its
    queue names checked by :func:`new_queue_name`): this answers a ``Task``
    built by hand alike on every store, where PostgreSQL's index would refuse
    a long one with an error of its own and SQLite would store it.
    """
    for what, text, limit in (
        ("task id", task.id, MAX_TASK_ID_LENGTH),
        ("queue name", task.queue, MAX_QUEUE_NAME_LENGTH),
    ):
        if len(text) > limit:
            raise ValidationError(
                f"task {safe_repr(task.id)}: a {what} may have at most {limit} characters, got one of "
                f"{len(text):,}; nothing was stored",
                parameter="tasks",
                value=text,
            )


class TooLargeToStore(ValidationError):
    """A task whose serialised call is larger than its store holds in one row (``parameter="tasks"``).

    A queue re-raises it under the name of the argument its caller passed
    (``args`` for ``enqueue``, ``calls`` for ``enqueue_many``).
    """


def task_fits(task: Task, size: int, limit: int, store: str) -> None:
    """Refuse ``task`` when its payload of ``size`` bytes is over ``limit``, before anything is written."""
    if size > limit:
        raise TooLargeToStore(
            f"task {task.id} ({task.function_name}): the call serialises to {size:,} bytes (the function and its "
            f"arguments), more than {store} can store in one row ({limit:,} bytes); nothing was stored. "
            "Pass large data by reference (a file path, a URL) instead",
            parameter="tasks",
            value=task.id,
        )


def outcomes_fit(outcomes: Sequence[Outcome], limit: int, store: str) -> None:
    """Refuse an outcome larger than ``store`` can hold in one row (``limit`` bytes), before anything is written.

    The error (``parameter="outcomes"``) tells the worker that this outcome can
    never be stored, so it reports the task failed with that reason instead of
    retrying until the lease expires and the task runs again to the same end.
    """
    for outcome in outcomes:
        size = len(outcome.value or b"") + _text_bytes(outcome.error) + _text_bytes(outcome.traceback)
        if size > limit:
            raise ValidationError(
                f"the outcome of task {outcome.task_id} holds {size:,} bytes (its return value, error and "
                f"traceback), more than {store} can store in one row ({limit:,} bytes)",
                parameter="outcomes",
                value=outcome.task_id,
            )


def _text_bytes(text: str | None) -> int:
    """The UTF-8 size of ``text``, counted exactly only when it is large enough to matter."""
    if not text:
        return 0
    return len(text) if len(text) < 1 << 20 else len(text.encode("utf-8", "surrogatepass"))


def table_changes(table: str, *, missing: Sequence[str], unknown: Sequence[str], required: Sequence[str]) -> list[str]:
    """What is wrong with one of a store's own tables that someone changed by hand, in the built-in backends' words.

    ``missing``: columns the store needs that the table lacks; ``unknown``:
    columns it does not know; ``required``: those unknown ones every insert
    would have to fill (NOT NULL without a default). Added columns an insert
    may leave out are fine and say nothing. An empty list: nothing to refuse.
    """
    changes: list[str] = []
    if missing:
        others = f" (it has column(s) sitq does not know: {', '.join(unknown)})" if unknown else ""
        changes.append(f"table {table} lacks column(s) sitq needs: {', '.join(missing)}{others}")
    if required:
        changes.append(
            f"table {table} has column(s) sitq does not know that every insert would have to fill: "
            f"{', '.join(required)} (NOT NULL without a DEFAULT; sitq inserts only its own columns)"
        )
    return changes
