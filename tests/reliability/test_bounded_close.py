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
    assert "stopped (processed=0" in text, text
    # the close gives up the claim waiting for the lock (rolled back), so it ends well before the CLI's bound
    assert "did not finish within" not in text, text
    assert "Traceback" not in text, text


HANGING_CLOSE = """
import asyncio, sys
from sitq_core import cli
from sitq_dictstore.backend import DictStoreBackend

class HangingClose(DictStoreBackend):
    async def close(self) -> None:  # a store call that waits for a lock held elsewhere, for an hour
        await asyncio.Event().wait()

async def main() -> None:
    await cli._close_within(HangingClose(), 0.2, lambda: 7)
    print("returned instead of leaving", flush=True)

asyncio.run(main())
"""


def test_a_store_close_that_outlasts_the_bound_leaves_the_process_with_a_warning() -> None:
    """The CLI's last defence: a store whose close hangs (a third-party backend, a lock wait) does not keep the
    process alive; it leaves with the worker's exit code and says which threads it left behind."""
    proc = subprocess.run(
        [sys.executable, "-c", HANGING_CLOSE], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "returned instead of leaving" not in proc.stdout
    assert "closing the store (HangingClose) did not finish within 0.2 s" in proc.stderr, proc.stderr
