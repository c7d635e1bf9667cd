"""Every ```python block in the READMEs, docs/ and plugins.md runs as written.

Each block is a standalone script, run with this interpreter in an empty
temporary directory; it must exit 0. Blocks that are not meant to run use
another fence language (```text, ```console, ```toml).

A block whose first line names a pytest file (``# tests/test_tasks.py``,
``# tests/conftest.py``) is a user's test file, not a script: its page's
blocks that name their files (```python and ```toml, ``# myapp/tasks.py``,
``# pyproject.toml``) are written at those paths, and ``python -m pytest``
runs the test file there, as its reader would; every test in it must pass
(none skipped, no warnings). A conftest.py runs with the page's test files
beside it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sitq_test_postgres import DSN, require_postgres

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def documents() -> list[Path]:
    files = [
        ROOT / "README.md",
        ROOT / "plugins.md",
        ROOT / "sitq_core" / "README.md",
        ROOT / "sitq_sqlite" / "README.md",
        ROOT / "sitq_postgres" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]
    return [path for path in files if path.exists()]


def snippets() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


SNIPPETS = snippets()

# the file a block says it is, on its first line: "# myapp/tasks.py", "# pyproject.toml"
_FILE_NAME = re.compile(r"# ((?:[\w.-]+/)*[\w-]+\.(?:py|toml))\b")
_NAMED_FENCE = re.compile(r"^```(?:python|toml)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def file_name(code: str) -> str | None:
    """The path a block names on its first line, or None."""
    found = _FILE_NAME.match(code)
    return found.group(1) if found else None


def is_pytest_file(code: str) -> bool:
    """Whether the block is a user's pytest file (a test module or a conftest.py), run by pytest, not as a script."""
    name = (file_name(code) or "").rpartition("/")[2]
    return name == "conftest.py" or (name.startswith("test_") and name.endswith(".py"))


def named_files(where: str) -> dict[str, str]:
    """The blocks that name their files on the page ``where`` ("docs/how-to/x.md:12") is on, by path."""
    text = (ROOT / where.rsplit(":", 1)[0]).read_text(encoding="utf-8")
    files: dict[str, str] = {}
    for match in _NAMED_FENCE.finditer(text):
        name = file_name(match.group(1))
        if name is not None:
            assert name not in files, f"{where}: two blocks on the page name {name}"
            files[name] = match.group(1)
    return files


def lay_out(where: str, folder: Path) -> dict[str, str]:
    """Write the named blocks of the page ``where`` is on into ``folder``, at their paths; returns them."""
    files = named_files(where)
    for name, code in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(code, encoding="utf-8")
    return files


_OUTCOMES = re.compile(r"\b(failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|no tests ran)\b")


def run_pytest_block(where: str, code: str, folder: Path, env: dict[str, str]) -> None:
    """Run the test file ``code`` names with pytest, beside its page's other named files; every test must pass."""
    name = file_name(code)
    assert name is not None
    files = lay_out(where, folder)
    if name.rpartition("/")[2] == "conftest.py":  # it runs with the test files beside it
        beside = [other for other in files if is_pytest_file(files[other]) and other != name]
        folder_of = name.rpartition("/")[0]
        assert any(other.rpartition("/")[0] == folder_of for other in beside), f"{where}: no test file uses {name}"
        return
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    shown = f"{where} ({name}) under pytest (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0 and " passed" in summary and not _OUTCOMES.search(summary), shown


def test_documents_have_snippets() -> None:
    assert SNIPPETS, "no python blocks found in README.md, docs/ or plugins.md"


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[where for where, _ in SNIPPETS])
def test_snippet_runs(where: str, code: str, tmp_path: Path) -> None:
    if "PostgresBackend" in code or "postgresql://" in code:
        require_postgres()  # skips without a server (fails under CI=true)
    env = dict(os.environ, SITQ_STRICT_PLUGINS="1", PYTHONPATH="")
    env.pop("SITQ_BACKEND", None)
    env.setdefault("SITQ_TEST_POSTGRES_DSN", DSN)
    if is_pytest_file(code):
        run_pytest_block(where, code, tmp_path, env)
        return
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{where} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    check_printed(where, code, done.stdout)


_PRINTED = re.compile(r"^\s*print\(.*\)  # (.+)$")


def check_printed(where: str, code: str, stdout: str) -> None:
    """``print(...)  # text`` promises that output line, in order; ``...`` in the text matches anything."""
    lines = stdout.splitlines()
    position = 0
    for source in code.splitlines():
        promised = _PRINTED.match(source)
        if promised is None:
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in promised.group(1).strip().split("...")))
        for index in range(position, len(lines)):
            if pattern.fullmatch(lines[index].strip()):
                position = index + 1
                break
        else:
            raise AssertionError(f"{where}: the snippet promises {promised.group(1)!r}; it printed:\n{stdout}")
