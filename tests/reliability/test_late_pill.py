"""A poison pill that kills its worker late must not take a returning suspect held unstarted along with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import late_pill_tasks
import pytest

from sitq import SQLiteBackend, TaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

TESTS = Path(__file__).resolve().parents[1]


def _starts(log: Path) -> list[int]:
    """Pids of the processes that started the recorded task."""
    if not log.exists():
        return []
    return [int(pid) for kind, _n, pid in (line.split() for line in log.read_text().splitlines()) if kind == "start"]


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(Path(__file__).parent)]))
    with open(log, "wb") as stderr:
        return subprocess.Popen(command, env=env, stderr=stderr)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_late_pill_does_not_count_expiries_against_a_suspect_it_never_let_start(tmp_path: Path) -> None:
    """The pill (kills 2.5 s into its run) and an innocent task both start on the first worker and die with it.

    The next worker runs the pill alone for 2 s and then reserved beside it again: it took the innocent task
    (a suspect too), logged "running it alone", and held it unstarted while the pill ran. The pill's second
    crash counted a second lease expiry against it: with ``max_lease_expiries=2`` it ended failed with the
    pill, "lease expired after 2 attempts", although it never misbehaved and never started again.
    """
    db, log = tmp_path / "tasks.db", tmp_path / "innocent.log"
    command = [sys.executable, "-m", "sitq", "--log-level", "INFO", "worker", "-b", f"sqlite:///{db}"]
    command += ["-c", "2", "--prefetch", "0", "--lease-timeout", "1", "-i", "late_pill_tasks"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with TaskQueue(SQLiteBackend(db)) as queue:
            limited = queue.with_options(max_lease_expiries=2)
            pill = await limited.enqueue(late_pill_tasks.kill_my_worker_after, 2.5)
            innocent = await limited.enqueue(tasks.record, str(log), 1, 3.0)
            for _round in range(4):  # a supervisor: restart the worker whenever it dies
                proc = _start(command, tmp_path / f"worker-{len(procs)}.log")
                procs.append(proc)

                async def died_or_done(proc: subprocess.Popen[bytes] = proc) -> bool:
                    return proc.poll() is not None or await queue.get_result(innocent, timeout=0) is not None

                await wait_until(died_or_done, timeout=30, interval=0.02)
                if proc.poll() is None:
                    break
                if len(procs) == 1:  # the scene: the innocent task was running when the pill struck
                    assert _starts(log) == [proc.pid], "the innocent task should have started beside the pill"
            pill_result = await queue.get_result(pill, timeout=0)
            result = await queue.get_result(innocent, timeout=0)
            task = await queue.get_task(innocent)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
    logs = [(proc.pid, (tmp_path / f"worker-{i}.log").read_text(errors="replace")) for i, proc in enumerate(procs)]
    assert pill_result is not None and pill_result.status == "failed", (pill_result, logs)
    assert "lease expired after 2 attempts" in (pill_result.error or "")
    assert result is not None and result.status == "success", (result, task, logs)
    assert task is not None and task.lease_expiries == 1, "only the crash it ran at counts against it"
    for pid, text in logs:  # "running it alone" is said of a task that then runs there
        if re.search(rf"task {innocent} .*running it alone", text):
            assert pid in _starts(log), text
