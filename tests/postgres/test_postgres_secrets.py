"""Errors about a postgres URL, dsn or option never show a password, nor a piece of one (no server needed)."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable
from typing import Any

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


_URL = "postgresql://postgres:s3cret@127.0.0.1/db"


@pytest.mark.parametrize(
    "build",
    [
        lambda: sitq.connect("postgresql://127.0.0.1/db", dsn=_URL),
        lambda: TaskQueue({"backend": "postgresql://127.0.0.1/db", "dsn": _URL}),
        lambda: TaskQueue(f"postgresql://127.0.0.1/db?dsn={_URL}"),
        lambda: TaskQueue("postgresql://127.0.0.1/db?dsn=postgresql%3A%2F%2Fpostgres%3As3cret%40127.0.0.1%2Fdb"),
    ],
    ids=["keyword", "mapping", "query", "query-encoded"],
)
def test_a_dsn_given_beside_a_url_is_not_echoed(build: Callable[[], Any]) -> None:
    with pytest.raises(sitq.ConfigurationError) as info:
        build()
    assert info.value.parameter in ("dsn", "url")
    assert "s3cret" not in shown_by(info.value), shown_by(info.value)


def test_a_dsn_beside_the_url_in_sitq_backend_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_BACKEND", f"postgresql://127.0.0.1/db?dsn={_URL}")
    with pytest.raises(sitq.ConfigurationError) as info:
        sitq.connect()
    assert "SITQ_BACKEND" in str(info.value) and "s3cret" not in shown_by(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: sitq.connect("postgres", dsn="postgresql://postgres@127.0.0.1/db", password="s3cret"),
        lambda: TaskQueue({"backend": "postgres", "password": "s3cret"}),
        lambda: TaskQueue({"backend": "postgres", "sslpassword": "s3cret"}),
        lambda: TaskQueue({"backend": "postgres", "Passwd": "s3cret"}),
        lambda: TaskQueue({"backend": "postgres", "pasword": "s3cret"}),  # a typo is still a password
        lambda: TaskQueue({"backend": "postgres", "api_token": "s3cret"}),
        lambda: TaskQueue({"backend": "postgres", "dsn": _URL.encode()}),  # bytes: echoed as the bad value
        lambda: TaskQueue({"backend": "postgres", "dsn": bytearray(_URL.encode())}),
    ],
    ids=["keyword", "mapping", "sslpassword", "Passwd", "typo", "token", "bytes-dsn", "bytearray-dsn"],
)
def test_a_secret_option_is_refused_without_its_value(build: Callable[[], Any]) -> None:
    with pytest.raises(SitqError) as info:
        build()
    assert "s3cret" not in shown_by(info.value), shown_by(info.value)
    assert info.value.context.get("value") is not None  # still says that a value was given, masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1/db?pasword=s3cret",  # a typo of password: an unknown option
        "postgresql://postgres@127.0.0.1/db?api_key=s3cret",
        "postgresql://postgres@127.0.0.1/db?password=x&max_connections=s3cret",  # maybe a piece of the password
    ],
)
def test_a_secret_in_a_url_option_is_refused_without_its_value(url: str) -> None:
    with pytest.raises(SitqError) as info:
        sitq.connect(url)
    assert "s3cret" not in shown_by(info.value), shown_by(info.value)


def test_an_unknown_option_of_a_url_without_secrets_is_still_named() -> None:
    """What is hidden is what could be a piece of a password; a plain typo keeps its clear error."""
    with pytest.raises(sitq.ConfigurationError) as info:
        sitq.connect("postgresql://postgres:s3cret@127.0.0.1/db?shema=jobs")
    assert info.value.parameter == "shema" and info.value.value == "jobs"
    assert "s3cret" not in shown_by(info.value)


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


@pytest.mark.parametrize(
    ("pair", "key", "kind"),
    [
        ("keepalives=1", "keepalives", "not supported by asyncpg"),
        ("options='-c x=1'", "options", "not supported by asyncpg"),
        ("statement_timeout=5", "statement_timeout", "unknown connection parameter"),
        ("sslmode=requir", "sslmode", "must be one of"),
    ],
)
@pytest.mark.parametrize(
    "build",
    [PostgresBackend, lambda dsn: sitq.connect({"backend": "postgres", "dsn": dsn})],
    ids=["backend", "mapping"],
)
def test_a_keyword_dsn_names_a_refused_parameter_after_its_password(
    pair: str, key: str, kind: str, build: Callable[[str], Any]
) -> None:
    """A key=value string is read without ambiguity: a pair after password= is no piece of it.

    It got the URL rule (a nameless error advising to percent-encode '&' in
    the password, which libpq takes literally in this form).
    """
    with pytest.raises(sitq.ConfigurationError) as info:
        build(f"password=S3CRET host=127.0.0.1 dbname=app {pair}")
    assert info.value.parameter == key and kind in info.value.message, info.value.message
    assert "S3CRET" not in shown_by(info.value) and "percent-encode" not in info.value.message


_BARE = "postgresql://postgres@127.0.0.1/db"


@pytest.mark.parametrize(
    ("option", "kind"),
    [
        ({"sslmode": "bogus"}, "must be one of"),
        ({"keepalives": "1"}, "not supported by asyncpg"),
        ({"service": "no-such-service"}, "libpq service"),
    ],
    ids=["choice", "unsupported", "service"],
)
@pytest.mark.parametrize("password_first", [True, False], ids=["password-first", "password-last"])
@pytest.mark.parametrize(
    "build",
    [lambda options: sitq.connect(_BARE, **options), lambda options: sitq.connect({"backend": _BARE, **options})],
    ids=["keywords", "mapping"],
)
def test_an_option_given_beside_a_password_is_named_whatever_the_order(
    build: Callable[[dict[str, str]], Any], password_first: bool, option: dict[str, str], kind: str
) -> None:
    """Keywords (or mapping keys) after password= got the nameless "may be a piece of the password" error.

    Options given one by one are never pieces of a password: only those after
    a secret option inside a URL's query string may be.
    """
    password = {"password": "hunter2"}
    options = {**password, **option} if password_first else {**option, **password}
    with pytest.raises(sitq.ConfigurationError) as info:
        build(options)
    (key,) = option
    assert info.value.parameter == key and kind in info.value.message, info.value.message
    assert "hunter2" not in shown_by(info.value) and "percent-encode" not in info.value.message
