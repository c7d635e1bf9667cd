"""``sitq stats`` and ``sitq worker``: an error about the backend names where it came from, in one plain line.

``sitq stats -b nosuch://x`` said "no backend named 'nosuch'. ... (context: parameter='backend', ...)": no flag
named (``sitq worker -s nosuch`` says ``--serializer: ...``) and Python's context dump at the end.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sitq_core.cli import main


def _error_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = main(args, stdout=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2, err
    assert "(context:" not in err and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)
    monkeypatch.delenv("SITQ_STRICT_PLUGINS", raising=False)


@pytest.mark.parametrize("command", ["stats", "worker"])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nosuch://x", "--backend: no backend named 'nosuch'. Installed: "),
        ("nosuch", "--backend: no backend named 'nosuch'. Installed: "),
        ("sqlit:///{dir}/x.db", "--backend: no backend named 'sqlit'. Installed: "),
        ("sqlite:///{dir}/x.db?synchronous=bogus", "--backend: synchronous must be one of "),
        ("sqlite:///{dir}/x.db?foo=1", "--backend: unknown option 'foo' for backend 'sqlite'"),
    ],
)
def test_a_bad_backend_flag_is_named_in_the_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, url: str, expected: str
) -> None:
    line = _error_line(capsys, [command, "-b", url.format(dir=tmp_path)])
    assert line.startswith(f"sitq: error: {expected}"), line
    assert not os.listdir(tmp_path)  # nothing was created for a refused URL


def test_a_misspelt_scheme_keeps_its_suggestion(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(capsys, ["stats", "-b", f"sqlit:///{tmp_path}/x.db"])
    assert "Did you mean 'sqlite'?" in line, line


@pytest.mark.parametrize("command", ["stats", "worker"])
def test_a_bad_sitq_backend_variable_is_named_in_the_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("SITQ_BACKEND", "nosuch://x")
    line = _error_line(capsys, [command])
    assert line.startswith("sitq: error: SITQ_BACKEND: no backend named 'nosuch'. Installed: "), line
    assert line.count("SITQ_BACKEND") == 1, line  # not also "(from the SITQ_BACKEND environment variable)"


@pytest.mark.parametrize("command", ["stats", "worker"])
def test_an_empty_sitq_backend_variable_is_named_in_the_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("SITQ_BACKEND", "")
    line = _error_line(capsys, [command])
    assert line.startswith("sitq: error: ") and "SITQ_BACKEND" in line and "empty" in line, line


def _sitq(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SITQ_BACKEND", "SITQ_STRICT_PLUGINS")}
    return subprocess.run(
        [sys.executable, "-m", "sitq", *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.parametrize("command", ["stats", "worker"])
def test_a_backend_that_cannot_connect_is_named_in_the_error(command: str) -> None:
    """Nothing listens on port 1: the connect fails at once, and the line says which flag gave that URL."""
    done = _sitq(command, "-b", "postgresql://postgres@127.0.0.1:1/sitq_nowhere")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("sitq: error: --backend: "), done.stderr
    assert "127.0.0.1:1" in line and "(context:" not in line and "Traceback" not in done.stderr, done.stderr


def test_a_bad_serializer_in_the_backend_url_names_the_backend_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The serializer came from ``-b URL?serializer=``: ``--serializer: ...`` named a flag nobody gave."""
    line = _error_line(capsys, ["worker", "-b", f"sqlite:///{tmp_path}/x.db?serializer=nosuch"])
    assert line.startswith("sitq: error: --backend (its ?serializer=): no serializer named 'nosuch'"), line
