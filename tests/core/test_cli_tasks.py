"""``sitq tasks``, ``show``, ``requeue``, ``cancel`` and ``purge`` on real SQLite files.

The commands choose their store as ``sitq stats`` does (``-b``/``SITQ_BACKEND``,
the same error lines and refusals), list oldest first, and exit 0 when all went
well, 1 when a given task could not be shown/requeued/cancelled, 2 for bad input.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue
from sitq_core import cli_tasks
from sitq_core.cli import main
from sitq_core.models import Outcome

from sitq_test_helpers import run_sitq as sitq
from sitq_test_tasks import add, boom

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: first line\nsecond line'


async def seed(queue: TaskQueue) -> dict[str, str]:
    """One task per state, oldest first: success, failed (a two-line error), cancelled, queued (queue 'mail')."""
    ids = {
        "success": await queue.enqueue(add, 1, 2),
        "failed": await queue.enqueue(boom, "first line\nsecond line"),
        "cancelled": await queue.enqueue(add, 3),
        "queued": await queue.with_options(queue_name="mail").enqueue(add, 4),
    }
    assert await queue.cancel(ids["cancelled"])
    await finish(queue, {ids["success"]: "success", ids["failed"]: "failed"})
    return ids


async def finish(queue: TaskQueue, kinds: dict[str, str], *, ago: timedelta = timedelta(0)) -> None:
    """Reserve the tasks of ``kinds`` (and only those: they are the due ones) and end each as its kind says."""
    backend = queue.backend
    leases = await backend.reserve(worker_id="test", limit=len(kinds), lease_seconds=60, queues=["default"])
    assert sorted(lease.id for lease in leases) == sorted(kinds)
    finished_at = backend.now() - ago
    outcomes = [
        Outcome(
            lease.id,
            lease.lease_token,
            "success" if kinds[lease.id] == "success" else "failed",
            value=b"v" if kinds[lease.id] == "success" else None,
            error=None if kinds[lease.id] == "success" else "first line\nsecond line",
            traceback=None if kinds[lease.id] == "success" else TRACEBACK,
            started_at=finished_at,
            finished_at=finished_at,
        )
        for lease in leases
    ]
    assert all(await backend.finish_many(outcomes))


def make_store(path: Path) -> tuple[str, dict[str, str]]:
    async def go() -> dict[str, str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            return await seed(queue)

    return f"sqlite:///{path}", asyncio.run(go())


def statuses(path: Path) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with SQLiteBackend(path) as backend:
            return {task.id: str(task.status) for task in await backend.list_tasks(limit=1000)}

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    path = tmp_path / "tasks.db"
    url, ids = make_store(path)
    return url, ids, path


# ---------------------------------------------------------------------------------------------------- sitq tasks


def test_tasks_is_a_table_oldest_first_with_the_error_on_one_line(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = store
    code, out, err = sitq(capsys, "tasks", "-b", url)
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATUS", "QUEUE", "FUNCTION", "ATTEMPTS", "ENQUEUED_AT", "DUE", "ERROR"]
    assert [row.split()[0] for row in rows] == [ids["success"], ids["failed"], ids["cancelled"], ids["queued"]]
    failed = rows[1].split(maxsplit=7)
    assert failed[1:5] == ["failed", "default", "sitq_test_tasks:boom", "1"]
    assert failed[5].endswith("Z") and failed[6] == "-" and failed[7] == "first line second line"
    assert rows[3].split()[1:5] == ["queued", "mail", "sitq_test_tasks:add", "0"]


def test_tasks_shows_when_a_queued_task_is_due(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A task delayed an hour looked like one due now: only --json and `sitq show` told its eta (outside tester)."""
    url = f"sqlite:///{tmp_path / 'due.db'}"
    with SyncTaskQueue(url) as queue:
        now_id = queue.enqueue(add, 1, 2)
        later_id = queue.with_options(delay=3600).enqueue(add, 3, 4)
        later = queue.get_task(later_id)
        assert later is not None
    code, out, _ = sitq(capsys, "tasks", "-b", url)
    rows = {row.split()[0]: row.split() for row in out.splitlines()[1:]}
    assert code == 0
    assert rows[now_id][6] == rows[now_id][5]  # due as it was enqueued
    assert rows[later_id][6] == later.eta.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") != rows[later_id][5]


def test_tasks_filters_by_status_and_queue_and_pages(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = store
    assert [row.split()[0] for row in sitq(capsys, "tasks", "-b", url, "--status", "failed")[1].splitlines()[1:]] == [
        ids["failed"]
    ]
    assert [row.split()[0] for row in sitq(capsys, "tasks", "-b", url, "--queue", "mail")[1].splitlines()[1:]] == [
        ids["queued"]
    ]
    code, out, _ = sitq(capsys, "tasks", "-b", url, "--limit", "2", "--offset", "1")
    lines = out.splitlines()
    assert code == 0 and [row.split()[0] for row in lines[1:3]] == [ids["failed"], ids["cancelled"]]
    assert lines[3] == "(2 shown, oldest first; more with --offset 3)"
    everything = sitq(capsys, "tasks", "-b", url, "--limit", "0")[1].splitlines()
    assert len(everything) == 5 and not everything[-1].startswith("(")


def test_tasks_with_nothing_to_list_says_so(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, _, _ = store
    assert sitq(capsys, "tasks", "-b", url, "--queue", "nosuch") == (0, "no tasks\n", "")
    assert sitq(capsys, "tasks", "-b", url, "--queue", "nosuch", "--json") == (0, "[]\n", "")


def test_tasks_json_keeps_every_field_but_the_payload(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = store
    code, out, _ = sitq(capsys, "tasks", "-b", url, "--status", "failed", "--json")
    (row,) = json.loads(out)
    assert code == 0 and row["id"] == ids["failed"] and row["status"] == "failed"
    assert row["function_name"] == "sitq_test_tasks:boom" and row["error"] == "first line\nsecond line"
    assert row["enqueued_at"].endswith("+00:00") and "payload" not in row and row["payload_bytes"] > 0


@pytest.mark.parametrize("given", ["bogus", ""])
def test_a_bad_status_names_the_option_and_the_statuses(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], given: str
) -> None:
    url, _, _ = store
    code, out, err = sitq(capsys, "tasks", "-b", url, "--status", given)
    assert (code, out) == (2, "")
    assert err == (
        f"sitq: error: --status: unknown status {given!r}; expected one of queued, running, success, failed, "
        "cancelled\n"
    )


@pytest.mark.parametrize("given", ["Failed", "FAILED", " failed ", "\tfailed\n"])
def test_status_ignores_case_and_surrounding_spaces_as_the_guide_says(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], given: str
) -> None:
    """manage-tasks.md: case and surrounding spaces are ignored; anything else is still an error naming --status."""
    url, ids, _ = store
    code, out, err = sitq(capsys, "tasks", "-b", url, "--status", given)
    assert (code, err) == (0, "")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [ids["failed"]]
    code, out, err = sitq(capsys, "tasks", "-b", url, "--status", "bogus")
    assert (code, out) == (2, "") and err.startswith("sitq: error: --status: unknown status 'bogus'"), err


@pytest.mark.parametrize("option", ["--limit", "--offset"])
def test_a_negative_limit_or_offset_names_the_option(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], option: str
) -> None:
    url, _, _ = store
    code, out, err = sitq(capsys, "tasks", "-b", url, f"{option}=-1")
    assert (code, out) == (2, "")
    assert err == f"sitq: error: {option} must be 0 or more, got -1\n"


# ----------------------------------------------------------------------------------------------------- sitq show


def test_show_gives_the_task_and_its_result(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = store
    code, out, err = sitq(capsys, "show", ids["failed"], "-b", url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["id:", ids["failed"]]
    assert "function_name:" in out and "sitq_test_tasks:boom" in out and "cancel_requested:" in out
    assert "result:" in lines
    assert any(line.strip() == "ValueError: first line" for line in lines)  # the traceback, line by line
    assert sum("second line" in line for line in lines) == 3  # the task's error, the result's and the traceback


def test_show_json_holds_the_task_and_the_result(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, _ = store
    shown = json.loads(sitq(capsys, "show", ids["success"], "-b", url, "--json")[1])
    assert shown["task"]["id"] == ids["success"] and shown["task"]["status"] == "success"
    assert shown["result"]["status"] == "success" and shown["result"]["value_bytes"] == 1
    assert shown["result"]["attempts"] == 1 and shown["result"]["finished_at"].endswith("+00:00")
    queued = json.loads(sitq(capsys, "show", ids["queued"], "-b", url, "--json")[1])
    assert queued["task"]["queue"] == "mail" and queued["result"] is None


def test_show_of_an_unknown_id_exits_1(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, _, _ = store
    assert sitq(capsys, "show", "nosuch", "-b", url) == (1, "", "sitq: error: no task with id 'nosuch'\n")


def test_an_empty_task_id_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, _, _ = store
    code, out, err = sitq(capsys, "show", "", "-b", url)
    assert (code, out) == (2, "")
    assert err == "sitq: error: TASK_ID must be a non-empty string, got ''\n"


# -------------------------------------------------------------------------------------------------- sitq requeue


def test_requeue_runs_failed_and_cancelled_tasks_again_and_names_the_others(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, path = store
    given = [ids["failed"], ids["cancelled"], ids["queued"], "nosuch", ids["failed"]]
    code, out, err = sitq(capsys, "requeue", *given, "-b", url)
    assert (code, out) == (1, "requeued 2 tasks\n")
    assert err.splitlines() == [
        f"sitq: error: cannot requeue {ids['queued']}: it is queued, not failed or cancelled",
        "sitq: error: cannot requeue nosuch: no task with this id",
    ]
    now = statuses(path)
    assert now[ids["failed"]] == now[ids["cancelled"]] == "queued" and now[ids["success"]] == "success"
    assert sitq(capsys, "requeue", ids["success"], "-b", url)[0] == 1


def test_requeue_failed_takes_every_failed_task_page_after_page(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requeuing empties the pages it reads: paging by offset over them would have skipped every other page."""
    path = tmp_path / "tasks.db"

    async def go() -> list[str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            failed = [await queue.enqueue(boom) for _ in range(7)]
            await finish(queue, dict.fromkeys(failed, "failed"))
            await queue.with_options(queue_name="mail").enqueue(add, 1)
            return failed

    failed = asyncio.run(go())
    monkeypatch.setattr(cli_tasks, "READ_PAGE", 2)
    monkeypatch.setattr(cli_tasks, "PAGE", 2)
    code, out, err = sitq(capsys, "requeue", "--failed", "-b", f"sqlite:///{path}")
    assert (code, out, err) == (0, "requeued 7 tasks\n", "")
    assert all(statuses(path)[task_id] == "queued" for task_id in failed)
    assert sitq(capsys, "requeue", "--failed", "-b", f"sqlite:///{path}") == (0, "requeued 0 tasks\n", "")


def test_requeue_failed_keeps_to_the_queue_given(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, path = store
    assert sitq(capsys, "requeue", "--failed", "--queue", "mail", "-b", url) == (0, "requeued 0 tasks\n", "")
    assert statuses(path)[ids["failed"]] == "failed"
    assert sitq(capsys, "requeue", "--failed", "--queue", "default", "-b", url) == (0, "requeued 1 task\n", "")
    assert statuses(path)[ids["failed"]] == "queued"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "requeue needs TASK_ID... or --failed"),
        (["x", "--failed"], "requeue takes TASK_ID... or --failed, not both"),
        (["x", "--queue", "mail"], "--queue goes with --failed only (the ids given name their tasks)"),
    ],
)
def test_requeue_needs_ids_or_failed(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], args: list[str], expected: str
) -> None:
    url, _, _ = store
    assert sitq(capsys, "requeue", *args, "-b", url) == (2, "", f"sitq: error: {expected}\n")


# --------------------------------------------------------------------------------------------------- sitq cancel


def test_cancel_reports_as_requeue_does(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path]
) -> None:
    url, ids, path = store
    assert sitq(capsys, "cancel", ids["queued"], "-b", url) == (0, "cancelled 1 task\n", "")
    assert statuses(path)[ids["queued"]] == "cancelled"
    code, out, err = sitq(capsys, "cancel", ids["success"], "nosuch", "-b", url, "--json")
    assert code == 1
    assert json.loads(out) == {
        "cancelled": [],
        "stop_requested": [],
        "not_cancelled": [
            {"id": ids["success"], "reason": "it already finished (success)"},
            {"id": "nosuch", "reason": "no task with this id"},
        ],
    }
    assert err.splitlines() == [
        f"sitq: error: cannot cancel {ids['success']}: it already finished (success)",
        "sitq: error: cannot cancel nosuch: no task with this id",
    ]


def test_cancel_of_a_running_task_asks_its_worker(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"

    async def go() -> str:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            task_id = await queue.enqueue(add, 1)
            await queue.backend.reserve(worker_id="test", limit=1, lease_seconds=60)
            return task_id

    task_id = asyncio.run(go())
    code, out, err = sitq(capsys, "cancel", task_id, "-b", f"sqlite:///{path}")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "cancelled 0 tasks; asked the worker of 1 running task to stop it",
        f"{task_id}: running: its worker is told to stop it, and it ends cancelled when the worker hears",
    ]


# ---------------------------------------------------------------------------------------------------- sitq purge


def test_purge_deletes_final_tasks_finished_before_the_duration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "tasks.db"

    async def go() -> tuple[list[str], list[str]]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            old = [await queue.enqueue(add, n) for n in range(3)]
            await finish(queue, dict.fromkeys(old, "success"), ago=timedelta(hours=3))
            new = [await queue.enqueue(boom)]
            await finish(queue, dict.fromkeys(new, "failed"))
            new.append(await queue.enqueue(add, 9))  # queued: never purged
            return old, new

    _, new = asyncio.run(go())
    url = f"sqlite:///{path}"
    assert sitq(capsys, "purge", "--older-than", "1h", "-b", url) == (
        0,
        "deleted 3 final tasks finished more than 1h ago\n",
        "",
    )
    assert sorted(statuses(path)) == sorted(new)
    assert sitq(capsys, "purge", "-b", url, "--json") == (0, '{"deleted": 1}\n', "")
    assert list(statuses(path)) == [new[1]]


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("90", 90), ("1.5h", 5400), (" 2H ", 7200), ("0", 0),
     ("1e3", 1000), ("1_0", 10), ("1e2m", 6000), (".5", 0.5)],
)  # fmt: skip
def test_durations(given: str, seconds: float) -> None:
    assert cli_tasks.parse_duration(given) == timedelta(seconds=seconds)


def test_a_duration_longer_than_a_timedelta_holds_is_the_longest_one() -> None:
    """Nothing finished that long ago: purge deletes nothing, rather than failing with an OverflowError."""
    assert cli_tasks.parse_duration("99999999999d") == timedelta.max
    assert cli_tasks.parse_duration("1e30") == cli_tasks.parse_duration(str(10**30)) == timedelta.max
    assert cli_tasks.parse_duration("1e400") == cli_tasks.parse_duration("inf") == timedelta.max


@pytest.mark.parametrize("given", ["", "x", "5w", "-5m", "h", "nan", "1.5.2h", "nand", "7 d", "0x10", "1__0", "_1"])
def test_a_bad_duration_names_the_option_and_the_forms(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], given: str
) -> None:
    url, _, path = store
    before = statuses(path)
    code, out, err = sitq(capsys, "purge", f"--older-than={given}", "-b", url)
    assert (code, out) == (2, "")
    assert err.startswith("sitq: error: --older-than: expected a duration such as 30s, 15m, 2h or 7d, or a number")
    assert err.endswith(f"got {given!r}\n")
    assert statuses(path) == before


# ----------------------------------------------------------------------------------- the store, as sitq stats


def test_the_store_comes_from_sitq_backend_too(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ids, _ = store
    monkeypatch.setenv("SITQ_BACKEND", url)
    code, out, _ = sitq(capsys, "tasks", "--status", "cancelled")
    assert code == 0 and out.splitlines()[1].split()[0] == ids["cancelled"]


@pytest.mark.parametrize("command", [["tasks"], ["show", "x"], ["requeue", "x"], ["cancel", "x"], ["purge"]])
def test_a_missing_store_is_reported_and_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "typo.db"
    code, out, err = sitq(capsys, *command, "-b", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err == f"sitq: error: no sitq database at {str(path)!r} (check the --backend URL)\n"
    assert not path.exists()


@pytest.mark.parametrize("command", [["stats"], ["tasks"], ["show", "x"], ["purge"]])
def test_an_empty_file_is_reported_as_no_store_yet_and_left_as_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    """A connect that failed on a full disk leaves a 0-byte file: it is no store yet, not another program's file."""
    path = tmp_path / "new.db"
    path.touch()
    code, out, err = sitq(capsys, *command, "-b", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err == (
        f"sitq: error: {str(path)!r} is an empty file, no sitq database yet (a producer or worker sets it up) "
        "(check the --backend URL)\n"
    )
    assert path.stat().st_size == 0


@pytest.mark.parametrize("command", [["tasks"], ["show", "x"], ["requeue", "--failed"], ["cancel", "x"], ["purge"]])
def test_an_in_memory_store_and_a_bad_serializer_are_refused_as_by_stats(
    capsys: pytest.CaptureFixture[str], store: tuple[str, dict[str, str], Path], command: list[str]
) -> None:
    url, _, _ = store
    code, _, err = sitq(capsys, *command, "-b", "sqlite://")
    assert code == 2 and err.startswith("sitq: error: the SQLiteBackend from the --backend URL lives in this process")
    code, _, err = sitq(capsys, *command, "-b", f"{url}?serializer=nosuch")
    assert code == 2 and err == sitq(capsys, "stats", "-b", f"{url}?serializer=nosuch")[2]
    assert err.startswith("sitq: error: --backend (its ?serializer=): ")
    code, _, err = sitq(capsys, *command, "-b", "nosuch://x")
    assert code == 2 and err.startswith("sitq: error: --backend: no backend named 'nosuch'")


def test_backend_before_the_command_says_where_it_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-b", "sqlite:///x.db", "requeue", "--failed"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sitq: error: -b/--backend goes after the command name: sitq requeue -b sqlite:///x.db"
    )


# ------------------------------------------------------------------------------------- the console script itself


def test_the_console_script_lists_requeues_and_purges(store: tuple[str, dict[str, str], Path]) -> None:
    url, ids, path = store
    script = Path(sys.executable).with_name("sitq")
    env = {key: value for key, value in os.environ.items() if key != "SITQ_BACKEND"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, env=env)

    listed = run("tasks", "-b", url, "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [ids["failed"]]
    requeued = run("requeue", "--failed", "-b", url)
    assert (requeued.returncode, requeued.stdout, requeued.stderr) == (0, "requeued 1 task\n", "")
    shown = run("show", "nosuch", "-b", url)
    assert (shown.returncode, shown.stdout, shown.stderr) == (1, "", "sitq: error: no task with id 'nosuch'\n")
    purged = run("purge", "-b", url)
    assert (purged.returncode, purged.stdout) == (0, "deleted 2 final tasks\n"), purged.stderr
    assert sorted(statuses(path)) == sorted([ids["failed"], ids["queued"]])
