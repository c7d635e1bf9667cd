"""``sitq tasks`` writes each page of tasks as it is read, and ``requeue --failed`` reads large pages.

``--limit 0`` on a store of a million tasks held every Task and the whole
output before writing a byte (gigabytes in JSON); each page is now written
before the next is read, so only one page of tasks is alive at a time. The
output is the same text as before: JSON byte for byte what one
``json.dumps(list, indent=2, sort_keys=True)`` gave; the table takes its
column widths from the header and the first page (a wider cell met later
pushes the rest of its own line). Real SQLite files; the spy on
``TaskQueue.list_tasks`` only records what had happened when each page was asked
for. ``READ_PAGE`` is made small so that a few tasks make several pages.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_core import cli_tasks
from sitq_core.cli import main
from sitq_core.models import Outcome, Task

from sitq_test_tasks import add, boom

PAGE = 3


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)
    monkeypatch.setattr(cli_tasks, "READ_PAGE", PAGE)


def store(path: Path, queues: Sequence[str], *, failed: int = 0) -> list[str]:
    """A task per queue name given, oldest first; the first ``failed`` of them failed (a two-line error)."""

    async def go() -> list[str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            ids = [
                await queue.with_options(queue_name=name).enqueue(boom if i < failed else add, i)
                for i, name in enumerate(queues)
            ]
            if failed:
                leases = await queue.backend.reserve(worker_id="test", limit=failed, lease_seconds=60, queues=queues)
                assert sorted(lease.id for lease in leases) == sorted(ids[:failed])
                outcomes = [Outcome(x.id, x.lease_token, "failed", error="no\nluck") for x in leases]
                assert all(await queue.backend.finish_many(outcomes))
            return ids

    return asyncio.run(go())


def records(path: Path) -> list[dict[str, Any]]:
    """Every task of the store as ``sitq tasks --json`` shows one, read in one call (as the command used to)."""

    async def go() -> list[dict[str, Any]]:
        async with SQLiteBackend(path) as backend:
            return [cli_tasks._task_record(task) for task in await backend.list_tasks(limit=1000)]

    return asyncio.run(go())


def sitq(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), stdout=out)
    return code, out.getvalue()


@dataclass
class Read:
    """One ``list_tasks`` call of the command: what it asked, and what had happened before it."""

    limit: int
    offset: int
    written: str  # the command's output so far
    tasks_alive: int  # Task objects of the pages read before that are still alive (held by the command)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Read], io.StringIO]:
    """The command's ``list_tasks`` calls, each with the output written to the returned stream before it."""
    out = io.StringIO()
    seen: list[Read] = []
    given: dict[int, str] = {}  # id() of each Task object returned to the command: its task's id
    real = TaskQueue.list_tasks

    def still_alive() -> int:
        """Task objects given to the command and not freed (Task has no weakref: by id(), checked against its id)."""
        gc.collect()
        return sum(isinstance(it, Task) and given.get(id(it)) == it.id for it in gc.get_objects())

    async def spied(self: TaskQueue, **kwargs: Any) -> list[Task]:
        # What the command holds while it waits for the page: counted once it has let the event loop run (the
        # loop's handle that resumed the command holds the previous read's answer until the command waits again)
        await asyncio.sleep(0)
        seen.append(Read(kwargs["limit"], kwargs["offset"], out.getvalue(), still_alive()))
        page = await real(self, **kwargs)
        given.update((id(task), task.id) for task in page)
        return page

    monkeypatch.setattr(TaskQueue, "list_tasks", spied)
    return seen, out


# ----------------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("count", [0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 2])
def test_json_of_every_task_is_byte_for_byte_one_json_dumps(tmp_path: Path, count: int) -> None:
    path = tmp_path / "tasks.db"
    store(path, ["default"] * count, failed=min(count, 2))
    code, out = sitq("tasks", "--limit", "0", "--json", "-b", f"sqlite:///{path}")
    assert code == 0
    assert out == json.dumps(records(path), indent=2, sort_keys=True) + "\n"
    assert (out == "[]\n") == (count == 0)


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (PAGE, 0), (PAGE + 1, 0), (2 * PAGE, 1), (7, 3), (50, 0)])
def test_json_of_a_limited_listing_spanning_pages_is_one_json_dumps(tmp_path: Path, limit: int, offset: int) -> None:
    path = tmp_path / "tasks.db"
    store(path, ["default"] * (3 * PAGE + 1), failed=2)
    code, out = sitq("tasks", "--limit", str(limit), "--offset", str(offset), "--json", "-b", f"sqlite:///{path}")
    assert code == 0
    assert out == json.dumps(records(path)[offset : offset + limit], indent=2, sort_keys=True) + "\n"


def test_json_with_filters_across_pages(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store(path, ["mail", "other"] * (2 * PAGE), failed=2 * PAGE)
    code, out = sitq(
        "tasks", "--status", "failed", "--queue", "mail", "--limit", "0", "--json", "-b", f"sqlite:///{path}"
    )
    expected = [row for row in records(path) if row["status"] == "failed" and row["queue"] == "mail"]
    assert len(expected) == PAGE and code == 0
    assert out == json.dumps(expected, indent=2, sort_keys=True) + "\n"


# ------------------------------------------------------------------------------------------- a page at a time


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_each_page_is_written_before_the_next_is_read_and_not_held_after(
    tmp_path: Path, reads: tuple[list[Read], io.StringIO], as_json: bool
) -> None:
    path = tmp_path / "tasks.db"
    ids = store(path, ["default"] * (3 * PAGE + 1), failed=2)
    seen, out = reads
    code = main(["tasks", "--limit", "0", "-b", f"sqlite:///{path}", *(["--json"] if as_json else [])], stdout=out)
    assert code == 0
    assert [(read.limit, read.offset) for read in seen] == [(PAGE, 0), (PAGE, PAGE), (PAGE, 2 * PAGE), (PAGE, 3 * PAGE)]
    pages = [ids[start : start + PAGE] for start in range(0, len(ids), PAGE)]
    for number, read in enumerate(seen):
        written = [task_id for task_id in ids if task_id in read.written]
        assert written == [task_id for page in pages[:number] for task_id in page], f"before read {number}"
        assert read.tasks_alive == 0, f"before read {number}: tasks of pages already written are still held"
    assert all(task_id in out.getvalue() for task_id in ids)


def test_a_limited_listing_reads_a_page_at_a_time_and_one_task_more(
    tmp_path: Path, reads: tuple[list[Read], io.StringIO]
) -> None:
    path = tmp_path / "tasks.db"
    store(path, ["default"] * (3 * PAGE))
    seen, out = reads
    assert main(["tasks", "--limit", str(2 * PAGE), "--offset", "1", "-b", f"sqlite:///{path}"], stdout=out) == 0
    assert [(read.limit, read.offset) for read in seen] == [(PAGE, 1), (PAGE, 1 + PAGE), (1, 1 + 2 * PAGE)]
    assert out.getvalue().splitlines()[-1] == f"({2 * PAGE} shown, oldest first; more with --offset {2 * PAGE + 1})"


# ---------------------------------------------------------------------------------------------------- table


def rows_of(out: str) -> list[str]:
    return out.splitlines()[1:]


@pytest.mark.parametrize(
    ("limit", "offset", "shown", "more"),
    [
        ("0", "0", 3 * PAGE + 1, None),
        (str(3 * PAGE + 1), "0", 3 * PAGE + 1, None),
        (str(2 * PAGE), "0", 2 * PAGE, f"({2 * PAGE} shown, oldest first; more with --offset {2 * PAGE})"),
        (str(PAGE), "2", PAGE, f"({PAGE} shown, oldest first; more with --offset {PAGE + 2})"),
        (str(PAGE + 1), str(2 * PAGE), PAGE + 1, None),
        ("5", str(3 * PAGE + 1), 0, None),
    ],
)
def test_table_says_when_more_match_than_shown_across_pages(
    tmp_path: Path, limit: str, offset: str, shown: int, more: str | None
) -> None:
    path = tmp_path / "tasks.db"
    ids = store(path, ["default"] * (3 * PAGE + 1))
    code, out = sitq("tasks", "--limit", limit, "--offset", offset, "-b", f"sqlite:///{path}")
    assert code == 0
    if not shown:
        assert out == "no tasks\n"
        return
    lines = out.splitlines()
    assert lines[0].split()[0] == "ID"
    assert [line.split()[0] for line in lines[1 : shown + 1]] == ids[int(offset) : int(offset) + shown]
    assert lines[shown + 1 :] == ([more] if more else [])


def test_table_of_one_page_aligns_every_column_on_its_widest_cell(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store(path, ["a", "a-longer-queue", "a"])
    lines = sitq("tasks", "--limit", "0", "-b", f"sqlite:///{path}")[1].splitlines()
    assert len({line.index("FUNCTION" if number == 0 else "sitq_test_tasks") for number, line in enumerate(lines)}) == 1


def test_table_keeps_the_widths_of_the_first_page_and_a_wider_cell_later_pushes_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    queues = ["a", "bb", "a", "a-much-longer-queue-name", "a", "a", "a"]
    store(path, queues)
    code, out = sitq("tasks", "--limit", "0", "-b", f"sqlite:///{path}")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + len(queues)
    column = lines[0].index("FUNCTION")
    assert column == lines[0].index("QUEUE") + len("QUEUE  ")  # "QUEUE" is wider than the first page's names
    at = [line.index("sitq_test_tasks") for line in lines[1:]]
    pushed = queues.index("a-much-longer-queue-name")
    assert at[pushed] == lines[0].index("QUEUE") + len("a-much-longer-queue-name  ")
    assert [where for number, where in enumerate(at) if number != pushed] == [column] * (len(queues) - 1)


def test_table_time_columns_hold_a_timestamp_when_the_first_page_has_none_due(tmp_path: Path) -> None:
    """DUE was 3 wide when the first page held only finished tasks ("-"): later queued rows stuck out by 17."""
    path = tmp_path / "tasks.db"
    store(path, ["a"] * (PAGE + 2), failed=PAGE)  # the first page failed (DUE "-"), the rest queued
    code, out = sitq("tasks", "--limit", "0", "-b", f"sqlite:///{path}")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + PAGE + 2
    error_column = lines[0].index("ERROR")
    assert [line.index("no luck") for line in lines[1 : 1 + PAGE]] == [error_column] * PAGE
    due_column = lines[0].index("DUE")
    assert all(line[due_column:].split()[0].endswith("Z") for line in lines[1 + PAGE :])
    assert all(len(line) <= error_column for line in lines[1 + PAGE :])  # nothing sticks out past DUE


# --------------------------------------------------------------------------------------------- requeue --failed


def test_requeue_failed_reads_large_pages_and_requeues_a_few_hundred_ids_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: tuple[list[Read], io.StringIO]
) -> None:
    """READ_PAGE failed tasks per read (each read sorts them all on SQLite), PAGE ids per ``requeue_many``."""
    path = tmp_path / "tasks.db"
    ids = store(path, ["default"] * (2 * PAGE + 2), failed=2 * PAGE + 1)
    monkeypatch.setattr(cli_tasks, "PAGE", 2)
    chunks: list[list[str]] = []
    real = TaskQueue.requeue_many

    async def counted(self: TaskQueue, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        chunks.append(list(task_ids))
        return await real(self, task_ids, eta=eta)

    monkeypatch.setattr(TaskQueue, "requeue_many", counted)
    seen, out = reads
    assert main(["requeue", "--failed", "-b", f"sqlite:///{path}"], stdout=out) == 0
    assert out.getvalue() == f"requeued {2 * PAGE + 1} tasks\n"
    assert [(read.limit, read.offset) for read in seen] == [(PAGE, 0)] * 4  # each read finds the next failed ones
    assert [len(chunk) for chunk in chunks] == [2, 1, 2, 1, 1]
    assert [task_id for chunk in chunks for task_id in chunk] == ids[: 2 * PAGE + 1]
    assert {row["status"] for row in records(path)} == {"queued"}
