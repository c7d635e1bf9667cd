"""Every documented way to name the server: libpq key=value strings, libpq query parameters, odd database names."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
import sitq_postgres.keywords
from sitq_postgres.keywords import is_keyword_dsn, keyword_dsn_to_url

import sitq
import sitq_core.urls
from sitq import ConfigurationError, PostgresBackend, TaskQueue, ValidationError
from sitq_core.urls import parse_backend_url

import sitq_test_tasks as tasks
from sitq_test_helpers import strict_urlsplit


def test_pairs_become_query_parameters() -> None:
    url = keyword_dsn_to_url("host=db1,db2 port = 5432,5433 dbname=app user=app sslmode=require")
    assert url == "postgresql://?host=db1%2Cdb2&port=5432%2C5433&dbname=app&user=app&sslmode=require"


def test_quoting_follows_libpq() -> None:
    url = keyword_dsn_to_url(r"password='it\'s a secret' application_name=a\ b host=/var/run/postgresql")
    assert urlsplit(url).query == "password=it%27s%20a%20secret&application_name=a%20b&host=%2Fvar%2Frun%2Fpostgresql"


@pytest.mark.parametrize("dsn", ["postgresql://u@h/db?sslmode=require", "postgres://h/db"])
def test_urls_are_left_alone(dsn: str) -> None:
    assert not is_keyword_dsn(dsn)
    assert PostgresBackend(dsn).dsn == dsn


@pytest.mark.parametrize(
    ("dsn", "detail"),
    [
        ("host=x password=ab cd", "a word without '=' after password=..."),
        ("host='x", "unterminated quoted value of 'host'"),
        ("=x", "a word without '=' at the start"),
    ],
)
def test_a_malformed_string_names_the_dsn_and_hides_its_values(dsn: str, detail: str) -> None:
    with pytest.raises(ValidationError) as info:
        PostgresBackend(dsn)
    assert info.value.parameter == "dsn" and detail in str(info.value)
    assert "ab cd" not in str(info.value) and "cd" not in info.value.message.split("after")[0]


@pytest.mark.asyncio
async def test_a_keyword_dsn_connects_and_runs_tasks(pg_dsn: str, pg_schema: str) -> None:
    parts = urlsplit(pg_dsn)
    dsn = f"host={parts.hostname} port={parts.port or 5432} user={parts.username} dbname='{parts.path.lstrip('/')}'"
    async with TaskQueue(PostgresBackend(dsn, schema=pg_schema)) as queue:
        task_id = await queue.enqueue(tasks.add, 2, 3)
        assert (await queue.counts())["queued"] == 1
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.function_name.endswith("add")


@pytest.mark.parametrize("name", ["jobs#1", "a?b", "100%", "with space"])
def test_a_database_name_keeps_its_characters_through_the_url(name: str) -> None:
    from urllib.parse import quote

    url = f"postgresql://app@db:5432/{quote(name, safe='')}?schema=s"
    backend = sitq.connect(url).backend
    assert isinstance(backend, PostgresBackend) and backend.dsn is not None
    assert parse_backend_url(backend.dsn).database == name


def test_libpq_parameters_in_a_url_go_to_the_driver() -> None:
    backend = sitq.connect("postgresql:///app?host=/var/run/postgresql&port=5433&user=u&dbname=app&schema=jobs").backend
    assert isinstance(backend, PostgresBackend) and backend.schema == "jobs"
    assert backend.dsn == "postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql&port=5433&user=u&dbname=app"


@pytest.mark.parametrize("option", ["schema", "max_connections"])
def test_sitq_options_inside_a_dsn_are_refused_naming_them(option: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sitq.connect({"backend": "postgres", "dsn": f"postgresql://u@h/db?{option}=3"})
    assert info.value.parameter == option and "beside the dsn" in str(info.value)


@pytest.mark.asyncio
async def test_the_socket_directory_form_connects(pg_dsn: str, pg_schema: str) -> None:
    parts = urlsplit(pg_dsn)
    url = f"postgresql:///{parts.path.lstrip('/')}?host={parts.hostname}&user={parts.username}&schema={pg_schema}"
    async with sitq.connect(url) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
        assert (await queue.get_task(task_id)) is not None


def test_libpq_connect_timeout_is_the_backends_own() -> None:
    keyword = PostgresBackend("host=db user=u dbname=app connect_timeout=3")
    assert (keyword.dsn, keyword.connect_timeout) == ("postgresql://?host=db&user=u&dbname=app", 3.0)
    url = PostgresBackend("postgresql:///app?host=/tmp&connect_timeout=4")
    assert (url.dsn, url.connect_timeout) == ("postgresql:///app?host=%2Ftmp", 4.0)
    explicit = PostgresBackend("host=db connect_timeout=3", connect_timeout=7)
    assert explicit.connect_timeout == 7.0  # the argument wins over the dsn
    assert PostgresBackend("host=db", connect_timeout=Decimal("2.5")).connect_timeout == 2.5  # any real number


@pytest.mark.parametrize("default", [10, 10.0, Decimal(10), timedelta(seconds=10)])
def test_the_default_connect_timeout_in_any_form_leaves_the_dsns_own(default: Any) -> None:
    """10 s, the default, counts as not given however it is written: a timedelta of 10 s overrode the dsn's 5."""
    assert PostgresBackend("host=db connect_timeout=5", connect_timeout=default).connect_timeout == 5.0
    assert PostgresBackend("postgresql://db/app?connect_timeout=5", connect_timeout=default).connect_timeout == 5.0
    given = PostgresBackend("host=db connect_timeout=5", connect_timeout=timedelta(seconds=7))
    assert given.connect_timeout == 7.0  # another value wins over the dsn, as a number does


def test_a_connect_timeout_that_is_not_a_number_is_refused_by_name_beside_a_dsns_own() -> None:
    for bad in (Decimal("sNaN"), "10", True):
        with pytest.raises(ValidationError) as info:
            PostgresBackend("host=db connect_timeout=5", connect_timeout=bad)
        assert info.value.parameter == "connect_timeout", bad


@pytest.mark.parametrize("dsn", ["host=db keepalives=1", "postgresql://u@db/app?options=-c%20x%3D1"])
def test_libpq_parameters_asyncpg_cannot_use_are_refused_by_name(dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend(dsn)
    assert info.value.parameter in {"keepalives", "options"} and "not supported by asyncpg" in str(info.value)


@pytest.mark.parametrize("query", ["keepalives=1", "options=-c%20x%3D1", "hostaddr=10.0.0.1"])
def test_libpq_parameters_asyncpg_cannot_use_are_refused_by_name_in_a_backend_url_too(query: str) -> None:
    """sitq.connect(URL) said "unknown option 'keepalives' for backend 'postgres'", PostgresBackend(URL) the cause."""
    key = query.partition("=")[0]
    for build in (
        lambda: sitq.connect(f"postgresql://u@db/app?{query}"),
        lambda: PostgresBackend(f"postgresql://u@db/app?{query}"),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.parameter == key
        assert f"libpq parameter {key!r} is not supported by asyncpg" in info.value.message


@pytest.mark.parametrize(
    ("dsn", "key"),
    [
        ("postgresql://postgres@127.0.0.1:5432/x?work_mem=77MB&search_path=evil", "work_mem"),
        ("host=127.0.0.1 dbname=x user=postgres bogus=1", "bogus"),
        ("host=127.0.0.1 dbname=x user=postgres statement_timeout=1", "statement_timeout"),
    ],
)
def test_an_unknown_parameter_in_a_dsn_is_refused_when_the_backend_is_made(dsn: str, key: str) -> None:
    """Before: asyncpg sent it to the server as a setting (work_mem, statement_timeout), or failed at the first call."""
    for build in (
        lambda: PostgresBackend(dsn, schema="misc"),
        lambda: TaskQueue({"backend": "postgres", "dsn": dsn}),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.parameter == key and "unknown connection parameter" in info.value.message


@pytest.mark.parametrize(
    "given",
    [
        lambda url: sitq.connect(url, dsn=url),
        lambda url: sitq.connect({"backend": url, "dsn": url}),
        lambda url: sitq.connect(f"{url}?dsn={url}"),
    ],
    ids=["keyword", "mapping", "query"],
)
def test_a_dsn_beside_a_postgres_url_is_refused_in_words_that_fit_how_it_was_given(
    given: Any, request: pytest.FixtureRequest
) -> None:
    """'drop ?dsn=' was said for a dsn given as a keyword or mapping key too, where no ?dsn= was written."""
    with pytest.raises(ConfigurationError) as info:
        given("postgresql://u@db/app")
    assert info.value.parameter == "dsn"
    assert "either as the URL or as dsn" in info.value.message, info.value.message
    if request.node.callspec.id != "query":
        assert "?dsn=" not in info.value.message


@pytest.mark.parametrize("dsn", ["host=db connect_timeout=0", "postgresql://u@db/app?connect_timeout=-1"])
def test_libpq_no_limit_connect_timeout_becomes_the_longest_allowed(dsn: str) -> None:
    assert PostgresBackend(dsn).connect_timeout == 86_400.0


def test_connect_timeout_zero_means_the_same_in_the_backend_url_and_as_an_argument() -> None:
    # the URL a user copies from DATABASE_URL behaves as it does given as dsn= (libpq: 0 is no limit)
    url = "postgresql://u@db/app?connect_timeout=0"
    assert sitq.connect(url).backend.connect_timeout == 86_400.0  # type: ignore[attr-defined]
    assert sitq.connect({"backend": "postgres", "dsn": url}).backend.connect_timeout == 86_400.0  # type: ignore[attr-defined]
    assert PostgresBackend(connect_timeout=0).connect_timeout == 86_400.0
    with pytest.raises(ValidationError):
        PostgresBackend(connect_timeout=-1)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "soon"])
def test_a_dsn_connect_timeout_that_is_not_a_finite_number_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        PostgresBackend(f"host=db connect_timeout={value}")
    assert info.value.parameter == "connect_timeout"


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("postgresql://postgres@127.0.0.1:5432/app?dbname=other", "dbname"),
        ("postgresql://postgres@127.0.0.1:5432/app?port=5999", "port"),
        ("postgresql://postgres@127.0.0.1/app?host=db.example", "host"),
        ("postgresql://postgres@127.0.0.1/app?user=admin", "user"),
        ("postgresql://postgres:s3cret@127.0.0.1/app?password=other", "password"),
    ],
)
def test_a_part_given_twice_in_a_url_is_refused(url: str, parameter: str) -> None:
    """libpq lets ?dbname= win over the path, asyncpg the other way round: neither is guessed."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(url)
    assert info.value.parameter == parameter
    assert "s3cret" not in str(info.value) and "other" not in str(info.value) if parameter == "password" else True


def test_a_part_given_only_as_a_query_parameter_is_kept() -> None:
    backend = sitq.connect("postgresql://postgres@127.0.0.1?dbname=app&port=5433").backend
    assert isinstance(backend, PostgresBackend)
    # the port moves onto the host: asyncpg ignores ?port= once the URL names a host
    assert backend.dsn == "postgresql://postgres@127.0.0.1:5433?dbname=app"


@pytest.mark.parametrize(
    "source",
    [
        "postgresql://postgres@127.0.0.1/app?sslmode=requir",
        "postgresql://postgres@127.0.0.1/app?target_session_attrs=primaryy",
        {"backend": "postgres", "dsn": "host=127.0.0.1 dbname=app sslmode=nope"},
    ],
)
def test_a_libpq_choice_out_of_its_set_is_a_configuration_error(source: Any) -> None:
    """Before: a sitq.ConnectionError at the first call, which code retrying on ConnectionError retried for good."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(source)
    assert info.value.parameter in ("sslmode", "target_session_attrs")
    assert info.value.valid_options is not None and str(info.value.value) not in info.value.valid_options


@pytest.mark.parametrize("build", ["backend", "url", "mapping"])
def test_a_password_with_an_unescaped_slash_is_refused_without_repeating_it(build: str) -> None:
    """A raw ValueError (or the cause of the clear error) held the password: 'invalid literal ... S3CRETPW'."""
    import traceback

    import sitq
    from sitq_postgres import PostgresBackend

    dsn = "postgresql://u:S3CRETPW/x@127.0.0.1/db"
    with pytest.raises(sitq.ConfigurationError if build == "url" else sitq.ValidationError) as info:
        if build == "backend":
            PostgresBackend(dsn)
        elif build == "url":
            sitq.connect(dsn)
        else:
            sitq.connect({"backend": "postgres", "dsn": dsn})
    assert "S3CRETPW" not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize("form", ["postgresql://?service={name}&sslmode=prefer", "service={name} dbname=x"])
def test_a_service_the_service_file_does_not_define_is_refused_not_replaced_by_the_defaults(
    form: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg ignores an unknown service and connects with the PG* defaults: another database, silently."""
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text("[jobs]\nhost=db\ndbname=jobs\n")
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    PostgresBackend(form.format(name="jobs"))  # defined: fine (nothing connects yet)
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend(form.format(name="jobz"))
    assert info.value.parameter == "service" and "is not defined in" in str(info.value)
    assert str(service_file) in str(info.value)
    with pytest.raises(ConfigurationError):
        sitq.connect("postgresql://?service=jobz")  # the same from a backend URL


def test_a_service_without_any_service_file_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No home directory (HOME unset, no passwd entry): Path.home() raised RuntimeError out of the constructor."""
    from pathlib import Path

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("PGSERVICEFILE", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend("postgresql://?service=jobs")
    assert info.value.parameter == "service" and "no service file" in str(info.value)


def _closed_port() -> int:
    """A local TCP port nothing listens on (just released by the OS)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://postgres@127.0.0.1/db?port=5433", "postgresql://postgres@127.0.0.1:5433/db"),
        (
            "postgresql://postgres@127.0.0.1,127.0.0.2/db?port=5433",
            "postgresql://postgres@127.0.0.1:5433,127.0.0.2:5433/db",
        ),
        ("postgresql://u@h1,h2/db?port=5433,5434", "postgresql://u@h1:5433,h2:5434/db"),
        ("postgresql://u@h1:5433,h2/db?port=5433", "postgresql://u@h1:5433,h2:5433/db"),
        ("postgresql://u@[::1]/db?port=5433", "postgresql://u@[::1]:5433/db"),
        ("postgresql://h?port=5433", "postgresql://h:5433"),
        (
            "postgresql://u@h/db?sslmode=require&port=5433&application_name=a%20b",
            "postgresql://u@h:5433/db?sslmode=require&application_name=a%20b",
        ),
    ],
)
def test_a_query_port_moves_onto_the_hosts_the_url_names_without_one(dsn: str, expected: str) -> None:
    """libpq lets ?port= apply to the URL's hosts; asyncpg ignored it once the URL names a host (5432 instead)."""
    assert PostgresBackend(dsn).dsn == expected
    assert sitq.connect({"backend": "postgres", "dsn": dsn}).backend.dsn == expected  # type: ignore[attr-defined]


def test_a_query_port_in_a_backend_url_reaches_the_driver_too() -> None:
    backend = sitq.connect("postgresql://postgres@127.0.0.1,127.0.0.2/db?port=5433&schema=jobs").backend
    assert isinstance(backend, PostgresBackend) and backend.schema == "jobs"
    assert backend.dsn == "postgresql://postgres@127.0.0.1:5433,127.0.0.2:5433/db"


def test_a_query_port_without_hosts_in_the_url_stays_a_query_parameter() -> None:
    """asyncpg reads ?port= itself when the hosts come from ?host=, PGHOST or its defaults."""
    assert PostgresBackend("postgresql:///db?port=5433").dsn == "postgresql:///db?port=5433"
    assert PostgresBackend("host=a,b port=5433,5434").dsn == "postgresql://?host=a%2Cb&port=5433%2C5434"


@pytest.mark.asyncio
async def test_a_query_port_is_the_port_connected_to(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: postgresql://user@host/db?port=N connected to PGPORT or 5432, whatever N was."""
    parts = urlsplit(pg_dsn)
    base = f"postgresql://{parts.username}@{parts.hostname}{parts.path}"
    closed = _closed_port()
    with pytest.raises(sitq.ConnectionError):
        async with TaskQueue(PostgresBackend(f"{base}?port={closed}", schema=pg_schema, connect_timeout=5)) as queue:
            await queue.counts()
    monkeypatch.setenv("PGPORT", str(closed))  # the default asyncpg would use for a host without a port
    async with TaskQueue(PostgresBackend(f"{base}?port={parts.port or 5432}", schema=pg_schema)) as queue:
        assert (await queue.counts())["queued"] == 0


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u@h:5432/db?port=5433",
        "postgresql://u@h1,h2:5432/db?port=5433",
        "postgresql://u@h1:5432,h2:5433/db?port=5432",
        "postgresql://u@h:5432/db?port=",
    ],
)
def test_a_port_given_in_the_url_and_as_a_query_parameter_differently_is_refused(dsn: str) -> None:
    """libpq lets the query win, asyncpg the URL's own port: neither is guessed."""
    for build in (lambda: PostgresBackend(dsn), lambda: sitq.connect(dsn)):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.parameter == "port"


def test_the_same_port_in_the_url_and_as_a_query_parameter_is_accepted() -> None:
    assert PostgresBackend("postgresql://u@h:5432/db?port=5432").dsn == "postgresql://u@h:5432/db"


@pytest.mark.parametrize(
    ("dsn", "detail"),
    [
        ("postgresql://postgres@127.0.0.1/db?port=not-a-number", "port"),
        ("postgresql://postgres@127.0.0.1,127.0.0.2/db?port=5433,abc", "port"),
        ("host=127.0.0.1 port=abc dbname=x user=postgres", "port"),
        ("postgresql://?host=127.0.0.1&port=abc&dbname=x&user=postgres", "port"),
        ("host=127.0.0.1 port=5432,abc dbname=x user=postgres", "port"),
        ("host=a,b port=5432, dbname=x", "port"),
        ("host=127.0.0.1 port=70000 dbname=x", "port"),
        ("host=127.0.0.1 port=0 dbname=x", "port"),
        ("host=127.0.0.1 port=-1 dbname=x", "port"),
        ("host=a,b port=5432,65536 dbname=x", "port"),
        ("postgresql:///db?port=99999", "port"),
        ("postgresql://u@127.0.0.1:70000/db", "port"),
        ("postgresql://u@127.0.0.1:0/db", "port"),
        ("host=a,b port=1,2,3", "could not match 3 port numbers to 2 hosts"),
        ("postgresql://u@h1,h2/db?port=1,2,3", "could not match 3 port numbers to 2 hosts"),
    ],
)
def test_a_port_that_is_not_a_port_number_is_refused_when_the_backend_is_made(dsn: str, detail: str) -> None:
    """Before: accepted, then a raw ValueError ('invalid literal for int()') or OverflowError at the first call."""
    for build in (lambda: PostgresBackend(dsn), lambda: sitq.connect({"backend": "postgres", "dsn": dsn})):
        with pytest.raises(ValidationError) as info:
            build()
        assert info.value.parameter == "dsn" and detail in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@127.0.0.1:70000/app", "postgresql://u@127.0.0.1:0/app", "postgresql://u@h1,h2:65536/app"],
)
def test_a_port_out_of_range_is_the_same_error_by_every_path(url: str) -> None:
    """sitq.connect(URL) raised ConfigurationError(parameter='url') for 70000, the other paths ValidationError."""
    for build in (
        lambda: sitq.connect(url),
        lambda: PostgresBackend(url),
        lambda: sitq.connect({"backend": "postgres", "dsn": url}),
    ):
        with pytest.raises(ValidationError) as info:
            build()
        assert info.value.parameter == "dsn" and "a port is a number from 1 to 65535" in info.value.message


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1/db?port=abc", "postgresql://?host=127.0.0.1&port=abc&dbname=x&user=postgres"],
)
def test_a_backend_url_with_a_port_that_is_not_a_number_is_refused_when_connecting(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        sitq.connect(url)
    assert info.value.parameter == "dsn" and "port" in str(info.value)


def test_the_worker_command_reports_a_port_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a traceback ending in asyncpg's ValueError, exit status 1."""
    from sitq_core.cli import main

    assert main(["worker", "-b", "postgresql://?host=127.0.0.1&port=abc&dbname=x&user=postgres"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sitq: error: ") and "port" in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("query", "key"),
    [("dbname=other", "dbname"), ("user=bob", "user"), ("host=db2", "host"), ("password=p2", "password")],
)
@pytest.mark.parametrize("form", ["backend", "config"])
def test_a_part_given_twice_differently_in_a_dsn_is_refused_as_in_a_url(query: str, key: str, form: str) -> None:
    """PostgresBackend(dsn) and {"dsn": ...} took the URL's own part (asyncpg) where libpq takes the query's."""
    dsn = f"postgresql://app:p1@db1:5432/app?{query}"
    with pytest.raises(ConfigurationError) as caught:
        if form == "backend":
            PostgresBackend(dsn)
        else:
            sitq.connect({"backend": "postgres", "dsn": dsn})
    assert caught.value.parameter == key and "twice, differently" in str(caught.value)
    if key == "password":
        assert "p1" not in str(caught.value) and "p2" not in str(caught.value)


@pytest.mark.parametrize("how", ["keyword", "query"])
def test_a_password_given_in_the_url_and_again_is_named_for_both_ways_and_masked(how: str) -> None:
    """A keyword password beside a URL's was told as '?password=' (not what the user wrote) with value=None."""
    url = "postgresql://u:p%40ss@127.0.0.1/app"
    with pytest.raises(ConfigurationError) as caught:
        if how == "keyword":
            sitq.connect(url, password="zz")
        else:
            sitq.connect(url + "?password=zz")
    message = str(caught.value)
    assert "a keyword" in message and "?password=" in message and caught.value.value == "***"
    assert "p@ss" not in message and "zz" not in message


@pytest.mark.parametrize("query", ["dbname=app", "user=app", "host=db1", "host=%5B::1%5D"])
def test_the_same_part_given_twice_alike_is_accepted(query: str) -> None:
    host = "[::1]" if "::1" in query else "db1"
    PostgresBackend(f"postgresql://app@{host}/app?{query}")


def test_an_unclosed_ipv6_bracket_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresBackend("postgresql://[::1/db")
    assert caught.value.parameter == "dsn"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://%2Fvar%2Frun%2Fpostgresql/db?host=/var/run/postgresql",  # the same socket, encoded
        "postgresql://u@LOCALHOST/db?host=localhost",  # host names ignore case
        "postgresql://u:a+b@h/db?password=a+b",  # '+' in both places
    ],
)
def test_the_same_part_written_two_ways_is_not_taken_for_two(dsn: str) -> None:
    PostgresBackend(dsn)


def test_a_dsn_with_spaces_around_it_keeps_its_shape_when_its_port_moves() -> None:
    """The netloc was cut at the wrong offset: ' postgresql://u@h/db?port=5432' became 'postgresql:/u@h:54321/db'."""
    assert PostgresBackend(" postgresql://u@h/db?port=5433\n").dsn == "postgresql://u@h:5433/db"


@pytest.mark.parametrize("dsn", ["postgresql://u:a\tb@h/db?port=5433", "postgresql://u@h/d\nb"])
def test_a_dsn_with_a_tab_or_line_break_inside_is_refused(dsn: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresBackend(dsn)
    assert caught.value.parameter == "dsn" and "tabs or line breaks" in str(caught.value)


def test_an_ipv6_host_after_the_first_passes_where_urlsplit_refuses_data_before_a_bracket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python builds with the CVE-2024-11168 fix refused 'h1,[::1]:5433' in a dsn as "Invalid IPv6 URL"."""
    monkeypatch.setattr(sitq_core.urls, "urlsplit", strict_urlsplit)
    monkeypatch.setattr(sitq_postgres.keywords, "urlsplit", strict_urlsplit, raising=False)
    dsn = "postgresql://u@primary:5432,[::1]:5433,standby/app?connect_timeout=3"
    backend = PostgresBackend(dsn)
    assert backend.dsn == "postgresql://u@primary:5432,[::1]:5433,standby/app"
    url_backend = sitq.connect("postgresql://u@primary:5432,[::1]:5433/app?schema=jobs").backend
    assert isinstance(url_backend, PostgresBackend) and url_backend.dsn == "postgresql://u@primary:5432,[::1]:5433/app"


async def _application_names(backend: PostgresBackend) -> set[str]:
    """The application_name of the backend's pooled connection and of its LISTEN connection."""
    async with TaskQueue(backend) as queue:
        await queue.counts()
        pool = await backend._pool()
        async with pool.acquire() as conn:
            pooled = await conn.fetchval("SHOW application_name")
        listener = await backend._open_listener()
        try:
            listening = await listener.fetchval("SHOW application_name")
        finally:
            await listener.close()
    return {pooled, listening}


@pytest.mark.asyncio
async def test_connections_are_named_sitq_unless_the_dsn_names_them(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA could not tell sitq's sessions apart in pg_stat_activity: they had no application_name."""
    monkeypatch.delenv("PGAPPNAME", raising=False)
    assert await _application_names(PostgresBackend(pg_dsn, schema=pg_schema)) == {"sitq"}
    named = f"{pg_dsn}{'&' if '?' in pg_dsn else '?'}application_name=billing-worker"
    assert await _application_names(PostgresBackend(named, schema=pg_schema)) == {"billing-worker"}
    monkeypatch.setenv("PGAPPNAME", "from-env")  # libpq's variable, which asyncpg does not read itself
    assert await _application_names(PostgresBackend(pg_dsn, schema=pg_schema)) == {"from-env"}


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres@127.0.0.1,/db",
        "postgresql://postgres@127.0.0.1:5432,/db",
        "postgresql://postgres@,127.0.0.1/db",
        "postgresql://postgres@127.0.0.1,,[::1]/db",
        "postgresql:///db?host=127.0.0.1,",
        "host=,127.0.0.1 dbname=db",
    ],
)
def test_a_host_list_with_an_empty_entry_is_refused_when_the_backend_is_made(dsn: str) -> None:
    """Accepted before, then every call failed with a bare IndexError from asyncpg's host-list parser."""
    builds: list[Any] = [PostgresBackend, lambda given: sitq.connect({"backend": "postgres", "dsn": given})]
    if dsn.startswith("postgresql://postgres@"):
        builds.append(sitq.connect)
    for build in builds:
        with pytest.raises((ValidationError, ConfigurationError)) as info:
            build(dsn)
        assert info.value.parameter in {"dsn", "url"} and "empty host" in info.value.message, info.value.message


@pytest.mark.parametrize(
    "key", ["sslsni", "require_auth", "requirepeer", "sslcertmode", "client_encoding", "sslcrldir", "gssdelegation"]
)
def test_other_libpq_parameters_are_refused_as_unsupported_not_unknown(key: str) -> None:
    """They are libpq's own: 'unknown connection parameter' read as a typo."""
    for build in (
        lambda: PostgresBackend(f"host=db {key}=1"),
        lambda: PostgresBackend(f"postgresql://u@db/app?{key}=1"),
        lambda: sitq.connect(f"postgresql://u@db/app?{key}=1"),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.parameter == key and "not supported by asyncpg" in info.value.message, info.value.message


def test_a_refused_options_parameter_says_where_server_settings_go() -> None:
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend("host=db options='-c statement_timeout=5s'")
    assert info.value.parameter == "options" and "ALTER ROLE" in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("dsn", "parameter"),
    [
        ("postgresql://app@db/app?application_name=a%00b", "application_name"),
        ("host=db application_name='a\x00b'", "application_name"),
        ("postgresql://app:p%00ss@db/app", "dsn"),
        ("postgresql://app@db/ap%00p", "dsn"),
    ],
)
def test_a_nul_in_the_dsn_is_refused_naming_where_not_the_servers_protocol_error(dsn: str, parameter: str) -> None:
    """application_name=a%00b reached the server, which refused 'invalid startup packet layout' (a
    ConnectionError that read as a server fault)."""
    with pytest.raises(ValidationError) as info:
        PostgresBackend(dsn)
    assert info.value.parameter == parameter and "NUL" in str(info.value) and "p%00ss" not in str(info.value)
