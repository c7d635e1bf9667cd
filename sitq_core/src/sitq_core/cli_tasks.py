"""``sitq tasks``, ``show``, ``requeue``, ``cancel`` and ``purge``: look at stored tasks and act on them from a shell.

:mod:`sitq_core.cli` registers these commands; they choose their store as
``sitq stats`` does (``-b``/``--backend``, else ``SITQ_BACKEND``) with the
same error lines and refusals. Exit codes: 0 when everything asked was done,
1 when a task given could not be shown, requeued or cancelled, 2 for bad
arguments or a store that cannot be used (docs/how-to/manage-tasks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, cast

from . import checks, cli_numbers
from .backend import Backend, Capability, reading_only
from .errors import ValidationError
from .models import FINAL_STATUSES, Result, Task, TaskStatus, TaskStatusName
from .queue import TaskQueue
from .terminal_text import escaped_controls

__all__ = ["COMMANDS", "add_commands", "parse_duration", "run"]

#: The commands of this module, as typed after ``sitq``
COMMANDS = ("tasks", "show", "requeue", "cancel", "purge")
#: Tasks read per ``list_tasks`` call when a command walks its matches (``sitq tasks``, ``requeue --failed``).
#: Each call sorts every match on SQLite (no index on enqueue time), so a page is large: 10x fewer sorts than
#: 500 a page, while only one page of tasks is held at a time (``sitq tasks`` writes each before reading the next)
READ_PAGE = 5000
#: Ids per ``requeue_many`` call (one store transaction each, and what a Ctrl-C may leave under way)
PAGE = 500
_INT64_MAX = 2**63 - 1
_ERROR_WIDTH = 60  # characters of a task's last error in the ``sitq tasks`` table
_STATUSES = tuple(status.value for status in TaskStatus)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: A negative number with or without a unit, as argparse's ``_negative_number_matcher`` (see add_commands). Its
#: repeats are possessive, so that a long run of digits is read once: ``-\d*\.?\d+`` split it every way.
_NEGATIVE_DURATION = re.compile(r"^-(?:[\d_]++(?:\.[\d_]*+)?|\.[\d_]++)(?:[eE][-+]?[\d_]++)?[smhdSMHD]?$")

Say = Callable[[str], None]
Action = Callable[[TaskQueue, Say], Awaitable[int]]


class _Refused(Exception):
    """An argument refused before the store is opened; the message names it (exit code 2)."""


@dataclasses.dataclass
class _Progress:
    """What a command changed so far: the line a Ctrl-C ends it with says it (exit code 130)."""

    past: str = ""  # "requeued" or "cancelled"; "" for a command that changes nothing task by task
    done: int = 0
    under_way: int = 0  # tasks of the change asked of the store whose answer had not come back (a page, or one)
    purging: bool = False

    def interrupted(self) -> str:
        if self.purging:
            return "interrupted: the purge may or may not have been applied (sitq stats shows what is left)"
        if not self.past:
            return "interrupted (nothing was changed)"
        maybe = ""
        if self.under_way:
            which = "the one" if self.under_way == 1 else f"the {self.under_way}"
            maybe = f" ({which} under way may have been {self.past} too)"
        return f"interrupted: {self.past} {_tasks(self.done)} so far{maybe}"


def add_commands(
    command: Callable[[str, str], argparse.ArgumentParser], backend_arg: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the commands to ``sitq``'s parser: ``command(name, help)`` makes one, ``backend_arg`` adds ``-b``."""
    tasks = command("tasks", "list tasks, oldest enqueued first")
    backend_arg(tasks)
    tasks.add_argument("--status", metavar="STATUS", help=f"only tasks in this status: {', '.join(_STATUSES)}")
    tasks.add_argument("--queue", metavar="NAME", help="only tasks of this queue")
    tasks.add_argument(
        "--limit",
        type=cli_numbers.whole_number,
        default=20,
        metavar="N",
        help="at most N tasks, 0 for all (default: 20)",
    )
    tasks.add_argument(
        "--offset", type=cli_numbers.whole_number, default=0, metavar="N", help="skip the first N (default: 0)"
    )
    tasks.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", "show one task, and its result once it is final")
    backend_arg(show)
    show.add_argument("task_id", metavar="TASK_ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    requeue = command("requeue", "run failed or cancelled tasks again")
    backend_arg(requeue)
    requeue.add_argument("task_ids", nargs="*", metavar="TASK_ID")
    requeue.add_argument("--failed", action="store_true", help="every failed task (instead of TASK_ID...)")
    requeue.add_argument("--queue", metavar="NAME", help="with --failed: only failed tasks of this queue")
    requeue.add_argument("--json", action="store_true", help="machine-readable output")

    cancel = command("cancel", "cancel queued tasks; ask the workers of running ones to stop them")
    backend_arg(cancel)
    cancel.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    cancel.add_argument("--json", action="store_true", help="machine-readable output")

    purge = command("purge", "delete final tasks (success, failed, cancelled) and their results")
    backend_arg(purge)
    purge.add_argument(
        "--older-than",
        metavar="DURATION",
        help="only those finished longer ago than this: 30s, 15m, 2h, 7d or seconds (default: every final task)",
    )
    purge.add_argument("--json", action="store_true", help="machine-readable output")
    # `--older-than -3d`: argparse takes '-3d' for an option ("expected one argument") unless it looks like a
    # negative number to it, so that the value reaches parse_duration, which says a duration cannot be negative
    if hasattr(purge, "_negative_number_matcher"):
        purge._negative_number_matcher = _NEGATIVE_DURATION


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the command ``args`` names on its store; returns the exit code."""
    from . import cli  # cli imports this module at its start: by the time a command runs, both are complete

    progress = _Progress()
    try:
        action, reads_only = _action(args, progress)
    except _Refused as exc:
        sys.stderr.write(f"sitq: error: {exc}\n")
        return 2

    def say(text: str) -> None:
        cli._out(out, text)

    async def on_store(store: Backend, source: str) -> int:
        if await cli._store_missing(store, source):  # a mistyped path or schema is reported, not created
            return 2
        with reading_only() if reads_only else contextlib.nullcontext():
            async with TaskQueue(store) as queue:
                return await action(queue, say)

    try:
        return cli._store_command(args.backend, on_store)
    except KeyboardInterrupt:  # asyncio.run cancelled the command and closed the store; say what was done
        sys.stderr.write(f"sitq: {progress.interrupted()}\n")
        return 130


def _action(args: argparse.Namespace, progress: _Progress) -> tuple[Action, bool]:
    """What the command does once its store is open, and whether it only reads; its arguments checked first.

    The command counts what it changes in ``progress``.
    """
    if args.command == "tasks":
        status = _status(args.status)
        queue = _queue(args.queue)
        limit, offset = _count("--limit", args.limit), _count("--offset", args.offset)
        return (lambda q, say: _list(q, say, status, queue, limit, offset, as_json=args.json)), True
    if args.command == "show":
        task_id = _task_ids([args.task_id])[0]
        return (lambda q, say: _show(q, say, task_id, as_json=args.json)), True
    if args.command == "requeue":
        if args.failed and args.task_ids:
            raise _Refused("requeue takes TASK_ID... or --failed, not both")
        if not args.failed and not args.task_ids:
            raise _Refused("requeue needs TASK_ID... or --failed")
        if args.failed:
            queue = _queue(args.queue)
            return (lambda q, say: _requeue_failed(q, say, queue, progress, as_json=args.json)), False
        if args.queue is not None:
            raise _Refused("--queue goes with --failed only (the ids given name their tasks)")
        ids = _task_ids(args.task_ids)
        return (lambda q, say: _each(q, say, ids, "requeue", progress, as_json=args.json)), False
    if args.command == "cancel":
        ids = _task_ids(args.task_ids)
        return (lambda q, say: _each(q, say, ids, "cancel", progress, as_json=args.json)), False
    if args.command == "purge":
        given = args.older_than
        try:
            older_than = None if given is None else parse_duration(given)
        except ValueError as exc:
            raise _Refused(f"--older-than: {exc}") from None
        progress.purging = True
        return (lambda q, say: _purge(q, say, older_than, given, as_json=args.json)), False
    raise AssertionError(f"not a command of this module: {args.command}")


# ------------------------------------------------------------------------------------------------- arguments


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h``, ``7d`` or a plain number of seconds as a timedelta.

    The number is read as every seconds flag reads one (``cli_numbers.seconds``:
    ``1.5h``, ``1e3``, ``1_000``). Raises ValueError naming the accepted forms.
    A duration longer than a timedelta holds is ``timedelta.max`` (nothing
    finished that long ago).
    """
    given = text.strip().lower()
    unit = given[-1:] if given[-1:] in _UNIT_SECONDS else ""
    number = given[: len(given) - len(unit)]
    try:
        value = None if number != number.strip() else cli_numbers.seconds(number)  # '7 d': one word or none
    except argparse.ArgumentTypeError:
        value = None
    if value is None or math.isnan(value) or value < 0 or given.startswith("-"):
        negative = " (a duration cannot be negative)" if given.startswith("-") else ""
        raise ValueError(
            f"expected a duration such as 30s, 15m, 2h or 7d, or a number of seconds{negative}, got {text!r}"
        )
    seconds = value * _UNIT_SECONDS[unit]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return timedelta.max


def _status(given: str | None) -> TaskStatusName | None:
    if given is None:
        return None
    name = given.strip().lower()
    if name not in _STATUSES:
        raise _Refused(f"--status: unknown status {given!r}; expected one of {', '.join(_STATUSES)}")
    return cast(TaskStatusName, name)  # one of _STATUSES, checked above


def _queue(given: str | None) -> str | None:
    """``--queue``'s name, stripped as ``sitq worker -q`` and ``sitq stats --queue`` strip it."""
    from . import cli

    try:
        return cli._stats_queue(given)
    except ValidationError as exc:
        raise _Refused(exc.message) from None


def _count(flag: str, value: int) -> int:
    if value < 0:
        raise _Refused(f"{flag} must be 0 or more, got {value}")
    if value > _INT64_MAX:
        raise _Refused(f"{flag} must be at most {_INT64_MAX}, got {value}")
    return value


def _task_ids(given: list[str]) -> list[str]:
    """The ids as given, each once, in order; one ``TaskQueue`` would refuse (blank, NUL) is refused naming TASK_ID.

    All are checked before the first is acted on: exit code 2 means nothing was done.
    """
    for task_id in given:
        try:
            checks.given_task_id(task_id)
        except ValidationError as exc:
            raise _Refused(str(exc.message).replace("task_id", "TASK_ID", 1)) from None
    return list(dict.fromkeys(given))


# ----------------------------------------------------------------------------------------------- the commands


async def _list(
    queue: TaskQueue,
    say: Say,
    status: TaskStatusName | None,
    name: str | None,
    limit: int,
    offset: int,
    *,
    as_json: bool,
) -> int:
    """List the matches a page at a time, each page written before the next is read (memory: one page).

    ``--limit 0`` is every match. For a bounded ``--limit``, one more task is
    asked for, to tell whether more match than were shown.
    """
    pages = _pages(queue, status, name, offset, None if limit == 0 else limit + 1)
    shown = 0
    more = False
    opened = False  # JSON: "[" written; table: header written, column widths set
    widths: list[int] = []
    async for page in pages:
        if limit and shown + len(page) > limit:  # the one more asked for: it is not shown
            page = page[: limit - shown]
            more = True
        if page:
            if as_json:
                say(_json_chunk(page, first=not opened))
            else:
                rows = [_row(task) for task in page]
                if not opened:
                    widths = [max(len(row[column]) for row in [_HEADER, *rows]) for column in range(len(_HEADER) - 1)]
                    # the time columns hold a timestamp on later pages even when this one has only "-" there
                    widths = [
                        max(width, _TIME_WIDTH) if name in _TIME_COLUMNS else width
                        for name, width in zip(_HEADER, widths, strict=False)
                    ]
                    say(_table_line(_HEADER, widths))
                say("\n".join(_table_line(row, widths) for row in rows))
                del rows
            opened = True
            shown += len(page)
        del page  # held until the next page is read otherwise: two pages alive at a time
    if as_json:
        say("  }\n]" if opened else "[]")
    elif not opened:
        say("no tasks")
    elif more:
        say(f"({shown} shown, oldest first; more with --offset {offset + shown})")
    return 0


_HEADER = ["ID", "STATUS", "QUEUE", "FUNCTION", "ATTEMPTS", "ENQUEUED_AT", "DUE", "ERROR"]


def _row(task: Task) -> list[str]:
    """The cells of ``task``'s line in the ``sitq tasks`` table, in the order of ``_HEADER``."""
    return [
        task.id,
        str(task.status),
        _one_line(task.queue),
        _one_line(task.function_name) or "-",
        str(task.attempts),
        _when(task.enqueued_at),
        _when(task.eta) if task.status == TaskStatus.QUEUED else "-",  # when it runs (later, or a retry's time)
        _one_line(task.error or "", _ERROR_WIDTH),
    ]


_TIME_COLUMNS = ("ENQUEUED_AT", "DUE")
_TIME_WIDTH = len("2026-12-01T12:55:23Z")


def _table_line(row: list[str], widths: list[int]) -> str:
    """``row`` with every cell but the last padded to its column's width.

    The widths are those of the header and the first page: the table is written
    a page at a time, so a wider cell met later pushes the rest of its own line
    to the right and no other.
    """
    return "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()


def _json_chunk(page: list[Task], *, first: bool) -> str:
    """``page`` as a piece of ``json.dumps(every_record, indent=2, sort_keys=True)``, without its last line.

    That last line is each record's closing ``  }``: whether a comma follows it
    is known only once the next page is read, so the next piece starts with
    ``  },`` (this one with ``[``) and the list ends with ``  }`` and ``]``.
    Pieces and that end, each written with a newline, make that whole text.
    """
    items = [json.dumps(_task_record(task), indent=2, sort_keys=True).replace("\n", "\n  ") for task in page]
    text = ("[\n  " if first else "  },\n  ") + ",\n  ".join(items)
    assert text.endswith("\n  }"), "a record is an object of several fields"
    return text.removesuffix("\n  }")


async def _pages(
    queue: TaskQueue, status: TaskStatusName | None, name: str | None, offset: int, wanted: int | None
) -> AsyncIterator[list[Task]]:
    """The tasks matching, from ``offset`` on, ``READ_PAGE`` at most a page; ``wanted`` in all, or every one if None.

    A page is not held once given: the caller decides how long it lives. A
    task changing meanwhile may be missed or met twice, as in any offset paging.
    """
    got = 0
    while wanted is None or got < wanted:
        asked = READ_PAGE if wanted is None else min(READ_PAGE, wanted - got)
        page = await queue.list_tasks(status=status, queue=name, limit=asked, offset=offset)
        count = len(page)
        if count:
            yield page
        del page
        if count < asked:
            return
        got += count
        offset += count


async def _show(queue: TaskQueue, say: Say, task_id: str, *, as_json: bool) -> int:
    task = await queue.get_task(task_id)
    if task is None:
        sys.stderr.write(f"sitq: error: no task with id {task_id!r}\n")
        return 1
    result = await queue.get_result(task_id, timeout=0) if task.status in FINAL_STATUSES else None
    if as_json:
        shown = {"task": _task_record(task), "result": None if result is None else _result_record(result)}
        say(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    for line in _fields(_task_record(task), task.serializer):
        say(line)
    if result is None:
        say("result: - (not final yet)" if not task.status.is_final else "result: - (none stored)")
        return 0
    say("result:")
    for line in _fields(_result_record(result), result.serializer, indent="  "):
        say(line)
    return 0


async def _requeue_failed(queue: TaskQueue, say: Say, name: str | None, progress: _Progress, *, as_json: bool) -> int:
    """Requeue every failed task (of queue ``name``), each at most once, ``PAGE`` per store call (``requeue_many``).

    Failed tasks are read ``READ_PAGE`` at a time (on SQLite each read sorts
    every failed task). Requeuing takes tasks out of the failed set, so each
    page is read from the start again rather than at a growing offset (which
    would skip a page after each one requeued). A task that fails again while
    this runs is met again: it is stepped over, never requeued twice, so this
    always ends.
    """
    seen: set[str] = set()
    requeued: list[str] = []
    progress.past = "requeued"
    offset = 0
    while True:
        page = await queue.list_tasks(status=TaskStatus.FAILED.value, queue=name, limit=READ_PAGE, offset=offset)
        if not page:
            break
        fresh = [task.id for task in page if task.id not in seen]
        read = len(page)
        del page  # only the ids are kept
        if not fresh:  # all requeued by this command already, and failed again since
            offset += read
            continue
        seen.update(fresh)
        for start in range(0, len(fresh), PAGE):  # a page read is requeued PAGE ids per store call
            ids = fresh[start : start + PAGE]
            progress.under_way = len(ids)
            answers = await queue.requeue_many(ids)  # False: no longer failed (another process requeued or purged it)
            progress.under_way = 0
            done = [task_id for task_id, changed in zip(ids, answers, strict=True) if changed]
            requeued += done
            progress.done += len(done)
    if as_json:
        say(json.dumps({"requeued": requeued, "not_requeued": []}, indent=2, sort_keys=True))
    else:
        say(f"requeued {_tasks(len(requeued))}")
    return 0


async def _each(queue: TaskQueue, say: Say, ids: list[str], verb: str, progress: _Progress, *, as_json: bool) -> int:
    """``requeue`` (a page of ids per store call) or ``cancel`` each task given; the others are named on stderr.

    Those that could not be requeued or cancelled make the exit code 1. A
    running task that ``cancel`` only asked to stop (its worker ends it) is
    reported apart from those cancelled: it is still running.
    """
    done: list[str] = []
    stopping: list[str] = []
    refused: list[dict[str, str]] = []
    notes: list[str] = []
    past = "requeued" if verb == "requeue" else "cancelled"
    progress.past = past
    answered: list[tuple[str, bool]] = []
    step = PAGE if verb == "requeue" else 1
    for start in range(0, len(ids), step):
        page = ids[start : start + step]
        progress.under_way = len(page)
        answers = await queue.requeue_many(page) if verb == "requeue" else [await queue.cancel(page[0])]
        progress.under_way = 0
        progress.done += sum(map(bool, answers))
        answered += zip(page, answers, strict=True)
    for task_id, changed in answered:
        if changed:
            task = await queue.get_task(task_id) if verb == "cancel" else None
            if task is not None and task.status is TaskStatus.RUNNING:
                stopping.append(task_id)
                notes.append(
                    f"{task_id}: running: its worker is told to stop it, and it ends cancelled when the worker hears"
                )
            else:
                done.append(task_id)
        else:
            refused.append({"id": task_id, "reason": await _why_not(queue, task_id, verb)})
    if as_json:
        shown: dict[str, Any] = {past: done, f"not_{past}": refused}
        if verb == "cancel":
            shown["stop_requested"] = stopping
        say(json.dumps(shown, indent=2, sort_keys=True))
    else:
        asked = ""
        if stopping:
            many = "" if len(stopping) == 1 else "s"
            them = "it" if len(stopping) == 1 else "them"
            asked = f"; asked the worker{many} of {len(stopping)} running task{many} to stop {them}"
        say(f"{past} {_tasks(len(done))}{asked}")
        for note in notes:
            say(note)
    for item in refused:
        sys.stderr.write(f"sitq: error: cannot {verb} {item['id']}: {item['reason']}\n")
    return 1 if refused else 0


async def _why_not(queue: TaskQueue, task_id: str, verb: str) -> str:
    """Why ``verb`` changed nothing for this task, read after the fact."""
    task = await queue.get_task(task_id)
    if task is None:
        return "no task with this id"
    if verb == "requeue":
        return f"it is {task.status}, not failed or cancelled"
    if task.status.is_final:
        return f"it already finished ({task.status})"
    if task.status is TaskStatus.RUNNING and Capability.CANCEL_RUNNING not in queue.backend.capabilities:
        return f"it is running, and a {type(queue.backend).__name__} cannot tell a running task's worker to stop"
    return f"it is {task.status}"


async def _purge(queue: TaskQueue, say: Say, older_than: timedelta | None, given: str | None, *, as_json: bool) -> int:
    deleted = await queue.purge(older_than=older_than)
    if as_json:
        say(json.dumps({"deleted": deleted}, sort_keys=True))
        return 0
    text = f"deleted {deleted} final task{'' if deleted == 1 else 's'}"
    if given is not None:
        shown = given.strip().lower()
        text += f" finished more than {shown}{'s' if shown[-1].isdigit() else ''} ago"
    say(text)
    return 0


# ------------------------------------------------------------------------------------------------------ output


def _tasks(count: int) -> str:
    return f"{count} task{'' if count == 1 else 's'}"


def _escaped(text: str) -> str:
    """``text`` with control characters but newline and tab as repr writes them (``\\x1b``, ``\\r``, ``\\u202e``).

    A stored text (a task's error) cannot then drive the terminal: colours, titles, a line overwritten,
    or text shown in another order than it is stored in (bidi controls).
    """
    return escaped_controls(text)


def _one_line(text: str, width: int | None = None) -> str:
    """``text`` on one line (runs of whitespace, newlines too, as one space), escaped, cut to ``width`` with ``...``."""
    flat = _escaped(" ".join(text.split()))
    if width is not None and len(flat) > width:
        return flat[: width - 3] + "..."
    return flat


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: datetimes in ISO 8601 (UTC), enums as their value."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _task_record(task: Task) -> dict[str, Any]:
    """Every field of ``task``; the payload (it may hold code: never decoded here) as its size."""
    record = {field.name: _plain(getattr(task, field.name)) for field in dataclasses.fields(task)}
    record["payload_bytes"] = len(record.pop("payload"))
    return record


def _result_record(result: Result) -> dict[str, Any]:
    """Every field of ``result``; the value as its size (decoding it would run the serializer on stored bytes)."""
    record = {field.name: _plain(getattr(result, field.name)) for field in dataclasses.fields(result)}
    value = record.pop("value")
    record["value_bytes"] = None if value is None else len(value)
    return record


def _fields(record: dict[str, Any], serializer: str, *, indent: str = "") -> list[str]:
    """``name: value`` lines, values in one column; a value of several lines continues in that column."""
    sizes = {"payload_bytes": "payload", "value_bytes": "value"}
    width = max(len(sizes.get(name, name)) for name in record) + 2
    lines: list[str] = []
    for name, value in record.items():
        if name in sizes:
            shown = "-" if value is None else f"{value} bytes ({serializer}; not decoded here)"
            name = sizes[name]
        elif value is None:
            shown = "-"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = _escaped(str(value))
        first, *rest = shown.splitlines() or [""]
        lines.append(f"{indent}{name + ':':<{width}}{first}".rstrip())
        lines.extend(f"{indent}{'':<{width}}{line}".rstrip() for line in rest)
    return lines
