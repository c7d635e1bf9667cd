"""Tasks for test_late_pill.py: a poison pill that kills its worker late in its run."""

from __future__ import annotations

import os
import signal
import time


def kill_my_worker_after(seconds: float) -> None:
    """A poison pill that kills its worker process ``seconds`` into its run (after its time alone)."""
    time.sleep(seconds)
    os.kill(os.getpid(), signal.SIGKILL)
