"""Every number flag of ``sitq`` reads its number by one rule: ``int()`` for counts, ``float()`` for seconds.

``--concurrency 1_0`` and ``--lease-timeout 1e3`` were taken, ``--older-than 1_0`` and ``--older-than 1e3``
refused; a long run of digits after ``-`` made argparse's negative-number check take quadratic time.
"""

from __future__ import annotations

import argparse
import io

import pytest

from sitq_core import cli_numbers
from sitq_core.cli import build_parser, main
from sitq_core.cli_tasks import parse_duration


@pytest.mark.parametrize(("text", "value"), [("10", 10), ("1_0", 10), (" 7 ", 7), ("-3", -3), ("+4", 4)])
def test_whole_numbers_are_read_as_int_reads_them(text: str, value: int) -> None:
    assert cli_numbers.whole_number(text) == value


@pytest.mark.parametrize("text", ["", "1.5", "1e3", "0x10", "nan", "1__0", "a\nb"])
def test_anything_else_is_not_a_whole_number(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number"):
        cli_numbers.whole_number(text)


def test_a_whole_number_past_ints_digit_limit_says_so() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at most 4300 digits"):
        cli_numbers.whole_number("9" * 5000)


@pytest.mark.parametrize("text", ["10", "1_0", "1e1", "10.0", " 10 "])
def test_every_seconds_flag_and_a_duration_read_the_same_number(text: str) -> None:
    assert cli_numbers.seconds(text) == 10.0
    assert parse_duration(text).total_seconds() == 10.0
    parsed = build_parser().parse_args(["worker", "--lease-timeout", text, "--poll-interval", text, "-c", "1_0"])
    assert parsed.lease_timeout == parsed.poll_interval == 10.0 and parsed.concurrency == 10


@pytest.mark.parametrize("flag", ["--lease-timeout", "--batch-window", "--poll-interval", "--shutdown-timeout"])
def test_a_seconds_flag_refuses_what_is_no_number(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    with pytest.raises(SystemExit) as info:  # a usage error: argparse exits
        main(["worker", flag, "0x10"], stdout=io.StringIO())
    assert info.value.code == 2
    assert f"argument {flag}: expected a number of seconds, got '0x10'" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["-" + "1" * 100_000 + "x", "-" + "1" * 100_000 + "d"])
def test_a_long_negative_duration_is_refused_at_once(capsys: pytest.CaptureFixture[str], given: str) -> None:
    """100,000 digits: the negative-number pattern was quadratic in them (minutes); no time is measured."""
    try:
        code = main(["purge", "--older-than", given], stdout=io.StringIO())
    except SystemExit as exc:  # '-111...x' is no negative number to argparse: "expected one argument"
        code = exc.code
    assert code == 2 and "--older-than" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["-1e3", "-1_0m", "-.5h"])
def test_a_negative_duration_in_any_number_form_says_it_cannot_be_negative(
    capsys: pytest.CaptureFixture[str], given: str
) -> None:
    assert main(["purge", "--older-than", given], stdout=io.StringIO()) == 2
    assert "cannot be negative" in capsys.readouterr().err
