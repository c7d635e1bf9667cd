"""Every ```python block of the docs type-checks under ``mypy --strict``, as a typed user pastes it.

sitq ships ``py.typed``, so the code users copy from README.md, docs/ and
plugins.md must pass their checker as well as run (test_snippets runs them):
15 blocks failed, most reading ``Result | None`` from ``get_result`` without a
check. The blocks are found as test_snippets finds them; all are checked by
one mypy process (a cache in the temporary folder), from a folder outside
the checkout, so it also checks that the installed sitq is visible to mypy.
A page's pytest files (test_snippets.is_pytest_file) import its other
files (``from myapp.tasks import ...``): they are checked laid out as the
page names them, one mypy process per such page.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_snippets import SNIPPETS, is_pytest_file, lay_out

from sitq_test_helpers import mypy_or_skip


@pytest.mark.slow
def test_every_python_block_passes_mypy_strict(tmp_path: Path) -> None:
    command = mypy_or_skip()
    files: dict[str, str] = {}  # file name -> where the block is
    pages: dict[str, str] = {}  # a page with pytest files -> where one of them is
    for where, code in SNIPPETS:
        if is_pytest_file(code):
            pages.setdefault(where.rsplit(":", 1)[0], where)
            continue
        name = "block_" + re.sub(r"\W", "_", where) + ".py"
        (tmp_path / name).write_text(code, encoding="utf-8")
        files[name] = where
    assert files, "no python blocks found in README.md, docs/ or plugins.md"
    done = subprocess.run(
        [*command, "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    errors = [  # as "docs/quickstart.md:43: error: ...": the line in the document (its fence's line + the block's)
        f"{files[found[1]].rsplit(':', 1)[0]}:{int(files[found[1]].rsplit(':', 1)[1]) + int(found[2])}:{found[3]}"
        for found in re.finditer(r"^(block_\w+\.py):(\d+):( error: .*)$", done.stdout, re.MULTILINE)
    ]
    assert done.returncode == 0 and not errors, "\n".join(errors) or done.stdout + done.stderr
    for page, where in pages.items():
        folder = tmp_path / re.sub(r"\W", "_", page)
        folder.mkdir()
        laid_out = lay_out(where, folder)
        tests = [name for name, code in laid_out.items() if is_pytest_file(code)]
        done = subprocess.run(
            [*command, "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"), *tests],
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=300,
        )
        assert done.returncode == 0, f"{page}'s pytest files ({', '.join(tests)}):\n{done.stdout}{done.stderr}"
