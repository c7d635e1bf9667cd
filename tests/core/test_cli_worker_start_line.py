"""``sitq worker`` says once, on stderr, that it has started: the store (password masked), concurrency, queues.

An outside tester (a Celery/RQ user) started ``sitq worker`` and saw nothing
at all at the default log level, so could not tell that it had connected
(Celery prints a banner, RQ and arq a start line). The worker's own INFO line
``worker ID started on BACKEND (max_concurrency=N, queues=...)`` now shows at
the command's default level; the steady state stays silent (a task that
succeeds, the drain on SIGTERM), and ``--log-level ERROR`` hides the line too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from sitq_test_postgres import DSN, require_postgres

from sitq import SyncTaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import run_sitq, wait_until_sync

TESTS = Path(__file__).resolve().parents[1]


def _serve_one_task(url: str, *flags: str, queue_name: str = "default") -> str:
    """Run ``sitq worker -b URL FLAGS`` until it has run one task, stop it with SIGTERM; its stderr."""
    with SyncTaskQueue(url) as queue:
        task_id = queue.with_options(queue_name=queue_name).enqueue(tasks.add, 2, 3)
        env = dict(os.environ, PYTHONPATH=str(TESTS))
        env.pop("SITQ_LOG_LEVEL", None)
        worker = subprocess.Popen(
            [sys.executable, "-m", "sitq", "worker", "-b", url, "-i", "sitq_test_tasks", *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until_sync(
                lambda: queue.get_task(task_id).status == "success" or worker.poll() is not None,  # type: ignore[union-attr]
                timeout=60,
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert out == "", out
        assert queue.get_result(task_id, timeout=0) == 5, err
    return err


@pytest.mark.slow
def test_the_worker_says_once_that_it_started_and_nothing_else(tmp_path: Path) -> None:
    db = tmp_path / "start.db"
    err = _serve_one_task(f"sqlite:///{db}", "-c", "3", "-q", "mail", "--queue", "a b", queue_name="mail")
    lines = err.splitlines()
    assert len(lines) == 1, err  # the start line only: the task's run and the drain on SIGTERM say nothing
    (line,) = lines
    assert " INFO sitq.worker: worker " in line, line
    assert f" started on SQLiteBackend({str(db)!r}) (max_concurrency=3, queues=['mail', 'a b'])" in line, line


@pytest.mark.slow
def test_log_level_error_hides_the_start_line_and_info_shows_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'levels.db'}"
    assert _serve_one_task(url, "--log-level", "ERROR") == ""
    err = _serve_one_task(url, "--log-level", "INFO")
    started = [line for line in err.splitlines() if " started on SQLiteBackend(" in line]
    assert len(started) == 1, err
    assert "SIGTERM received, draining" in err, err  # INFO keeps the rest of the worker's INFO lines


@pytest.mark.slow
def test_the_start_line_masks_the_postgres_password() -> None:
    require_postgres()
    parts = urllib.parse.urlsplit(DSN)
    # trust authentication (the test server's) lets any password in; one that is there must not be shown
    netloc = f"{parts.username or 'postgres'}:s3cret-pw@{parts.hostname}:{parts.port or 5432}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    err = _serve_one_task(url)
    assert "s3cret-pw" not in err, err
    (line,) = err.splitlines()
    assert " started on PostgresBackend(" in line and "(max_concurrency=1, queues=all)" in line, line


def test_the_worker_logger_is_left_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process, a worker that could not start leaves the ``sitq.worker`` logger's level and filters alone."""
    worker_log = logging.getLogger("sitq.worker")
    before = (worker_log.level, list(worker_log.filters))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    code, _out, err = run_sitq(capsys, "worker", "-b", f"sqlite:///{blocked}/tasks.db")
    assert code == 2, err
    assert "started on" not in err, err
    assert (worker_log.level, list(worker_log.filters)) == before
