"""``sitq worker`` ends after a signal within its documented bound, even when closing the store would wait longer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from sitq import SyncTaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until_sync

TESTS = Path(__file__).resolve().parents[1]


def test_a_worker_whose_store_stays_locked_exits_without_waiting_out_busy_timeout(tmp_path: Path) -> None:
    """Closing the store waited for its thread, retrying a claim until busy_timeout (here an hour), after ``stopped``.

    The process must end while another connection still holds the file locked:
    giving tasks back waits at most 10 s, closing the store at most 5 s more.
    """
    db = tmp_path / "locked.db"
    queue = SyncTaskQueue(f"sqlite:///{db}")
    try:
        queue.enqueue(tasks.add, 1, 2)
    finally:
        queue.close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    log = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONPATH=str(TESTS), SITQ_LOG_LEVEL="INFO")
    url = f"sqlite:///{db}?busy_timeout=3600"
    command = [sys.executable, "-m", "sitq", "worker", "-b", url, "-i", "sitq_test_tasks", "--shutdown-timeout", "1"]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(command, env=env, stderr=stderr)
    try:
        wait_until_sync(lambda: "started on" in log.read_text(errors="replace") or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        # a guard against the hour-long wait, not a measure; the lock is held all along
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        holder.execute("ROLLBACK")
        holder.close()
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert "closing the store (SQLiteBackend) did not finish within 5 s" in text, text
    assert "threads still running: sitq-sqlite:locked.db" in text, text
    assert "Traceback" not in text, text
