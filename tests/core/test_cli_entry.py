"""The ``sitq`` command as a process: its entry points, and how it reports output and usage errors."""

from __future__ import annotations

import subprocess
import sys


def sitq(*args: str, module: str = "sitq") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)


def test_python_m_sitq_core_is_the_sitq_command() -> None:
    """sitq-core ships the sitq console script; ``python -m sitq_core`` said 'No module named sitq_core.__main__'."""
    done = sitq("--version", module="sitq_core")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sitq "), done.stdout
    assert sitq("--version").stdout == done.stdout
