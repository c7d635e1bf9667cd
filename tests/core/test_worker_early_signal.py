"""``sitq worker`` stopped by SIGTERM or SIGINT while it starts (importing task modules) exits 0, taking nothing.

api.md: "Exit code 0 after a clean stop". A supervisor that stops a worker
right after starting it (a deploy rolled back) must not see it die by the
signal (-15) or print a traceback, and no task may be reserved and lost.
The task module blocks on a file gate, so the signal surely arrives while it
is being imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sitq import SyncTaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until_sync

TESTS = Path(__file__).resolve().parents[1]

GATED = """
import os
import time

open(os.environ["GATE_READY"], "w").close()  # the import has begun
while not os.path.exists(os.environ["GATE_OPEN"]):  # never opened by the test: the signal comes first
    time.sleep(0.01)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_task_modules_import_exits_0_and_leaves_the_tasks_queued(
    tmp_path: Path, signum: signal.Signals
) -> None:
    (tmp_path / "gated_tasks.py").write_text(textwrap.dedent(GATED))
    url = f"sqlite:///{tmp_path}/early.db"
    with SyncTaskQueue(url) as queue:
        task_id = queue.enqueue(tasks.add, 1, 2)
    ready = tmp_path / "ready"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(TESTS)]),
        GATE_READY=str(ready),
        GATE_OPEN=str(tmp_path / "open"),
    )
    command = [sys.executable, "-m", "sitq", "worker", "-b", url, "-i", "gated_tasks", "-i", "sitq_test_tasks"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_sync(lambda: ready.exists() or child.poll() is not None, timeout=60)
        assert child.poll() is None, child.communicate()
        child.send_signal(signum)
        _out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, (child.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    with SyncTaskQueue(url) as queue:
        assert queue.get_task(task_id).status == "queued"  # nothing was reserved, nothing lost
