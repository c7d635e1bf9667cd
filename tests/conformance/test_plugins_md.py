"""plugins.md shows the example plugin exactly as it is, and names every contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sitq_core.testing import CONTRACTS, SUITE_VERSION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "plugins" / "sitq_dictstore"
SOURCES = [
    EXAMPLE / "pyproject.toml",
    EXAMPLE / "src" / "sitq_dictstore" / "__init__.py",
    EXAMPLE / "src" / "sitq_dictstore" / "plugin.py",
    EXAMPLE / "src" / "sitq_dictstore" / "backend.py",
]
GUIDE = (ROOT / "plugins.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_example_file_is_quoted_verbatim(source: Path) -> None:
    text = source.read_text(encoding="utf-8").rstrip("\n")
    assert f"\n{text}\n```" in GUIDE, f"plugins.md must quote {source.relative_to(ROOT)} verbatim in a fenced block"


def test_every_contract_is_documented() -> None:
    missing = [c.__name__ for c in CONTRACTS if f"`{c.__name__}`" not in GUIDE]
    assert not missing, f"plugins.md does not mention {missing}"


def test_the_suite_version_shown_in_the_guide_is_current() -> None:
    assert f"`sitq_core.testing.SUITE_VERSION` (currently {SUITE_VERSION})" in GUIDE, (
        f"plugins.md must give the kit's current SUITE_VERSION, {SUITE_VERSION}"
    )


def test_kit_test_module_matches_the_guide() -> None:
    module = (ROOT / "tests" / "conformance" / "test_dictstore.py").read_text(encoding="utf-8")
    body = module[module.index("class TestDictStoreBackend") :].rstrip("\n")
    assert body in GUIDE, "plugins.md's kit example must match tests/conformance/test_dictstore.py"


def test_the_kit_counts_shown_in_the_guide_are_current() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests/conformance/test_dictstore.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    counts = re.search(r"(\d+) passed, (\d+) skipped", done.stdout)
    assert counts is not None, done.stdout[-500:]
    assert f"\n{counts[1]} passed, {counts[2]} skipped\n" in GUIDE, (
        f"plugins.md shows another count than the kit's {counts[0]} (and shows it without a timing)"
    )


def test_the_kit_module_run_as_a_script_gives_no_warning(tmp_path: Path) -> None:
    """The guide's kit example ends in an ``if __name__ == "__main__"`` block; run so, pytest warns of nothing."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE, re.DOTALL | re.MULTILINE)
    [code] = [block for block in blocks if 'if __name__ == "__main__":' in block and "BackendSuite" in block]
    script = tmp_path / "test_conformance.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "1 passed" in output, output[-2000:]
    assert "Warning" not in output and "warning" not in output, output[-2000:]
