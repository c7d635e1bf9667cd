"""The CLI started from a working directory that was deleted (a removed release folder, a cleaned-up tmp dir)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue

import sitq_test_tasks as tasks

TESTS = Path(__file__).resolve().parents[1]


def _in_deleted_folder(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m sitq ARGS`` run with a working directory removed before Python starts."""
    gone = tmp_path / "gone"
    gone.mkdir()
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "sitq", *args])
    return subprocess.Popen(
        ["sh", "-c", f"cd {shlex.quote(str(gone))} && rmdir {shlex.quote(str(gone))} && exec {command}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "SITQ_BACKEND"}, "PYTHONPATH": str(TESTS)},
    )


async def _one_task_by_a_worker_in_a_deleted_folder(tmp_path: Path, *extra: str) -> tuple[Any, int, str]:
    """``tasks.add(2, 3)`` run by ``sitq worker`` started in a deleted folder; its value, exit code and stderr."""
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        task_id = await queue.enqueue(tasks.add, 2, 3)
        worker = _in_deleted_folder(tmp_path, "worker", "-b", f"sqlite:///{path}", *extra)
        try:
            result = await queue.get_result(task_id, timeout=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, err = worker.communicate(timeout=60)
    value = None if result is None else queue.deserialize_result(result)
    return value, worker.returncode, err


@pytest.mark.asyncio
async def test_a_worker_with_an_absolute_url_runs_in_a_deleted_working_directory(tmp_path: Path) -> None:
    value, returncode, err = await _one_task_by_a_worker_in_a_deleted_folder(tmp_path, "-i", "sitq_test_tasks")
    assert value == 5, err
    assert returncode == 0, err
    assert "Traceback" not in err
    assert "working directory no longer exists" in err


@pytest.mark.asyncio
async def test_without_import_a_worker_in_a_deleted_working_directory_does_not_warn_about_import(
    tmp_path: Path,
) -> None:
    """'--import looks only in sys.path' was warned to a worker started without --import."""
    value, returncode, err = await _one_task_by_a_worker_in_a_deleted_folder(tmp_path)  # tasks from PYTHONPATH
    assert value == 5, err
    assert returncode == 0, err
    assert "--import" not in err and "working directory" not in err, err


@pytest.mark.parametrize("url", [None, "sqlite:///relative.db"])
def test_a_relative_path_in_a_deleted_working_directory_is_a_clear_error(tmp_path: Path, url: str | None) -> None:
    stats = _in_deleted_folder(tmp_path, "stats", *(["-b", url] if url else []))
    _out, err = stats.communicate(timeout=60)
    assert stats.returncode == 2, err
    assert err.startswith("sitq: error:") and "Traceback" not in err
    assert "working directory no longer exists" in err
