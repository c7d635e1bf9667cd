"""Task signatures survive the decorator for type checkers (mypy --strict on a user's module)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_CODE = textwrap.dedent(
    """
    from sitq import TaskQueue, task

    @task(max_retries=2)
    async def send(to: str, copies: int = 1) -> bool:
        return True

    async def main(queue: TaskQueue) -> None:
        ok: bool = await send("a@example.com")
        bound = send.bind(queue)
        task_id: str = await bound.enqueue("a@example.com", copies=2)
        await bound.enqueue(42)                      # line 12: wrong type
        await bound.enqueue("a@example.com", cc=1)   # line 13: unknown keyword

    def build(queue: TaskQueue) -> None:
        @queue.task(max_retries=1)
        async def resize(path: str, width: int) -> str:
            return path

        @queue.task
        def plain(path: str) -> None:
            return None

        async def use() -> None:
            await resize.enqueue("a.png", width="wide")   # line 25: wrong type, through @queue.task(...)
            await plain.enqueue(3)                        # line 26: wrong type, through @queue.task
    """
)


@pytest.mark.slow
def test_enqueue_is_checked_against_the_function_signature(tmp_path: Path) -> None:
    module = tmp_path / "user_tasks.py"
    module.write_text(USER_CODE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(Path(__file__).resolve().parents[2])},  # the facade's editable finder
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert any("user_tasks.py:12:" in line and '"int"' in line for line in errors), done.stdout
    assert any("user_tasks.py:13:" in line and "cc" in line for line in errors), done.stdout
    assert any("user_tasks.py:25:" in line and '"str"' in line for line in errors), done.stdout
    assert any("user_tasks.py:26:" in line and '"int"' in line for line in errors), done.stdout
    assert len(errors) == 4, done.stdout


# ------------------------------------------------------------------ what users' checkers see of the facade
#
# Each module below marks the lines a checker must flag with ``# error``; every other line must be clean.
# mypy --strict always runs; pyright (standard mode) runs when a ``pyright`` or ``basedpyright`` executable is
# found (beside this interpreter, on PATH, or named by $SITQ_PYRIGHT), as users who reported these use it.

ROOT = Path(__file__).resolve().parents[2]


def _pyright() -> str | None:
    named = os.environ.get("SITQ_PYRIGHT")
    if named:
        return named
    for name in ("pyright", "basedpyright"):
        found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
        if found:
            return found
    return None


def _mypy_errors(module: Path) -> tuple[set[int], str]:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        capture_output=True,
        text=True,
        cwd=module.parent,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # the facade's editable finder is invisible to mypy
    )
    pattern = rf"^{re.escape(module.name)}:(\d+): error:"
    return {int(match[1]) for match in re.finditer(pattern, done.stdout, re.MULTILINE)}, done.stdout


def _pyright_errors(module: Path) -> tuple[set[int], str]:
    executable = _pyright()
    if executable is None:
        pytest.skip("pyright is not installed (pip install basedpyright, or set SITQ_PYRIGHT)")
    config = {"pythonVersion": "3.11", "typeCheckingMode": "standard"}
    (module.parent / "pyrightconfig.json").write_text(json.dumps(config))
    done = subprocess.run(
        [executable, "--outputjson", "--pythonpath", sys.executable, str(module)],
        capture_output=True,
        text=True,
        cwd=module.parent,
        # on the interpreter's path, as an installed sitq is: a library, whose private imports pyright refuses
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    diagnostics = json.loads(done.stdout)["generalDiagnostics"]
    lines = {item["range"]["start"]["line"] + 1 for item in diagnostics if item["severity"] == "error"}
    return lines, json.dumps(diagnostics, indent=1)


CHECKERS = {"mypy": _mypy_errors, "pyright": _pyright_errors}


def _check(tmp_path: Path, checker: str, code: str) -> None:
    """``code`` gets errors on exactly the lines marked ``# error``."""
    module = tmp_path / "user_code.py"
    module.write_text(code)
    expected = {number for number, line in enumerate(code.splitlines(), 1) if line.rstrip().endswith("# error")}
    found, output = CHECKERS[checker](module)
    assert found == expected, f"{checker}: errors on lines {sorted(found)}, expected {sorted(expected)}:\n{output}"


MISSPELT = textwrap.dedent(
    """
    import sitq
    from sitq import TaskQeue  # error
    from sitq import SQLiteBackend, TaskQueue

    queue: TaskQueue = sitq.TaskQueue(SQLiteBackend(":memory:"))
    worker = sitq.Wroker(queue.backend)  # error
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_a_misspelt_name_from_sitq_is_an_error(tmp_path: Path, checker: str) -> None:
    """The lazy plugin names (a module ``__getattr__`` at run time) must not make every name ``Any``."""
    _check(tmp_path, checker, MISSPELT)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_every_name_the_reference_documents_imports_cleanly(tmp_path: Path, checker: str) -> None:
    """api.md: "Everything here is importable from sitq" (its names: ``sitq.__all__``, the backends too)."""
    import sitq

    names = sorted(set(sitq.__all__) | {"SQLiteBackend", "PostgresBackend", "MissingPluginError", "__version__"})
    code = "import sitq\n"
    code += "".join(f"from sitq import {name}\n" for name in names)
    code += "".join(f"print(sitq.{name})\n" for name in names)
    code += "version: str = __version__\n"
    code += "backend: sitq.Backend = SQLiteBackend(':memory:')\n"
    code += "def hint(error: MissingPluginError) -> str:\n    return error.message\n"
    _check(tmp_path, checker, code)


def test_the_facade_re_exports_what_it_imports_by_name() -> None:
    """pyright takes a sitq name imported as ``from x import Y`` for private; ``Y as Y`` re-exports it.

    Checked here without pyright too (the test above needs it): ``MissingPluginError``
    and ``__version__`` were imported the plain way and pyright refused them to users.
    """
    tree = ast.parse((ROOT / "sitq" / "__init__.py").read_text(encoding="utf-8"))
    private = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sitq")
        for alias in node.names
        if alias.name != "*" and alias.asname != alias.name and _public(alias.asname or alias.name)
    ]
    assert private == [], f"sitq/__init__.py imports {private} without re-exporting them (write 'import Y as Y')"


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))  # __version__ is public


VIEWS = textwrap.dedent(
    """
    import sitq
    from sitq import TaskQueue, TaskQueueView

    @sitq.task
    async def send(to: str) -> bool:
        return True

    async def main(queue: TaskQueue) -> None:
        view: TaskQueueView = queue.with_options(priority=5)
        bound = send.bind(view)
        await bound.enqueue("a@example.com")
        send.bind(queue.with_options(queue_name="mail").with_options(max_retries=1))

        @sitq.task(queue=view, max_retries=2)
        async def resize(path: str, width: int) -> str:
            return path

        @sitq.task(queue=view)
        async def plain(path: str) -> None:
            return None

        await resize.enqueue("a.png", width=3)
        await resize.enqueue("a.png", width="wide")  # error
        await plain.enqueue("a.png")
        await plain.enqueue(3)  # error
        send.bind("sqlite:///tasks.db")  # error
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_a_view_binds_like_a_queue(tmp_path: Path, checker: str) -> None:
    """``f.bind(view)`` and ``@sitq.task(queue=view)`` (api.md) check, and keep the function's signature."""
    _check(tmp_path, checker, VIEWS)


OPTIONS = textwrap.dedent(
    """
    from datetime import UTC, datetime

    import sitq
    from sitq import SyncTaskQueue, TaskQueue

    async def main(queue: TaskQueue, sync: SyncTaskQueue) -> None:
        view = queue.with_options(eta=datetime.now(UTC), priority=None, max_retries=3, retry_backoff=0.5)
        view.with_options(delay=2, timeout=30.0, queue_name="mail", max_lease_expiries=None)
        sync.with_options(priority=-1).with_options(max_retries=None)
        queue.with_options(max_retrie=3)  # error
        view.with_options(max_retrie=3)  # error
        sync.with_options(max_retrie=3)  # error
        sync.with_options(priority=1).with_options(max_retrie=3)  # error
        queue.with_options(max_retries="3")  # error
        view.with_options(queue_name=5)  # error
        sync.with_options(eta="tomorrow")  # error

        @sitq.task(max_retries=2, priority=None, queue_name="mail", timeout=None)
        async def fine() -> None: ...

        @queue.task(retry_backoff=2.0, delay=None)
        async def fine_too() -> None: ...

        @sitq.task(max_retries="3")  # error
        async def wrong_type() -> None: ...

        @sitq.task(max_retrie=3)  # error
        async def misspelt() -> None: ...

        @queue.task(max_retrie=3)  # error
        async def misspelt_on_queue() -> None: ...

        @sitq.task(queue=view, priority="high")  # error
        async def wrong_on_view() -> None: ...
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_task_options_are_checked_everywhere_they_are_given(tmp_path: Path, checker: str) -> None:
    """with_options on queues, views and sync queues, and both decorators, know the options and their types."""
    _check(tmp_path, checker, OPTIONS)


METHODS = textwrap.dedent(
    """
    import sitq
    from sitq import TaskFunction, TaskQueue

    class Svc:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @sitq.task(priority=3)
        def method(self, x: int) -> int:
            return self.factor * x

        @sitq.task
        async def later(self, x: int, *, tag: str = "") -> str:
            return f"{tag}{x}"

    async def main(queue: TaskQueue) -> None:
        svc = Svc(2)
        n: int = svc.method(3)
        s: str = await svc.later(3, tag="a")
        m: int = Svc.method(svc, 3)
        unbound: TaskFunction[[Svc, int], int] = Svc.method
        task_id: str = await svc.method.bind(queue).enqueue(3)
        await queue.enqueue(svc.method, 3)
        print(n, s, m, unbound, task_id)
        svc.method("3")  # error
        svc.method(3, 4)  # error
        await svc.later.enqueue(3, tag=1)  # error
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_a_decorated_method_binds_for_checkers_too(tmp_path: Path, checker: str) -> None:
    """``obj.method`` drops ``self`` from the task's parameters (``TaskFunction.__get__``), as at run time."""
    _check(tmp_path, checker, METHODS)


def test_the_typed_option_arguments_are_the_task_options() -> None:
    """``TaskOptionArgs`` (what checkers see) names every field of ``TaskOptions`` (what runs), each optional."""
    import dataclasses
    import typing

    from sitq import TaskOptionArgs, TaskOptions

    names = {field.name for field in dataclasses.fields(TaskOptions) if field.name != "explicit"}
    assert set(TaskOptionArgs.__annotations__) == names
    assert TaskOptionArgs.__required_keys__ == frozenset()
    hints = typing.get_type_hints(TaskOptionArgs)
    assert all(type(None) in typing.get_args(hint) for hint in hints.values()), hints


@pytest.mark.slow
def test_the_example_plugin_is_typed(tmp_path: Path) -> None:
    """plugins.md tells authors to ship ``py.typed``; its own example does, so users' checkers read it."""
    code = textwrap.dedent(
        """
        import sitq
        from sitq_dictstore import DictStoreBackend

        backend: sitq.Backend = DictStoreBackend(store="jobs")
        DictStoreBackend(store=3)  # error
        """
    )
    _check(tmp_path, "mypy", code)


@pytest.mark.slow
def test_the_guide_waives_a_kit_test_with_a_type_correct_override(tmp_path: Path) -> None:
    """plugins.md's waiver example, as a backend author's mypy --strict checks their test module."""
    guide = (ROOT / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", guide, re.DOTALL | re.MULTILINE)
    (waiver,) = [block for block in blocks if "pytest.mark.skip(" in block and "BackendSuite" in block]
    _check(tmp_path, "mypy", waiver)


DURATIONS = textwrap.dedent(
    """
    from decimal import Decimal
    from fractions import Fraction

    import sitq
    from sitq import Call, SyncTaskQueue, TaskQueue, Worker

    def add(a: int, b: int) -> int:
        return a + b

    async def main(queue: TaskQueue, sync: SyncTaskQueue) -> None:
        view = queue.with_options(delay=Fraction(1, 2), retry_backoff=Decimal("1.5"), timeout=Decimal(30))
        await view.enqueue_call(add, [1, 2])
        await queue.enqueue_many([Call(add, [1, 2])])
        await queue.get_result("id", timeout=Decimal("0.5"))
        sync.get_result("id", timeout=Fraction(1, 10))
        sync.enqueue_call(add, [1, 2])
        worker = Worker(queue.backend, poll_interval=Decimal(1), lease_timeout=Fraction(30), shutdown_timeout=2)
        await worker.stop(timeout=Decimal(5))
        sitq.task(timeout=Decimal(3))(add)
        await queue.get_result("id", timeout="5")  # error
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("checker", CHECKERS)
def test_durations_type_check_as_any_real_number_and_args_as_a_list(tmp_path: Path, checker: str) -> None:
    """api.md: every duration may be an int, float, Fraction or Decimal; mypy refused Decimal and Fraction
    ('expected "float | None"'), and Call/enqueue_call refused a list of arguments the run time takes."""
    _check(tmp_path, checker, DURATIONS)


@pytest.mark.slow
def test_a_worker_subclass_is_checked_against_worker_alone(tmp_path: Path) -> None:
    """Worker is built from private mixins; one declared ``stop`` for the type checker, so a user's override
    got three [override] errors, two naming private classes, instead of one naming Worker."""
    module = tmp_path / "my_worker.py"
    module.write_text(
        "from sitq import Worker\n\n\n"
        "class MyWorker(Worker):\n"
        "    async def stop(self, timeout: float | None = None) -> None:  # narrower than Worker.stop\n"
        "        await super().stop(timeout)\n",
        encoding="utf-8",
    )
    lines, output = _mypy_errors(module)
    assert lines == {5}, output
    assert output.count("[override]") == 1, output
    assert "sitq_core._worker" not in output, output
