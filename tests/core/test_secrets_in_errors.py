"""Errors of the config and URL layer show no secret: an option named like one is refused without its value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sitq
from sitq import SitqError, SQLiteBackend, TaskQueue, ValidationError
from sitq_core.textoptions import text_options_converted
from sitq_core.urls import looks_secret, redacted

from sitq_test_helpers import shown_by


@pytest.mark.parametrize(
    "build",
    [
        lambda tmp: TaskQueue(f"sqlite:///{tmp}/x.db?password=s3cret"),
        lambda tmp: TaskQueue(f"sqlite:///{tmp}/x.db?pasword=s3cret"),  # a typo of it
        lambda tmp: TaskQueue(f"sqlite:///{tmp}/x.db?API_KEY=s3cret"),
        lambda tmp: TaskQueue({"backend": "sqlite", "path": f"{tmp}/x.db", "password": "s3cret"}),
        lambda tmp: sitq.connect("sqlite", path=f"{tmp}/x.db", auth_token="s3cret"),
        lambda tmp: TaskQueue({"backend": "dictstore", "password": "s3cret"}),  # Backend.from_config's default
        lambda tmp: TaskQueue({"backend": "dictstore", "secret": b"s3cret"}),
        lambda tmp: TaskQueue({"backend": "dictstore", "upstream": "postgresql://u:s3cret@h/db"}),  # a URL anywhere
        lambda tmp: TaskQueue({"backend": SQLiteBackend(":memory:"), "password": "s3cret"}),  # a built backend
        lambda tmp: TaskQueue(b"postgresql://u:s3cret@h/db"),  # bytes where a URL goes
        lambda tmp: TaskQueue({"backend": b"postgresql://u:s3cret@h/db"}),
        lambda tmp: TaskQueue("postgres:s3cret@db/app"),  # a URL without its '//'
    ],
    ids=[
        "query",
        "query-typo",
        "query-upper",
        "mapping",
        "keyword",
        "default-from-config",
        "bytes",
        "url-value",
        "built",
        "bytes-url",
        "bytes-url-in-mapping",
        "no-slashes",
    ],
)
def test_a_secret_is_refused_without_being_shown(build: Callable[[Path], Any], tmp_path: Path) -> None:
    """Before: "unknown option 'password' ... (context: parameter='password', value='s3cret')"."""
    with pytest.raises(SitqError) as info:
        build(tmp_path)
    assert "s3cret" not in shown_by(info.value), shown_by(info.value)


def test_a_secret_option_still_names_itself_and_says_a_value_was_given(tmp_path: Path) -> None:
    with pytest.raises(sitq.ConfigurationError) as info:
        TaskQueue(f"sqlite:///{tmp_path}/x.db?password=s3cret")
    assert info.value.parameter == "password" and info.value.value == "***"
    assert "unknown option 'password'" in str(info.value)


def test_a_secret_in_sitq_backend_is_not_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_BACKEND", f"sqlite:///{tmp_path}/x.db?password=s3cret")
    with pytest.raises(sitq.ConfigurationError) as info:
        sitq.connect()
    assert "SITQ_BACKEND" in str(info.value) and "s3cret" not in shown_by(info.value)


class _Typed:
    """A backend-like class whose secret-looking option is an int."""

    name = "typed"

    def __init__(self, api_key: int = 0, retries: int = 0) -> None:
        self.api_key = api_key
        self.retries = retries


def test_a_secret_that_does_not_convert_is_refused_without_its_value() -> None:
    with pytest.raises(ValidationError) as info:
        text_options_converted(_Typed, {"api_key": "s3cret"})
    assert info.value.parameter == "api_key" and "an integer" in str(info.value)
    assert "s3cret" not in shown_by(info.value), shown_by(info.value)
    with pytest.raises(ValidationError) as plain:  # any other option keeps its value, and the reason
        text_options_converted(_Typed, {"retries": "many"})
    assert plain.value.value == "many" and isinstance(plain.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "name", ["password", "sslpassword", "Passwd", "pwd", "pasword", "passwrod", "client_secret", "api_key", "dsn"]
)
def test_secret_looking_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name", ["path", "schema", "synchronous", "busy_timeout", "max_connections", "host", "port", "sslmode"]
)
def test_ordinary_names_keep_their_values(name: str) -> None:
    assert not looks_secret(name) and redacted(name, "x") == "x"


def test_a_dsn_shows_as_a_masked_url_or_not_at_all() -> None:
    assert redacted("dsn", "postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"
    assert redacted("dsn", "host=h password=s3cret") == "***"
    assert redacted("dsn", b"postgresql://u:s3cret@h/db") == "***"
