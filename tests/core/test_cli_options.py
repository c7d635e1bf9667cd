"""How ``sitq`` reads its options: repeatable ones add up, top-level ones are accepted after the command too."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sitq_core import cli
from sitq_core.errors import ValidationError


def _worker_queues(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``queues`` ``sitq worker`` would pass to ``Worker`` (the worker is not run)."""
    seen: dict[str, Any] = {}

    def fake_worker(*_args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise ValidationError("stop here", parameter="queues")

    monkeypatch.setattr(cli, "Worker", fake_worker)
    monkeypatch.setattr(sys, "path", list(sys.path))  # _run_worker puts the working directory first
    args = cli.build_parser().parse_args(argv)
    assert cli._run_worker(args) == 2
    return seen["queues"]


def test_queues_is_repeatable_and_adds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``-q mail -q reports`` kept only the last value (queues=['reports']), unlike --queue and --import."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert _worker_queues(["worker", "-b", db, "-q", "mail", "-q", "reports"], monkeypatch) == ["mail", "reports"]
    queues = _worker_queues(["worker", "-b", db, "--queues", "a, b", "-q", "c", "--queue", "d,e"], monkeypatch)
    assert queues == ["a", "b", "c", "d,e"]  # each -q value split at commas; --queue taken as written
    assert _worker_queues(["worker", "-b", db], monkeypatch) is None  # every queue


def test_an_empty_value_among_several_queues_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(["worker", "-b", f"sqlite:///{tmp_path / 'x.db'}", "-q", "mail", "-q", ""])
    assert cli._run_worker(args) == 2
    assert "--queues must be comma-separated non-empty queue names, got ''" in capsys.readouterr().err
