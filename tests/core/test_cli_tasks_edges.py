"""Edges of ``sitq tasks``/``show``/``requeue``/``cancel``/``purge`` an on-call tester met, on real SQLite files.

Ids and queue names refused before anything is done, output that reaches a
pipe whole (or exit 1), Ctrl-C ending in one line with a count, task texts
that cannot drive the terminal, and negative durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_core import cli_tasks
from sitq_core.models import Outcome

from sitq_test_helpers import run_sitq as sitq
from sitq_test_helpers import wait_until_sync
from sitq_test_tasks import add, boom

ESCAPES = "é red \x1b[31malert\x1b]0;pwned\x07 bell\rover \x9b1m"


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)


async def fail_all(queue: TaskQueue, ids: list[str], error: str) -> None:
    """End the tasks ``ids`` (the only due ones) as failed with ``error``."""
    backend = queue.backend
    leases = await backend.reserve(worker_id="test", limit=len(ids), lease_seconds=60)
    assert sorted(lease.id for lease in leases) == sorted(ids)
    now = backend.now()
    outcomes = [
        Outcome(lease.id, lease.lease_token, "failed", error=error, traceback=error, started_at=now, finished_at=now)
        for lease in leases
    ]
    assert all(await backend.finish_many(outcomes))


def failed_store(path: Path, count: int, error: str = "boom") -> list[str]:
    async def go() -> list[str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            ids = await queue.enqueue_many([(boom, (), {}) for _ in range(count)])
            await fail_all(queue, ids, error)
            return ids

    return asyncio.run(go())


def status_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return dict(db.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())


def console(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("sitq")
    return [str(script), *args]


def environ(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SITQ_BACKEND", "PYTHONIOENCODING")}
    return {**env, **extra}


# ------------------------------------------------------------------------------------------ 1. whitespace ids


@pytest.mark.parametrize("command", ["requeue", "cancel", "show"])
def test_a_blank_task_id_is_refused_before_anything_is_done(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    path = tmp_path / "tasks.db"
    first = failed_store(path, 1)[0]
    before = status_counts(path)
    given = [first, " "] if command != "show" else [" "]
    code, out, err = sitq(capsys, command, *given, "-b", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err == "sitq: error: TASK_ID must be a non-empty string, got ' '\n"
    assert status_counts(path) == before, "exit code 2: nothing was done"


# ------------------------------------------------------------------------------------------ 2. short writes


def test_unbuffered_output_into_a_pipe_closed_early_exits_1(tmp_path: Path) -> None:
    """``PYTHONUNBUFFERED=1 sitq tasks --limit 0 --json | head -1``: the text layer dropped a short write, exit 0."""
    path = tmp_path / "tasks.db"
    failed_store(path, 600, error="e" * 200)
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    try:
        done = subprocess.run(
            console("tasks", "--limit", "0", "--json", "-b", f"sqlite:///{path}"),
            stdout=reader.stdin,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=environ(PYTHONUNBUFFERED="1"),
        )
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)
    assert (done.returncode, done.stderr) == (1, "")


def test_unbuffered_output_into_a_pipe_read_whole_is_all_there(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    ids = failed_store(path, 600, error="e" * 200)
    done = subprocess.run(
        console("tasks", "--limit", "0", "--json", "-b", f"sqlite:///{path}"),
        capture_output=True,
        text=True,
        timeout=60,
        env=environ(PYTHONUNBUFFERED="1"),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert len(done.stdout) > 65536 and all(task_id in done.stdout for task_id in ids)


# ------------------------------------------------------------------------------------------------- 3. Ctrl-C


def test_ctrl_c_during_requeue_failed_says_how_many_and_exits_130(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    total = 20000
    failed_store(path, total)
    child = subprocess.Popen(
        console("requeue", "--failed", "-b", f"sqlite:///{path}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ(),
    )
    try:
        wait_until_sync(lambda: status_counts(path).get("queued", 0) > 0, timeout=60)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sitq: interrupted: requeued "), err
    said = int(lines[0].removeprefix("sitq: interrupted: requeued ").split()[0])
    queued = status_counts(path).get("queued", 0)
    assert 0 < said < total
    # the page under way when the signal came (one requeue_many call) may have landed
    assert said <= queued <= said + cli_tasks.PAGE, (said, queued)


# --------------------------------------------------------------------------------------- 4. terminal escapes


@pytest.fixture
def escaping_task(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "tasks.db"
    task_id = failed_store(path, 1, error=ESCAPES + "\nsecond\tline é")[0]
    return f"sqlite:///{path}", task_id


def test_control_characters_in_task_texts_are_shown_escaped(
    capsys: pytest.CaptureFixture[str], escaping_task: tuple[str, str]
) -> None:
    url, task_id = escaping_task
    code, listed, err = sitq(capsys, "tasks", "-b", url)
    assert (code, err) == (0, "")
    assert "\\x1b[31malert\\x1b]0;pwned\\x07 bell over \\x9b1m" in listed, "a carriage return is whitespace there"
    code, shown, err = sitq(capsys, "show", task_id, "-b", url)
    assert (code, err) == (0, "")
    assert "\\x1b[31malert\\x1b]0;pwned\\x07 bell\\rover \\x9b1m" in shown
    assert "second\tline" in shown, "tabs, newlines and printable text as they are"
    for text in (listed, shown):
        assert not any(char in text for char in "\x1b\x07\r\x9b")
    code, as_json, _ = sitq(capsys, "show", task_id, "--json", "-b", url)
    assert code == 0 and "\\u001b[31m" in as_json, "json escapes by itself"


def test_characters_the_output_encoding_lacks_are_written_escaped(escaping_task: tuple[str, str]) -> None:
    url, task_id = escaping_task
    for args in (["tasks"], ["show", task_id]):
        done = subprocess.run(
            console(*args, "-b", url), capture_output=True, timeout=60, env=environ(PYTHONIOENCODING="ascii")
        )
        assert (done.returncode, done.stderr) == (0, b""), args
        assert b"\\xe9 red \\x1b[31malert" in done.stdout


# ------------------------------------------------------------------------------------- 5. negative durations


@pytest.mark.parametrize("given", ["-3d", "-1.5h", "-90"])
def test_a_negative_duration_after_a_space_reaches_the_duration_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, given: str
) -> None:
    path = tmp_path / "tasks.db"
    failed_store(path, 1)
    code, out, err = sitq(capsys, "purge", "--older-than", given, "-b", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err.startswith("sitq: error: --older-than: ") and "cannot be negative" in err, err
    assert err.endswith(f"got {given!r}\n")
    assert status_counts(path) == {"failed": 1}


# ---------------------------------------------------------------------------------------- 6. queue names


def test_queue_names_are_stripped_as_the_worker_strips_them(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"

    async def go() -> str:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            return await queue.with_options(queue_name="mail").enqueue(add, 1)

    task_id = asyncio.run(go())
    code, out, err = sitq(capsys, "tasks", "--queue", " mail ", "-b", f"sqlite:///{path}")
    assert (code, err) == (0, "") and task_id in out
    code, out, err = sitq(capsys, "requeue", "--failed", "--queue", " mail ", "-b", f"sqlite:///{path}")
    assert (code, out, err) == (0, "requeued 0 tasks\n", "")


@pytest.mark.parametrize("command", [["tasks"], ["requeue", "--failed"]])
def test_a_blank_queue_name_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.db"
    code, out, err = sitq(capsys, *command, "--queue", "  ", "-b", f"sqlite:///{missing}")
    assert (code, out) == (2, "")
    assert err == "sitq: error: --queue: a queue name must be a non-empty string\n"
    assert not missing.exists()
