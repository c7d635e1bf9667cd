"""What an error says about text given where a backend URL or name goes: no secret, the text as given, a hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sitq_test_postgres import DSN as SERVER
from sitq_test_postgres import drop_schema, require_postgres

import sitq
from sitq import ConfigurationError, SitqError, TaskQueue
from sitq_core.cli import main
from sitq_core.urls import masked

from sitq_test_helpers import shown_by

DSN = "host=127.0.0.1 dbname=app user=postgres password=S3cr3tPW"


@pytest.mark.parametrize(
    "given",
    [
        DSN,
        "host=h password='S3cr3t PW' dbname=app",  # quoted, with a space
        "host=h password='S3cr3t\\' PW",  # an escaped quote, and no closing one
        "  user=app   PASSWORD = S3cr3tPW sslmode=require",
    ],
)
def test_a_libpq_connection_string_is_refused_with_its_password_masked(given: str) -> None:
    """Before: "no backend named 'host=... password=s3cr3tpw'" (lower-cased, in the message and context.value)."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(given)
    shown = shown_by(info.value)
    assert "S3cr3t" not in shown and "s3cr3t" not in shown, shown
    assert "password=***" in info.value.message.lower().replace(" = ", "="), info.value.message
    assert info.value.parameter == "backend" and "***" in info.value.value


def test_a_libpq_connection_string_gets_a_hint_to_pass_it_as_the_postgres_dsn() -> None:
    with pytest.raises(ConfigurationError) as info:
        TaskQueue(DSN)
    message = info.value.message
    assert "host=127.0.0.1 dbname=app user=postgres password=***" in message  # as given: not lower-cased
    assert "{'backend': 'postgres', 'dsn': " in message and "postgresql://" in message, message


def test_the_dsn_form_the_hint_gives_works() -> None:
    """The hint's mapping reaches the server (the postgres backend's option is ``dsn``)."""
    require_postgres()
    parsed = sitq.parse_backend_url(SERVER)
    dsn = f"host={parsed.host} port={parsed.port or 5432} dbname={parsed.database} user={parsed.username}"
    try:
        with sitq.SyncTaskQueue({"backend": "postgres", "dsn": dsn, "schema": "text_errors_dsn_hint"}) as queue:
            task_id = queue.enqueue(len, "abc")
            assert queue.get_result(task_id, timeout=0) is None  # reached the server: the task is stored there
    finally:
        drop_schema("text_errors_dsn_hint")


def test_the_cli_masks_a_libpq_connection_string_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "-b", DSN]) != 0
    err = capsys.readouterr().err
    assert "S3cr3t" not in err and "s3cr3t" not in err, err
    assert "password=***" in err, err


@pytest.mark.parametrize(
    "given",
    [
        "postgresql//postgres:Zq9Secret@127.0.0.1/db",  # the ':' of '://' left out
        "postgresql:/postgres:Zq9Secret@127.0.0.1/db",
        "postgresql:postgres:Zq9Secret@127.0.0.1/db",
        "postgres//app:Zq9/Secret@db/app",  # and a '/' in the password
    ],
)
def test_a_url_missing_part_of_its_scheme_separator_does_not_show_its_password(given: str) -> None:
    with pytest.raises(SitqError) as info:
        sitq.connect(given)
    shown = shown_by(info.value)
    assert "Zq9" not in shown and "Secret" not in shown, shown
    assert "***@" in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql//postgres:Zq9Secret@127.0.0.1/db", "postgresql//postgres:***@127.0.0.1/db"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
        ("host=h dbname=d", "host=h dbname=d"),
        ("sqlite:tasks.db", "sqlite:tasks.db"),
        ("tasks.db", "tasks.db"),
    ],
)
def test_masking_text_that_is_not_a_url(text: str, shown: str) -> None:
    assert masked(text) == shown


@pytest.mark.parametrize("given", ["Redis", "MyStore", "Sqlit"])
def test_an_unknown_name_is_echoed_as_given(given: str) -> None:
    """Before: "no backend named 'redis'": the text the user typed, lower-cased."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(given)
    assert f"no backend named {given!r}" in info.value.message, info.value.message
    assert info.value.value == given


@pytest.mark.parametrize("given", [":memory:", " :memory: "])
def test_memory_where_a_url_goes_points_to_the_in_memory_url(given: str) -> None:
    """Before: "no backend named ':memory:'. Installed: ..." and nothing more."""
    with pytest.raises(ConfigurationError) as info:
        TaskQueue(given)
    message = info.value.message
    assert "'sqlite://'" in message and "'sqlite:///:memory:'" in message, message
    assert "SQLiteBackend(':memory:')" in message, message
    assert "sqlite:///:memory:" in message and "Did you mean" not in message


def test_the_in_memory_url_the_hint_gives_works() -> None:
    with sitq.SyncTaskQueue("sqlite:///:memory:") as queue:
        assert queue.backend.is_memory


@pytest.mark.parametrize(
    "given", ["tasks.db", "50%.db", "a%20b.db", "what?.db", "~/jobs/tasks.db", "/tmp/abs.sqlite3", "a b.db"]
)
def test_a_file_path_hint_gives_a_url_that_names_that_file(given: str, tmp_path: Path) -> None:
    """The hint's URL must open the file given: '%20' or '?' written as they are would name another one."""
    with pytest.raises(ConfigurationError) as info:
        TaskQueue(given)
    (url,) = re.findall(r"'(sqlite:///[^']*)'", info.value.message)
    backend = sitq.resolve_backend(url)
    assert backend.path == sitq.SQLiteBackend(given).path, (url, backend.path)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("sqlite+foo:///a.db", ["sqlite", "sqlite+aiosqlite"]),
        ("sqlite+pysqlite:///a.db", ["sqlite", "sqlite+aiosqlite"]),
        ("postgresql+psycopg://u:Zq9Secret@h/db", ["postgres", "postgresql", "postgres+asyncpg", "postgresql+asyncpg"]),
    ],
)
def test_an_unknown_driver_suffix_is_refused_naming_the_accepted_schemes(url: str, accepted: list[str]) -> None:
    """Before: 'sqlite+foo:///a.db' opened a.db as if the suffix meant something."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(url)
    assert info.value.parameter == "url" and info.value.valid_options == accepted
    message = info.value.message
    assert repr(url.split("://")[0].split("+")[1]) in message and ", ".join(accepted) in message, message
    assert "Zq9Secret" not in shown_by(info.value)


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///{tmp}/a.db", "sqlite:///{tmp}/a.db", "SQLite+AIOSQLite:///{tmp}/b.db"]
)
def test_the_documented_driver_suffixes_still_work(url: str, tmp_path: Path) -> None:
    with sitq.SyncTaskQueue(url.format(tmp=tmp_path)) as queue:
        assert type(queue.backend).__name__ == "SQLiteBackend"


@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "postgres+asyncpg", "postgresql", "postgres"])
def test_the_postgres_driver_suffixes_still_resolve(scheme: str) -> None:
    backend = sitq.resolve_backend(f"{scheme}://postgres@127.0.0.1:5432/test")
    assert type(backend).__name__ == "PostgresBackend"
