"""The task module of 'Your own logging under sitq worker' (docs/how-to/workers.md), served by the command it names.

``sitq worker`` sets up the root logger before it imports ``--import``
modules, so a task module's own ``logging.basicConfig(...)`` did nothing and
the page said so nowhere; it now shows ``force=True``. Here the module runs
as the page shows it, and again without ``force=True`` (the line is lost).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_doc_examples import WORKERS_HOWTO, _blocks, _env

PRODUCER = (
    "import sitq\n"
    "from mytasks import resize\n\n"
    "with sitq.SyncTaskQueue('sqlite:///tasks.db') as queue:\n"
    "    print(queue.get_result(queue.enqueue(resize, 'cat.png'), timeout=60))\n"
)


def _module() -> tuple[str, list[str]]:
    """The page's task module, and the worker command its first line names."""
    (module,) = [block for block in _blocks(WORKERS_HOWTO, "python") if block.startswith("# mytasks.py")]
    command = module.splitlines()[0].split("served by: ", 1)[1]
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).with_name("sitq"))  # this environment's sitq, as a virtual environment has it
    return module, argv


def _serve(tmp_path: Path, module: str, argv: list[str]) -> str:
    """Run one task of ``module`` under ``argv``; the worker's stderr."""
    (tmp_path / "mytasks.py").write_text(module, encoding="utf-8")
    worker = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PRODUCER], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert done.returncode == 0 and done.stdout == "cat.png\n", f"{done.stdout}\n{done.stderr}\nworker:\n{err}"
    assert worker.returncode == 0, err
    return err


@pytest.mark.slow
def test_the_task_module_keeps_its_own_format_under_sitq_worker(tmp_path: Path) -> None:
    module, argv = _module()
    err = _serve(tmp_path, module, argv)
    assert "INFO [mytasks] resizing cat.png\n" in err.splitlines(keepends=True), err
    (promised,) = [line for line in module.splitlines() if "on the worker's stderr:" in line]
    assert promised.split("on the worker's stderr: ", 1)[1] + "\n" in err.splitlines(keepends=True), err


@pytest.mark.slow
def test_without_force_the_task_modules_basicconfig_does_nothing(tmp_path: Path) -> None:
    """What the page warns of: the command's root handler is there first, so the line comes in the command's format."""
    module, argv = _module()
    assert ", force=True)" in module
    err = _serve(tmp_path, module.replace(", force=True)", ")"), argv)
    assert "[mytasks]" not in err, err
    (line,) = [line for line in err.splitlines() if "resizing cat.png" in line]
    assert line.endswith(" INFO mytasks: resizing cat.png") and line[:4].isdigit(), line  # %(asctime)s first
