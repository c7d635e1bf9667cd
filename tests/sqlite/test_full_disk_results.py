"""A result too big for the room left on a full disk: its task fails (or is retried) saying so, not for lease expiry.

On a nearly full disk a task returning 3 MB could never have its outcome
stored: every report failed with "database or disk is full", the worker gave
them up, the task ran three times and ended ``failed`` with "lease expired
after 3 attempts" and no word of the disk, while small tasks kept succeeding.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pytest

from sitq import BackendError, SQLiteBackend
from sitq_core.errors import StoreFullError

TESTS = Path(__file__).resolve().parents[1]

_ON_A_FULL_DISK = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    from sitq import SQLiteBackend, TaskQueue, Worker
    import sitq_test_tasks as tasks

    mnt, marks = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    def free():
        stat = os.statvfs(mnt)
        return stat.f_bavail * stat.f_frsize

    def runs(name):
        path = os.path.join(marks, name)
        return len(open(path).read().splitlines()) if os.path.exists(path) else 0

    async def main():
        backend = SQLiteBackend(os.path.join(mnt, "q.db"))
        filler = os.path.join(mnt, "filler")
        report = {}
        async with TaskQueue(backend) as queue:
            big = await queue.enqueue(tasks.sized, 3_000_000, os.path.join(marks, "big"))
            smalls = [await queue.enqueue(tasks.sized, 100, os.path.join(marks, "small")) for _ in range(5)]
            with open(filler, "wb", buffering=0) as f:  # 1.5 MB left: small writes fit, 3 MB does not
                while free() > 1_500_000:
                    f.write(bytes(65536))
            report["free"] = free()
            worker = Worker(backend, max_concurrency=4, lease_timeout=3)
            await worker.start()
            try:
                result = await queue.get_result(big, timeout=60)
                task = await queue.get_task(big)
                report["big"] = [result.status, result.error, result.traceback, result.attempts]
                report["big_task"] = [task.status.value, task.lease_expiries]
                report["big_runs"] = runs("big")
                report["smalls"] = [(await queue.get_result(s, timeout=30)).status for s in smalls]
                # retries left: the first attempt's result finds no room, the retry (the disk freed) is stored
                retried = await queue.with_options(max_retries=1).enqueue(
                    tasks.sized, 3_000_000, os.path.join(marks, "retried"), filler
                )
                result = await queue.get_result(retried, timeout=60)
                task = await queue.get_task(retried)
                report["retried"] = [result.status, len(result.value or b""), result.attempts]
                report["retried_task"] = [task.lease_expiries, task.error]
                report["retried_runs"] = runs("retried")
            finally:
                await worker.stop()
        print(json.dumps(report))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_a_result_too_big_for_a_full_disk_fails_its_task_once_saying_so_and_a_retry_can_store_it(
    tmp_path: Path,
) -> None:
    """A real worker on a real tmpfs (in a private mount namespace, so root is needed; nothing is left mounted)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs root, unshare and mount for a small tmpfs to fill")
    mount = tmp_path / "mnt"
    mount.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    script = (
        f"mount -t tmpfs -o size=8m tmpfs {mount} && PYTHONPATH={shlex.quote(str(TESTS))} "
        f"{shlex.quote(sys.executable)} -c {shlex.quote(_ON_A_FULL_DISK)} {mount} {marks}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=240)
    refused = ("mount:" in done.stderr and "permission denied" in done.stderr.lower()) or "unshare:" in done.stderr
    if refused and done.returncode != 0:
        pytest.skip("a tmpfs cannot be mounted here: " + done.stderr[-300:])
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads(done.stdout.splitlines()[-1])
    log = done.stderr
    status, error, traceback, attempts = report["big"]
    assert status == "failed", (report, log[-3000:])
    stored = len(cloudpickle.dumps(bytes(3_000_000)))  # the serialised result: the bytes the store was to hold
    assert error == (
        f"the task's result of {stored:,} bytes could not be stored: the disk holding the store is full "
        "(database or disk is full)"
    ), report
    assert traceback is None and attempts == 1, report
    assert report["big_runs"] == 1, "its result can never be stored here: running it again only repeats its effects"
    assert report["big_task"] == ["failed", 0], "no lease expired: the worker told the store what happened"
    assert report["smalls"] == ["success"] * 5, report
    assert "gave up reporting" not in log and "lease expired" not in log, log[-3000:]
    assert "the store has no room for the result of task" in log
    assert report["retried"] == ["success", stored, 2], report
    assert report["retried_task"] == [0, None], "a success clears the error of the attempt before"
    assert report["retried_runs"] == 2, report
    retrying = rf"failed on attempt 1, retrying in [0-9.]+ s .*: StoreFullError: the task's result of {stored:,} bytes"
    assert re.search(retrying, log), log[-3000:]


def _really_full(path: Path) -> sqlite3.OperationalError:
    """SQLite's own "database or disk is full" (SQLITE_FULL), from a database capped at a few pages."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE t (v BLOB)")
        conn.execute("PRAGMA max_page_count = 3")
        with pytest.raises(sqlite3.OperationalError) as caught:
            conn.execute("INSERT INTO t VALUES (?)", (bytes(100_000),))
        return caught.value
    finally:
        conn.close()


def test_sqlite_marks_a_full_database_as_a_store_full_error(tmp_path: Path) -> None:
    full = _really_full(tmp_path / "capped.db")
    assert full.sqlite_errorcode == sqlite3.SQLITE_FULL, full
    backend = SQLiteBackend(tmp_path / "q.db")
    error = backend._failed("finish_and_reserve", full)
    assert isinstance(error, StoreFullError) and isinstance(error, BackendError), repr(error)
    assert error.operation == "finish_and_reserve" and error.backend_type == "sqlite"
    assert error.cause is full and "database or disk is full" in error.message


def test_sqlite_does_not_mark_an_io_error_with_room_left(tmp_path: Path) -> None:
    """A "disk I/O error" with the disk far from full (a failing disk, RLIMIT_FSIZE's EFBIG) is no want of room."""
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]
    if shutil.disk_usage(tmp_path).free < 64 << 20:
        pytest.skip("the disk holding the test's folder is nearly full itself")
    error = SQLiteBackend(tmp_path / "q.db")._failed("finish_many", io_error)
    assert type(error) is BackendError, repr(error)


def test_sqlite_marks_an_io_error_on_a_nearly_full_disk_saying_its_free_space_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite reports some full-disk writes as a bare "disk I/O error": the free space decides, and says so once."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(16 << 20, (16 << 20) - 4096, 4096))
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[attr-defined]
    error = SQLiteBackend(tmp_path / "q.db")._failed("finish_many", io_error)
    assert isinstance(error, StoreFullError), repr(error)
    assert error.message.count("4,096 bytes free") == 1, error.message
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(16 << 20, 16 << 20, 0))
    error = SQLiteBackend(tmp_path / "q.db")._failed("finish_many", io_error)
    assert isinstance(error, StoreFullError) and error.message.count(" 0 bytes free") == 1, repr(error)
