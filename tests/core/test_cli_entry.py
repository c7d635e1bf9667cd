"""The ``sitq`` command as a process: its entry points, and how it reports output and usage errors."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sitq import SyncTaskQueue


def sitq(*args: str, module: str = "sitq") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)


def test_python_m_sitq_core_is_the_sitq_command() -> None:
    """sitq-core ships the sitq console script; ``python -m sitq_core`` said 'No module named sitq_core.__main__'."""
    done = sitq("--version", module="sitq_core")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sitq "), done.stdout
    assert sitq("--version").stdout == done.stdout


OUTPUT_COMMANDS = [["--help"], ["--version"], ["backends"], ["worker", "--help"]]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_output_to_a_full_device_is_one_error_line_and_exit_1(command: list[str], buffered: bool) -> None:
    """``sitq backends > /dev/full`` printed an OSError traceback; ``sitq --help > /dev/full`` exited 0."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "sitq", *command],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "sitq: error: cannot write output: No space left on device (errno 28)\n"


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
def test_output_to_a_closed_stdout_is_one_error_line_and_exit_1(command: list[str]) -> None:
    """``sitq backends >&-`` printed "AttributeError: 'NoneType' object has no attribute 'write'"."""
    shell = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "sitq", *command]) + " >&-"
    done = subprocess.run(shell, shell=True, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "sitq: error: cannot write output: standard output is closed\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stats_output_to_a_full_device_is_one_error_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stats.db'}"
    queue = SyncTaskQueue(url)
    try:
        queue.enqueue(print)  # the store exists
    finally:
        queue.close()
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "sitq", "stats", "-b", url], stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("sitq: error: cannot write output: "), done.stderr
    assert "Traceback" not in done.stderr


def test_help_whose_reader_left_exits_1_as_any_command() -> None:
    """``sitq --help | true`` exited 0 though the help was never read (api.md: a reader that leaves early: 1)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run([sys.executable, "-m", "sitq", "--help"], stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""


def test_every_error_line_starts_with_sitq_error() -> None:
    """Usage errors of a command said ``sitq worker: error:``, the command's own errors ``sitq: error:``."""
    for args in (["worker", "-c", "x"], ["stats", "--bogus"], ["nope"]):
        done = sitq(*args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1].startswith("sitq: error: "), done.stderr
    assert "usage: sitq worker " in sitq("worker", "-c", "x").stderr  # the command's own usage still shows


def test_a_worker_argument_error_is_in_flag_terms(tmp_path: Path) -> None:
    """``--batch-window 2`` said "batch_window must be None or a number ...": no shell user can type None."""
    done = sitq("worker", "-b", f"sqlite:///{tmp_path / 'x.db'}", "--batch-window", "2")
    assert done.returncode == 2
    assert (
        done.stderr.splitlines()[-1] == "sitq: error: --batch-window must be a number of seconds from 0 to 1, got 2.0"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-b", "sqlite:///x.db", "stats"], "-b/--backend goes after the command name: sitq stats -b sqlite:///x.db"),
        (
            ["--backend=sqlite:///x.db", "worker"],
            "-b/--backend goes after the command name: sitq worker -b sqlite:///x.db",
        ),
        (["-b", "x"], "-b/--backend goes after the command name: sitq worker -b x or sitq stats -b x"),
        (["-b", "x", "plugins"], "-b/--backend is an option of the commands that open a store, not of sitq plugins"),
    ],
)
def test_backend_before_the_command_says_where_it_goes(args: list[str], expected: str) -> None:
    """``sitq -b sqlite:///x.db stats`` said "invalid choice: 'sqlite:///x.db'"."""
    done = sitq(*args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"sitq: error: {expected}", done.stderr


def test_help_names_option_values_as_the_docs_do() -> None:
    text = sitq("worker", "--help").stdout
    # Python 3.13's argparse names the value once, after the last option string: "--backend, -b URL"
    assert "--import MODULE, -i MODULE" in text or "--import, -i MODULE" in text, text
    assert "--backend URL, -b URL" in text or "--backend, -b URL" in text, text
    assert "--log-level LEVEL" in text, text
