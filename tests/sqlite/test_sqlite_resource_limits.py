"""Errors that come from this process's resource limits say which limit, not a bare SQLite message.

The limits are set on a child process (RLIMIT_NOFILE, RLIMIT_FSIZE): a limit
on the process stands in for the machine's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")


def run_child(script: str, *args: str) -> str:
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    return child.stdout


def test_out_of_file_descriptors_says_so(tmp_path: Path) -> None:
    out = run_child(
        """
        import asyncio, resource, sys
        from sitq import SQLiteBackend
        from sitq_core.errors import BackendError, ConnectionError

        async def main():
            resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
            backends = []
            try:
                for i in range(50):
                    backend = SQLiteBackend(f"{sys.argv[1]}/q{i % 3}.db")
                    await backend.connect()
                    backends.append(backend)
            except ConnectionError as exc:
                print("connect:", exc)
            try:  # a call on a backend connected before: its reader thread opens a connection of its own
                await backends[0].counts()
            except BackendError as exc:
                print("counts:", exc)
            for backend in backends:
                await backend.close()

        asyncio.run(main())
        """,
        str(tmp_path),
    )
    lines = out.splitlines()
    assert lines[0].startswith("connect: cannot open SQLite database"), out
    hint = "(this process has too many open files (RLIMIT_NOFILE soft limit 32): raise it (ulimit -n) or close"
    assert hint in lines[0], out
    assert all(hint in line for line in lines[1:]), out


def test_a_write_past_the_file_size_limit_with_room_left_is_no_full_disk_and_says_the_limit_once(
    tmp_path: Path,
) -> None:
    """The hint names RLIMIT_FSIZE whenever the process has one; that alone made every "disk I/O error" a
    StoreFullError "disk is full" (with its hint twice), though the disk had gigabytes free."""
    out = run_child(
        """
        import asyncio, resource, shutil, signal, sys
        from sitq import SQLiteBackend
        from sitq_core.errors import BackendError
        from sitq_core.models import Task

        async def main():
            print(shutil.disk_usage(sys.argv[1]).free)
            backend = SQLiteBackend(f"{sys.argv[1]}/f.db")
            await backend.connect()
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, resource.RLIM_INFINITY))
            try:
                for i in range(100):
                    await backend.enqueue(Task(id=f"t{i}", payload=b"x" * (256 << 10), function_name="f"))
            except BackendError as exc:
                print(type(exc).__name__)
                print(exc.message)
            await backend.close()

        asyncio.run(main())
        """,
        str(tmp_path),
    )
    free, kind, message = out.splitlines()
    if int(free) < 64 << 20:
        pytest.skip("the disk holding the test's folder is nearly full itself")
    assert kind == "BackendError", out  # not a StoreFullError: there is room
    assert "disk I/O error" in message and "bytes free" not in message, out
    assert f"this process may write files of at most {4 << 20:,} bytes (RLIMIT_FSIZE, ulimit -f)" in message, out
    assert message.count("RLIMIT_FSIZE") == 1, out
