"""Errors about a postgres URL, dsn or option never show a password, nor a piece of one (no server needed)."""

from __future__ import annotations

import contextlib
import io
import random

import pytest

import sitq
from sitq import SitqError, TaskQueue
from sitq_core.cli import main
from sitq_core.urls import parse_backend_url
from sitq_postgres import PostgresBackend

from sitq_test_helpers import shown_by

#: Pieces of a generated password: each of them must stay out of every error (the characters are URL delimiters).
_TOKENS = ["QQ", "ZZ", "Q7", "Z9", "K4"]
_DELIMITERS = "/?@#:&=%[],; \\'\""
_TEMPLATES = [
    "postgresql://app:{pw}@db.invalid:1/app",
    "postgresql://app:{pw}@db.invalid/app?schema=x",
    "postgresql://app@db.invalid/app?password={pw}",
    "postgresql://app:{pw}@db.invalid/app?application_name=me@x",
    "postgresql://app@db.invalid/app?sslpassword={pw}&sslmode=require",
    "sqlite://u:{pw}@/x.db",
    # given as a dsn beside the backend's name, not as the URL
    "dsn:postgresql://app:{pw}@db.invalid:1/app",
    "dsn:postgresql://app@db.invalid/app?password={pw}&connect_timeout=5",
]


def _passwords(count: int, seed: int) -> list[str]:
    """Unencoded passwords full of URL delimiters, between the sentinels QQ and ZZ (as the tester's fuzz made them)."""
    draw = random.Random(seed)
    pieces = ["Q7", "Z9", "K4", *_DELIMITERS]
    return ["QQ" + "".join(draw.choice(pieces) for _ in range(draw.randint(2, 6))) + "ZZ" for _ in range(count)]


def _leaked(text: str) -> list[str]:
    return [token for token in _TOKENS if token in text]


@pytest.mark.parametrize("template", _TEMPLATES)
def test_no_generated_password_shows_in_any_error_or_rendering(template: str) -> None:
    """Before: 511 error shapes out of 4,000 passwords leaked a password, whole or in part.

    An unencoded '/' or '?' ends the host part early (an "invalid port" that
    showed the password, whose suppressed ValueError held it too), the rest of
    the password became an "unknown option" name or value, a '[' gave
    "Invalid IPv6 URL" beside the whole password.
    """
    leaks: dict[str, str] = {}
    for password in _passwords(300, seed=13):
        url = template.format(pw=password)
        try:
            if url.startswith("dsn:"):
                url = url[len("dsn:") :]
                queue = TaskQueue({"backend": "postgres", "dsn": url})
            else:
                queue = TaskQueue(url)
        except SitqError as error:
            text = shown_by(error)
        else:  # built: how the URL and the connection string show in errors later (ConnectionError, repr)
            backend = queue.backend
            text = repr(backend)
            dsn = backend.dsn if isinstance(backend, PostgresBackend) else None
            for given in (url, dsn):
                with contextlib.suppress(SitqError):  # as the backend's ConnectionErrors show it ("the given dsn")
                    text += f" {parse_backend_url(given or '')}"
        if _leaked(text):
            leaks.setdefault(text.splitlines()[0][:80], url)
    assert not leaks, "\n".join(f"{url}  ->  {shape}" for shape, url in leaks.items())


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        ("postgresql://app:Xy7/k?9Lm@db.example:5432/app", ["Xy7", "9Lm"]),  # the tester's: '/' then '?'
        ("postgresql://postgres:s3c?ret@127.0.0.1/db", ["s3c", "ret"]),
        ("postgresql://postgres:s3c/ret@127.0.0.1/db", ["s3c", "ret"]),
        ("postgresql://app:QQ@?&Q7ZZ@db.invalid:1/app", ["QQ", "Q7ZZ"]),  # the rest became an option name
        ("postgresql://app@db.invalid/app?password=Tr0ub&dor&3", ["Tr0ub", "dor", "'3'"]),  # unknown option '3'
        ("postgresql://app@db.invalid/app?password=Tr0ub&dor=3", ["Tr0ub", "dor", "'3'"]),
        ('postgresql://app:QQ@Z9"[\\/ZZ@db.invalid:1/app', ["QQ", "Z9", "ZZ"]),  # "Invalid IPv6 URL"
        ("postgresql://app:123/Tr0ub@db.invalid/app", ["123", "Tr0ub"]),  # read as a port and a database name
        ("postgresql://app:12?application_name=Tr0ub@db.invalid/app", ["12", "Tr0ub"]),
    ],
)
def test_a_malformed_password_shows_nowhere(url: str, pieces: list[str]) -> None:
    try:
        backend = sitq.connect(url).backend
    except SitqError as error:
        text = shown_by(error)
    else:  # built: how it shows in a ConnectionError later
        assert isinstance(backend, PostgresBackend) and backend.dsn is not None
        text = f"{parse_backend_url(url)} {parse_backend_url(backend.dsn)}"
    assert not [piece for piece in pieces if piece in text], text


def test_the_cli_does_not_print_a_password_holding_a_slash_and_a_question_mark() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["stats", "-b", "postgresql://app:Xy7/k?9Lm@db.example:5432/app"], stdout=io.StringIO()) == 2
    assert "sitq: error:" in err.getvalue()
    assert "Xy7" not in err.getvalue() and "9Lm" not in err.getvalue(), err.getvalue()


def test_the_invalid_port_error_keeps_no_parser_error_in_its_chain() -> None:
    """Its suppressed __context__ was ValueError("Port could not be cast to integer value as 's3c'")."""
    with pytest.raises(sitq.ConfigurationError) as info:
        parse_backend_url("postgresql://postgres:s3c?ret@127.0.0.1/db")
    assert info.value.__context__ is None and info.value.__cause__ is None


@pytest.mark.parametrize(
    ("dsn", "pieces"),
    [
        ("postgresql://u@h/db?password=Tr0ub&connect_timeout=dor", ["Tr0ub", "dor"]),
        ("postgresql://u@h/db?password=Tr0ub&sslmode=dor", ["Tr0ub", "dor"]),
        ("postgresql://u@h/db?password=Tr0ub&keepalives=1", ["Tr0ub", "keepalives"]),
        ("postgresql://u:123/Tr0ub@h/db?dbname=x", ["123", "Tr0ub"]),
        ("postgresql://u@h/db?password=Tr0ub&service=dor", ["Tr0ub", "dor"]),
    ],
)
def test_a_dsn_option_that_may_be_a_piece_of_its_password_is_not_echoed(dsn: str, pieces: list[str]) -> None:
    """A raw '&' in ?password= of a dsn made the rest an option, refused by name and value."""
    with pytest.raises(SitqError) as info:
        PostgresBackend(dsn)
    assert info.value.parameter == "dsn"
    assert not [piece for piece in pieces if piece in shown_by(info.value)], shown_by(info.value)
