"""A very long backend name, URL or connection string is refused as fast as a short one.

The error about an unknown name masks the text it quotes (``urls.masked``),
and the pattern finding ``key=value`` pairs in it was tried again from every
position of a run of name characters with no ``=``: quadratic time, 90 s for a
100,000-character name. No test here measures time (a timed assertion fails
on a loaded machine): the inputs are 100,000 characters long, so that a
quadratic algorithm would not go unnoticed, taking minutes per case and
blowing the suite's time budget, while a linear one takes milliseconds.
"""

from __future__ import annotations

import io
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

import sitq
from sitq import SitqError
from sitq_core.cli import main
from sitq_core.urls import masked, masked_text

LONG = 100_000  # characters: see the module's docstring
X = "x" * LONG


@pytest.mark.parametrize(
    "build",
    [
        lambda: sitq.TaskQueue(X),
        lambda: sitq.connect(X),
        lambda: sitq.SyncTaskQueue(X),
        lambda: sitq.Worker(X),
        lambda: sitq.TaskQueue("postgresql//u:" + X),
        lambda: sitq.TaskQueue(X + "://h/db"),
        lambda: sitq.TaskQueue("a." * (LONG // 2)),
        lambda: sitq.TaskQueue(X + "="),
        lambda: sitq.TaskQueue("9" * LONG + "x"),
        lambda: sitq.TaskQueue("a " * (LONG // 2)),
        lambda: sitq.TaskQueue("a= " * (LONG // 3)),
        lambda: sitq.TaskQueue(X + " " * LONG),
    ],
    ids=["name", "connect", "sync", "worker", "url-without-colon", "long-scheme", "dotted", "name-then-equals",
         "digits", "words", "pairs", "trailing-blanks"],
)  # fmt: skip
def test_a_long_unknown_backend_is_refused_at_once(build: Callable[[], Any]) -> None:
    with pytest.raises(SitqError):
        build()


def test_the_cli_refuses_a_long_backend_name_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "-b", X], stdout=io.StringIO()) == 2
    assert "no backend named" in capsys.readouterr().err


@pytest.mark.parametrize("text", [X, X + "=", "a." * (LONG // 2), "\\" * LONG, "a='" + "\\" * LONG, "'" * LONG])
def test_masking_long_text_is_linear(text: str) -> None:
    assert masked(text) == masked_text(text)


#: The pattern as it was before: the same pairs, found in quadratic time on a long name
_PLAIN = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.DOTALL)


def _plain_masked(text: str) -> str:
    from sitq_core.urls import _mask_query, looks_secret

    text = _PLAIN.sub(lambda pair: f"{pair[1]}{pair[2]}***" if looks_secret(pair[1]) else pair[0], text)
    colon, at = text.find(":"), text.rfind("@")
    if 0 <= colon < at:
        text = f"{text[: colon + 1]}***{text[at:]}"
    return _mask_query(text)


@pytest.mark.parametrize(
    "text",
    ["password=s3cret", "9password=s3cret", "x.password = 's 3'", "-1pwd='a\\'b' user=me", "a.b-c=1 token=2",
     "host=h password='unclosed", "1.5 password=x", "key=", "=password=x", "password='a'password=b"],
)  # fmt: skip
def test_masking_finds_the_pairs_it_found_before(text: str) -> None:
    assert masked_text(text) == _plain_masked(text)
    assert "s3cret" not in masked_text(text)


def test_masking_finds_the_same_pairs_as_before_on_random_short_text() -> None:
    rng = random.Random(7)
    alphabet = "ab_9.-= '\\\n\t@:xpw"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert masked_text(text) == _plain_masked(text), repr(text)
