"""How ``sitq`` reads its options: repeatable ones add up, top-level ones are accepted after the command too."""

from __future__ import annotations

import io
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


@pytest.mark.parametrize("command", [["worker", "-b", "sqlite:///x.db"], ["stats"], ["plugins"], ["backends"]])
def test_log_level_is_accepted_after_the_command_too(command: list[str]) -> None:
    """``sitq worker -b ... --log-level INFO`` exited 2: 'unrecognized arguments: --log-level INFO'."""
    parser = cli.build_parser()
    assert parser.parse_args([*command, "--log-level", "INFO"]).log_level == "INFO"
    assert parser.parse_args(["--log-level", "DEBUG", *command]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "DEBUG", *command, "--log-level", "ERROR"]).log_level == "ERROR"
    assert parser.parse_args(command).log_level == parser.get_default("log_level")


def test_version_is_accepted_after_the_command_too() -> None:
    """``sitq stats --version`` exited 2 with 'unrecognized arguments: --version'."""
    out = io.StringIO()
    assert cli.main(["stats", "--version"], stdout=out) == 0
    assert out.getvalue().startswith("sitq ")
    assert cli.build_parser().parse_args(["stats"]).version is False


def test_a_bad_log_level_after_the_command_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "--log-level", "LOUD"], stdout=io.StringIO()) == 2
    assert "sitq: error: --log-level: unknown level 'LOUD'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["stats", "--bogus"], "usage: sitq stats"),
        (["stats", "--status", "failed"], "usage: sitq stats"),  # a flag of sitq tasks, not of stats
        (["worker", "-b", "sqlite:///x.db", "extra"], "usage: sitq worker"),
        (["--bogus"], "usage: sitq ["),
    ],
)
def test_an_unknown_argument_shows_the_usage_of_its_command(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed the usage of 'sitq', listing the commands, for an argument the command did not take."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv, stdout=io.StringIO())
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments: " in err and argv[-1] in err
