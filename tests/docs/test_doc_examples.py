"""Doc examples used the way a reader uses them: run again in the same folder, or as files beside a command."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_snippets import ROOT, check_printed

QUICKSTART = ROOT / "docs" / "quickstart.md"
SQLITE_HOWTO = ROOT / "docs" / "how-to" / "sqlite-backend.md"
WORKERS_HOWTO = ROOT / "docs" / "how-to" / "workers.md"


def _blocks(path: Path, language: str) -> list[str]:
    fence = re.compile(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
    return [match.group(1) for match in fence.finditer(path.read_text(encoding="utf-8"))]


def _env() -> dict[str, str]:
    env = dict(os.environ, SITQ_STRICT_PLUGINS="1", PYTHONPATH="")
    env.pop("SITQ_BACKEND", None)
    return env


def test_the_backup_example_runs_again_in_the_same_folder(tmp_path: Path) -> None:
    """A reader runs an example twice; live.db then still held the first run's task and the check failed."""
    (code,) = [block for block in _blocks(SQLITE_HOWTO, "python") if ".backup(" in block]
    script = tmp_path / "backup_example.py"
    script.write_text(code, encoding="utf-8")
    for run in ("first", "second"):
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{run} run failed:\n{done.stdout}\n{done.stderr}"
        check_printed(f"backup example, {run} run", code, done.stdout)


def test_the_quickstart_worker_command_runs_the_module_it_shows(tmp_path: Path) -> None:
    """``sitq worker ... --import myapp.tasks`` exited 2 (No module named 'myapp'): no page showed that module."""
    (module,) = [block for block in _blocks(QUICKSTART, "python") if block.startswith("# myapp/tasks.py")]
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "tasks.py").write_text(module, encoding="utf-8")
    lines = [line for block in _blocks(QUICKSTART, "console") for line in block.splitlines()]
    (command,) = [line for line in lines if line.startswith("sitq worker")]
    # the command as written, with this environment's sitq (next to its python, as a virtual environment has it)
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).with_name("sitq"))
    worker = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        # the application's side, as the page describes it: import the task from the module and enqueue it
        producer = (
            "import asyncio\n"
            "from myapp.tasks import queue, resize\n\n"
            "async def main() -> None:\n"
            "    async with queue:\n"
            "        task_id = await resize.enqueue('cat.png', width=640)\n"
            "        result = await queue.get_result(task_id, timeout=60)\n"
            "        print(result.status, queue.deserialize_result(result))\n\n"
            "asyncio.run(main())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", producer], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nworker:\n{err}"
    assert done.stdout.strip() == "success cat.png at 640px", err
    assert worker.returncode == 0, err


def test_install_steps_give_the_checkout_install_first() -> None:
    """sitq is not on PyPI (the name is another project's): 'pip install sitq[...]' typed first installs that."""
    for page in (ROOT / "README.md", QUICKSTART, ROOT / "docs" / "how-to" / "postgres-backend.md"):
        installs = [
            line
            for block in _blocks(page, "console")
            for line in block.splitlines()
            if re.match(r"^(\$ )?pip install ", line)
        ]
        assert installs, page
        first = shlex.split(installs[0].removeprefix("$ "), comments=True)[2:]
        assert first and all(arg.startswith(("./", "/", ".[")) for arg in first), (page.name, installs[0])


@pytest.mark.parametrize(
    ("page", "marker", "warned"),
    [
        (QUICKSTART, "divide(a", "(__main__:divide) failed after 1 attempt(s): ZeroDivisionError: division by zero"),
        (
            WORKERS_HOWTO,
            "with_options(timeout=0.2)",
            "(__main__:slow) failed after 1 attempt(s): TimeoutError: task timed out",
        ),
    ],
    ids=["quickstart-divide", "workers-timeout"],
)
def test_examples_with_a_failing_task_say_that_stderr_shows_its_warning(
    page: Path, marker: str, warned: str, tmp_path: Path
) -> None:
    """The page showed only the prints; the reader also saw a WARNING line on stderr and took it for a fault."""
    text = page.read_text(encoding="utf-8")
    (code,) = [block for block in _blocks(page, "python") if marker in block]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and warned in done.stderr, done.stderr
    after = text[text.index(code) + len(code) :].split("\n\n", 2)  # the fence's end, then the paragraph after it
    assert "stderr" in after[1] and warned.split(")")[0] in after[1], after[1]
