"""Every ```python block in the READMEs, docs/ and plugins.md runs as written.

Each block is a standalone script, run with this interpreter in an empty
temporary directory; it must exit 0. Blocks that are not meant to run use
another fence language (```text, ```console, ```toml).
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


def test_documents_have_snippets() -> None:
    assert SNIPPETS, "no python blocks found in README.md, docs/ or plugins.md"


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[where for where, _ in SNIPPETS])
def test_snippet_runs(where: str, code: str, tmp_path: Path) -> None:
    if "PostgresBackend" in code or "postgresql://" in code:
        require_postgres()  # skips without a server (fails under CI=true)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, SITQ_STRICT_PLUGINS="1", PYTHONPATH="")
    env.pop("SITQ_BACKEND", None)
    env.setdefault("SITQ_TEST_POSTGRES_DSN", DSN)
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
