"""``sitq worker --import mod`` where mod raises at import says where it was raised, and how to see the rest.

It printed only ``ZeroDivisionError: division by zero``: no file, no line, and nothing said that
``--log-level DEBUG`` shows the traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def worker(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{folder / 'w.db'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=folder)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "boom.py").write_text("import json\n\nX = 1\nY = X / 0\n")
    (tmp_path / "uses_helper.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("\n\ndef load():\n    return json_config()\n\n\nload()\n")
    (tmp_path / "bad_json.py").write_text('import json\n\nSETTINGS = json.loads("{")\n')
    (tmp_path / "quiet.py").write_text("def job():\n    return 1\n")
    return tmp_path


def test_the_error_names_the_file_and_line_and_the_log_level_that_shows_the_traceback(folder: Path) -> None:
    done = worker(folder, "--import", "boom")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("sitq: error: --import boom: cannot import it: ZeroDivisionError: division by zero"), line
    assert "boom.py:4" in line and "--log-level DEBUG" in line and "Traceback" not in line, line
    assert "\n" not in line


def test_the_innermost_frame_of_the_users_code_is_named(folder: Path) -> None:
    done = worker(folder, "--import", "uses_helper")
    assert "NameError" in done.stderr and "helper.py:4" in done.stderr, done.stderr
    done = worker(folder, "--import", "bad_json")  # raised in the standard library: the user's line that called it
    assert "JSONDecodeError" in done.stderr and "bad_json.py:3" in done.stderr, done.stderr


def test_debug_shows_the_whole_traceback(folder: Path) -> None:
    done = worker(folder, "--log-level", "DEBUG", "--import", "boom")
    assert done.returncode == 2, done.stderr
    assert "Traceback (most recent call last)" in done.stderr and 'boom.py", line 4' in done.stderr, done.stderr


def test_a_module_that_is_not_found_gets_no_location(folder: Path) -> None:
    done = worker(folder, "--import", "no_such_module_here")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("ModuleNotFoundError: No module named 'no_such_module_here'"), done.stderr


def test_allow_task_says_where_too(folder: Path) -> None:
    done = worker(folder, "-s", "msgpack", "--allow-task", "boom:job")
    assert done.returncode == 2, done.stderr
    assert "--allow-task boom:job: cannot import it: ZeroDivisionError" in done.stderr, done.stderr
    assert "boom.py:4" in done.stderr and "--log-level DEBUG" in done.stderr, done.stderr


def test_a_library_in_site_packages_that_raises_is_passed_over_for_the_users_line_that_called_it(
    folder: Path,
) -> None:
    installed = folder / "env" / "site-packages"  # where pip puts a library such as packaging
    (installed / "fakelib").mkdir(parents=True)
    (installed / "fakelib" / "__init__.py").write_text("def version(text):\n    raise ValueError(text)\n")
    (installed / "installedapp.py").write_text("import fakelib\n\nfakelib.version('x')\n")
    (folder / "calls_lib.py").write_text("import fakelib\n\nMIN = fakelib.version('not a version')\n")
    env = {"PYTHONPATH": f"{installed}{os.pathsep}{folder}", "PATH": os.environ.get("PATH", "")}
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{folder / 'w.db'}", "--import"]
    done = subprocess.run([*command, "calls_lib"], capture_output=True, text=True, timeout=60, cwd=folder, env=env)
    assert "ValueError: not a version" in done.stderr and "calls_lib.py:3" in done.stderr, done.stderr
    assert "fakelib" not in done.stderr, done.stderr
    # an application installed into site-packages has only such frames: its own innermost one is named
    done = subprocess.run([*command, "installedapp"], capture_output=True, text=True, timeout=60, cwd=folder, env=env)
    assert "installedapp.py:3" in done.stderr, done.stderr
