"""The demo (``python3 dev.py demo``): a progress bar on a terminal, plain lines in a file or a pipe.

Its progress bar redraws one line with ``\\r`` up to ten times a second; sent
to a file (``python3 dev.py demo > out.txt``), that was one line of
kilobytes of redraws.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
TASKS = 600  # task 500 fails on purpose


def _command(tmp_path: Path) -> list[str]:
    return [sys.executable, str(DEMO), "--tasks", str(TASKS), "--concurrency", "4", "--db", str(tmp_path / "d.db")]


def _check_summary(lines: list[str]) -> None:
    assert lines[0].startswith(f"sitq demo: {TASKS} tasks on "), lines
    assert lines[1].startswith("  enqueued 100 one by one"), lines
    summary = [line.strip() for line in lines if not line.lstrip().startswith("[")]
    assert summary[2].startswith(f"processed {TASKS} tasks in "), summary
    assert summary[3] == "status counts: {'queued': 0, 'running': 0, 'success': 599, 'failed': 1, 'cancelled': 0}"
    assert summary[4] == "primes below 100: 25"
    assert summary[5].startswith("a failed task: __main__:flaky -> ") and "item 500 is broken" in summary[5], summary
    assert len(summary) == 6, summary


@pytest.mark.slow
def test_into_a_file_the_demo_writes_a_few_plain_progress_lines(tmp_path: Path) -> None:
    done = subprocess.run(_command(tmp_path), capture_output=True, timeout=120)  # bytes: text=True reads \r as \n
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"\r" not in done.stdout, done.stdout
    lines = done.stdout.decode().splitlines()
    progress = [line for line in lines if line.lstrip().startswith("[")]
    assert 1 <= len(progress) <= 4, lines  # at most one a quarter
    assert progress[-1].startswith(f"  [{'#' * 40}] {TASKS:>6}/{TASKS} tasks "), progress
    assert max(map(len, progress)) < 100, progress  # one state each, not redraws
    _check_summary(lines)


@pytest.mark.slow
def test_on_a_terminal_the_demo_redraws_its_progress_bar(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(_command(tmp_path), stdout=follower, stderr=subprocess.PIPE)
    finally:
        os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the demo ended and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    shown = b"".join(chunks).decode()
    assert f"\r  [{'#' * 40}] {TASKS:>6}/{TASKS} tasks " in shown, shown
    lines = [line for line in shown.replace("\r\n", "\n").split("\n") if line]
    redrawn = [line.split("\r")[-1] for line in lines]  # what the terminal shows of each line
    assert sum(line.lstrip().startswith("[") for line in redrawn) == 1, redrawn
    _check_summary(redrawn)
