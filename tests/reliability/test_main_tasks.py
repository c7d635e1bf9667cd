"""A msgpack task named ``__main__:X`` never runs the worker's own ``__main__`` (the sitq command, a worker script)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq import SyncTaskQueue

from sitq_test_helpers import wait_until_sync

pytest.importorskip("msgpack")

PRODUCER = """\
import sys
from sitq import SyncTaskQueue

def main():
    return "ran the producer's main"

def helper():
    return "ran the producer's helper"

if __name__ == "__main__":
    queue = SyncTaskQueue(sys.argv[1], serializer="msgpack")
    print(queue.enqueue(main))
    print(queue.enqueue(helper))
    queue.close()
"""

# a worker script of the user's own: `helper` in its __main__ is imported from elsewhere, not defined there
WORKER_SCRIPT = """\
import asyncio
import logging
import sys
from sitq import SQLiteBackend, Worker
from sitq_main_helpers import helper

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(Worker(SQLiteBackend(sys.argv[1]), serializer="msgpack", shutdown_timeout=5).run())
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def enqueue_from_script(tmp_path: Path, url: str) -> tuple[str, str]:
    """Run the producer script: it enqueues its own ``main`` and ``helper`` (stored as ``__main__:...``)."""
    script = tmp_path / "p.py"
    script.write_text(PRODUCER)
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=60, check=True)
    main_id, helper_id = done.stdout.split()
    return main_id, helper_id


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)  # a guard against a hang, not a measure: it used to wait 30 s for the nested worker


def sitq_command(how: str) -> list[str]:
    if how == "console script":
        script = shutil.which("sitq", path=os.path.dirname(sys.executable))
        if script is None:
            pytest.skip("no sitq console script next to this interpreter")
        return [script]
    return [sys.executable, "-m", how]


@pytest.mark.parametrize("how", ["sitq", "sitq_core", "console script"])
def test_a_main_task_fails_clearly_on_a_sitq_command_worker(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], how: str
) -> None:
    url = f"sqlite:///{tmp_path / 'main.db'}"
    log = tmp_path / "worker.log"
    with open(log, "wb") as stderr:
        worker = subprocess.Popen(
            [*sitq_command(how), "worker", "-b", url, "-s", "msgpack", "--shutdown-timeout", "5"], stderr=stderr
        )
    procs.append(worker)
    main_id, helper_id = enqueue_from_script(tmp_path, url)
    queue = SyncTaskQueue(url)
    try:
        results = [queue.get_result_record(main_id, timeout=30), queue.get_result_record(helper_id, timeout=30)]
    finally:
        queue.close()
    for result, name in zip(results, ("main", "helper"), strict=True):
        assert result is not None and result.status == "failed", (result, log.read_text())
        assert f"'__main__:{name}'" in (result.error or ""), result.error
        assert "defined in the script that enqueued it" in (result.error or ""), result.error
        assert "move it into a module" in (result.error or ""), result.error
    assert "this worker's __main__ is the sitq command" in (results[0].error or ""), results[0].error
    assert stop(worker) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_main_task_naming_an_imported_object_is_refused_by_any_worker(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    (tmp_path / "sitq_main_helpers.py").write_text("def helper():\n    return 'ran the imported helper'\n")
    (tmp_path / "w.py").write_text(WORKER_SCRIPT)
    db = tmp_path / "imported.db"
    log = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    with open(log, "wb") as stderr:
        worker = subprocess.Popen([sys.executable, str(tmp_path / "w.py"), str(db)], stderr=stderr, env=env)
    procs.append(worker)
    wait_until_sync(lambda: "started on" in log.read_text(errors="replace") or worker.poll() is not None, 30)
    assert worker.poll() is None, log.read_text()
    main_id, helper_id = enqueue_from_script(tmp_path, f"sqlite:///{db}")
    queue = SyncTaskQueue(f"sqlite:///{db}")
    try:
        helper = queue.get_result_record(helper_id, timeout=30)
        main = queue.get_result_record(main_id, timeout=30)
    finally:
        queue.close()
    assert helper is not None and helper.status == "failed", (helper, log.read_text())
    assert "refers to 'sitq_main_helpers:helper', not a function defined there" in (helper.error or ""), helper.error
    assert "defined in the script that enqueued it" in (helper.error or ""), helper.error
    assert main is not None and main.status == "failed", main  # no main in w.py at all
    assert "has no attribute 'main'" in (main.error or ""), main.error
    assert stop(worker) == 0, log.read_text()
