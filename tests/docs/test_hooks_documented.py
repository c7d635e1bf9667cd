"""plugins.md documents every hookspec with its exact signature; every hook has a docstring and a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from sitq_core import hookspecs

ROOT = Path(__file__).resolve().parents[2]
SPECS = [name for name, value in vars(hookspecs).items() if name.startswith("sitq_") and inspect.isfunction(value)]


def signature_text(name: str) -> str:
    source = inspect.getsource(getattr(hookspecs, name))
    header = re.search(r"def (sitq_\w+\(.*?\) -> None):", source, re.DOTALL)
    assert header is not None
    return " ".join(header.group(1).split())


def test_there_are_hooks() -> None:
    assert {"sitq_register_backends", "sitq_register_serializers", "sitq_task_enqueued"} <= set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented_in_plugins_md(name: str) -> None:
    headings = {line[3:].strip() for line in (ROOT / "plugins.md").read_text().splitlines() if line.startswith("## ")}
    assert signature_text(name) in headings, f"plugins.md needs a heading '## {signature_text(name)}'"


@pytest.mark.parametrize("name", SPECS)
def test_hook_has_a_docstring(name: str) -> None:
    assert (inspect.getdoc(getattr(hookspecs, name)) or "").strip()


@pytest.mark.parametrize("name", SPECS)
def test_hook_has_a_test(name: str) -> None:
    sources = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    assert f"def test_hook_{name}" in sources, f"add a test named test_hook_{name}"
