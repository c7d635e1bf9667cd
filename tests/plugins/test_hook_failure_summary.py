"""Every failure of an observer hook that keeps raising is accounted for in the log, also the last ones.

The count of failures logged since the last line (at most one line a minute)
was only written when the next failure came a minute later: the failures of a
process's last minute were never reported, at exit or on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sitq_core import Task, hookimpl
from sitq_core.plugin_manager import SitqPluginManager, flush_hook_failure_summaries

from sitq_test_helpers import wait_until_sync

FIRST = re.compile(r"sitq plugin (\S+) raised in (\w+); ignored")
AGAIN = re.compile(r"sitq plugin (\S+) raised in (\w+) again \((\d+) more time\(s\) since the last line\)")


def accounted(log: str, plugin: str, hook: str) -> int:
    """How many failures of ``plugin``'s ``hook`` the log reports: its first line, plus every count line."""
    first = sum(1 for match in FIRST.finditer(log) if match.groups() == (plugin, hook))
    again = sum(int(match[3]) for match in AGAIN.finditer(log) if (match[1], match[2]) == (plugin, hook))
    return first + again


class Failing:
    """An observer that raises on every task, as a metrics plugin with a bug would."""

    @hookimpl
    def sitq_task_enqueued(self, task: Task) -> None:
        raise RuntimeError(f"no gauge for {task.id}")


def test_the_failures_since_the_last_line_are_logged_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(Failing(), "failing")
    caplog.set_level(logging.ERROR, logger="sitq.plugins")
    for n in range(7):
        manager.notify("sitq_task_enqueued", task=Task(id=f"t{n}", payload=b""))
    assert accounted(caplog.text, "failing", "sitq_task_enqueued") == 1  # the first, with its traceback
    flush_hook_failure_summaries()
    assert accounted(caplog.text, "failing", "sitq_task_enqueued") == 7, caplog.text
    assert "RuntimeError: no gauge for t6" in caplog.text  # the last error, as the minute's line names it
    lines = len(caplog.records)
    flush_hook_failure_summaries()  # nothing more to say
    assert len(caplog.records) == lines


def test_a_manager_let_go_reports_what_it_had_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="sitq.plugins")
    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(Failing(), "failing-dropped")
    for n in range(3):
        manager.notify("sitq_task_enqueued", task=Task(id=f"t{n}", payload=b""))
    del manager  # as reset_plugin_manager() lets the process's manager go
    flush_hook_failure_summaries()
    assert accounted(caplog.text, "failing-dropped", "sitq_task_enqueued") == 3, caplog.text


def test_the_process_logs_the_count_as_it_ends(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import logging

        from sitq_core import Task, hookimpl
        from sitq_core.plugin_manager import SitqPluginManager

        class Failing:
            @hookimpl
            def sitq_task_enqueued(self, task):
                raise RuntimeError("broken gauge")

        logging.basicConfig(level=logging.ERROR)
        manager = SitqPluginManager(load_entrypoints=False)
        manager.register_plugin(Failing(), "failing")
        for n in range(25):
            manager.notify("sitq_task_enqueued", task=Task(id=str(n), payload=b""))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert accounted(done.stderr, "failing", "sitq_task_enqueued") == 25, done.stderr


HOOK_MODULE = """
from sitq_core import hookimpl
from sitq_core.plugins import get_plugin_manager
import sys


@hookimpl
def sitq_task_succeeded(task, result, duration):
    raise RuntimeError("metrics backend down")


get_plugin_manager().register_plugin(sys.modules[__name__], "failing-metrics")
"""


def test_a_worker_stopped_by_sigterm_accounts_for_every_failure(tmp_path: Path) -> None:
    from sitq_core import SyncTaskQueue
    from sitq_sqlite import SQLiteBackend

    import sitq_test_tasks as tasks

    (tmp_path / "failing_metrics.py").write_text(HOOK_MODULE)
    db = tmp_path / "tasks.db"
    total = 40
    with SyncTaskQueue(SQLiteBackend(db)) as queue:
        for n in range(total):
            queue.enqueue(tasks.add, n, 1)
    here = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(here), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-i", "failing_metrics", "-c", "4"],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    try:
        counted = SQLiteBackend(db)

        def all_done() -> bool:
            with SyncTaskQueue(counted) as reader:
                return bool(reader.counts()["success"] == total)

        wait_until_sync(all_done, timeout=60, interval=0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert accounted(text, "failing-metrics", "sitq_task_succeeded") == total, text


class FailingOnSuccess:
    """An observer whose success hook raises on every task."""

    @hookimpl
    def sitq_task_succeeded(self, task: Task) -> None:
        raise RuntimeError(f"no counter for {task.id}")


@pytest.mark.asyncio
async def test_a_stopping_worker_logs_the_count_of_its_last_hook_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sitq import SQLiteBackend, TaskQueue, Worker
    from sitq_core.plugins import get_plugin_manager

    import sitq_test_tasks as tasks
    from sitq_test_helpers import wait_until

    caplog.set_level(logging.ERROR, logger="sitq.plugins")
    manager = get_plugin_manager()
    manager.register_plugin(FailingOnSuccess(), "failing-on-success")
    try:
        async with TaskQueue(SQLiteBackend(tmp_path / "tasks.db")) as queue:
            ids = await queue.enqueue_many([(tasks.add, (n, n)) for n in range(5)])
            worker = Worker(queue.backend)
            await worker.start()

            async def first_logged() -> bool:
                return accounted(caplog.text, "failing-on-success", "sitq_task_succeeded") >= 1

            await wait_until(first_logged)
            for task_id in ids:
                assert await queue.get_result(task_id, timeout=10) is not None
            await worker.stop()  # the four failures after the first are counted, not logged yet: the stop logs them
        assert accounted(caplog.text, "failing-on-success", "sitq_task_succeeded") == 5, caplog.text
    finally:
        manager.unregister_plugin("failing-on-success")
