"""Backend URL parsing (SQLAlchemy's grammar)."""

from __future__ import annotations

import pytest

import sitq_core.urls
from sitq import ConfigurationError, parse_backend_url

from sitq_test_helpers import strict_urlsplit


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("sqlite:///tasks.db", "tasks.db"),
        ("sqlite:////var/lib/app/tasks.db", "/var/lib/app/tasks.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_forms(url: str, database: str | None) -> None:
    parsed = parse_backend_url(url)
    assert parsed.scheme == "sqlite"
    assert parsed.database == database
    assert parsed.host is None


def test_full_url_keeps_password_out_of_repr() -> None:
    parsed = parse_backend_url("postgresql+asyncpg://user:s3cret@db.example:5433/jobs?pool=4")
    assert (parsed.scheme, parsed.driver, parsed.name) == ("postgresql", "asyncpg", "postgresql+asyncpg")
    assert (parsed.username, parsed.password, parsed.host, parsed.port) == ("user", "s3cret", "db.example", 5433)
    assert parsed.database == "jobs" and parsed.query == {"pool": "4"}
    assert "s3cret" not in repr(parsed) and "s3cret" not in str(parsed)
    assert "s3cret" in parsed.render(hide_password=False)


@pytest.mark.parametrize("url", ["tasks.db", "", "://x", "sqlite://h:notaport/x", "sqlite:///a.db?x=1&x=2"])
def test_malformed_urls_name_the_parameter(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    assert info.value.parameter in ("url", "x")


def test_secrets_in_the_query_are_masked_too() -> None:
    url = parse_backend_url("postgresql://u:pw@db/app?sslmode=require&sslpassword=TOPSECRET")
    assert "TOPSECRET" not in str(url) and "TOPSECRET" not in repr(url)
    assert "sslpassword=***" in str(url) and "sslmode=require" in str(url)
    assert "sslpassword=TOPSECRET" in url.render(hide_password=False)


def test_ipv6_hosts_and_plus_signs_survive_a_round_trip() -> None:
    url = parse_backend_url("postgresql://u@[::1]:5432/app?sslrootcert=/etc/ssl/a+b.crt")
    assert url.host == "::1" and url.query["sslrootcert"] == "/etc/ssl/a+b.crt"
    again = parse_backend_url(url.render(hide_password=False))
    assert (again.host, again.port, again.query) == ("::1", 5432, url.query)


def test_a_multi_host_url_keeps_every_host_in_order() -> None:
    url = parse_backend_url("postgresql://u:pw@primary:5432,[::1]:5433,standby/app?target_session_attrs=read-write")
    assert (url.host, url.port, url.more_hosts) == ("primary", 5432, (("::1", 5433), ("standby", None)))
    assert url.render(hide_password=False) == (
        "postgresql://u:pw@primary:5432,[::1]:5433,standby/app?target_session_attrs=read-write"
    )
    assert str(url) == "postgresql://u:***@primary:5432,[::1]:5433,standby/app?target_session_attrs=read-write"


def test_a_multi_host_url_parses_where_urlsplit_refuses_data_before_a_bracket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python builds with the CVE-2024-11168 fix refused 'h1,[::1]:5433' as "Invalid IPv6 URL"."""
    monkeypatch.setattr(sitq_core.urls, "urlsplit", strict_urlsplit)
    url = parse_backend_url("postgresql://u:pw@primary:5432,[::1]:5433,standby/app?target_session_attrs=read-write")
    assert (url.host, url.port, url.more_hosts) == ("primary", 5432, (("::1", 5433), ("standby", None)))
    assert url.query == {"target_session_attrs": "read-write"} and url.database == "app"
    with pytest.raises(ConfigurationError, match="malformed"):
        parse_backend_url("postgresql://u@[::1:5433/app")  # an unclosed bracket is still refused


@pytest.mark.parametrize("url", ["postgresql://a,b:notaport/x", "postgresql://a,,b/x"])
def test_a_bad_host_list_names_the_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    assert info.value.parameter == "url" and "host" in str(info.value)


def test_a_port_of_digits_is_kept_as_written_for_the_backend_to_check_its_range() -> None:
    """urlsplit refused 70000 (a ConfigurationError naming 'url'), the backend port 0: one place checks both now."""
    url = parse_backend_url("postgresql://u@a:70000,b:0,c:99999/x")
    assert (url.port, url.more_hosts) == (70000, (("b", 0), ("c", 99999)))


def test_a_port_error_says_to_percent_encode_what_the_backend_errors_say() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url("postgresql://u@db:notaport/x")
    assert "'/', '?', '#' or '@' must be percent-encoded: %2F, %3F, %23, %40" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:TOPSECRET@db:notaport/app",
        "postgresql://u:TOPSECRET@db/app?x=1&x=2",
        "postgresql://u:TOPSECRET@a,b:bad/app",
        "postgresql://u:TOP@SECRET@db:bad/app",
        "postgresql://db:bad/app?sslpassword=TOPSECRET",
        "postgresql://u:TOP#SECRET@db:bad/app",
        "postgresql://u:TOP/SECRET@127.0.0.1:5432/app",  # unescaped '/': an "invalid port" that must not leak
        "postgresql://u:TOP?SECRET@127.0.0.1:5432/app",
        "postgresql://db:bad/app?sslpassword=TOP#SECRET",
    ],
)
def test_errors_about_a_url_never_echo_its_secrets(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_backend_url(url)
    shown = f"{info.value} {info.value.context}"
    assert "SECRET" not in shown and "***" in shown, shown


def test_a_hash_sign_is_an_ordinary_character_as_in_sqlalchemy() -> None:
    # a backend URL has no fragment: '#' must not cut off the rest of the URL silently
    assert parse_backend_url("sqlite:///jobs#2.db").database == "jobs#2.db"
    url = parse_backend_url("postgresql://app:pa#ss@db:5432/app#x?schema=jobs&opt=a#b")
    assert (url.password, url.host, url.port, url.database) == ("pa#ss", "db", 5432, "app#x")
    assert url.query == {"schema": "jobs", "opt": "a#b"}
    again = parse_backend_url(url.render(hide_password=False))
    assert (again.password, again.database, again.query) == ("pa#ss", "app#x", url.query)


def test_an_unclosed_ipv6_bracket_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="malformed") as info:
        parse_backend_url("postgresql://app@[::1/db")
    assert info.value.parameter == "url"


@pytest.mark.parametrize(
    "url", ["sqlite:///a@b.db", "postgresql://u@h/db?x=a@b", "sqlite:///C:/a@b.db", "postgresql://u@[::1]:5432/db"]
)
def test_masking_leaves_urls_without_a_password_alone(url: str) -> None:
    from sitq_core.urls import masked

    assert masked(url) == url  # no ':' in the host part before an '@': no password to hide


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://db:5432/app?application_name=me@x", "postgresql://db:***@x"),
        ("postgresql://u:pw@db/app?application_name=me@x", "postgresql://u:***@x"),
        ("postgresql://app:Xy7/k?9Lm@db.example:5432/app", "postgresql://app:***@db.example:5432/app"),
        ("postgresql://app:QQ@?&Q7ZZ@db.invalid:1/app", "postgresql://app:***@db.invalid:1/app"),
    ],
)
def test_masking_runs_to_the_last_at_sign_when_a_password_may_run_past_the_host_part(url: str, shown: str) -> None:
    """An unescaped '/' or '?' in a password ends the host part early; the '@' after it may be the password's end.

    It cannot be told apart from an '@' in the path or query, so both hide
    what comes before them (only errors and logs show this form).
    """
    from sitq_core.urls import masked

    assert masked(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///x.db?password=Tr0ub&dor&3", "sqlite:///x.db?password=***"),
        ("postgresql://h/db?sslmode=require&sslpassword=a&b=c", "postgresql://h/db?sslmode=require&sslpassword=***"),
        ("postgresql://h/db?dsn=postgresql://u:pw@h/db", "postgresql://h/db?dsn=***"),
        ("postgresql://h/db?api_token=x", "postgresql://h/db?api_token=***"),
    ],
)
def test_a_secret_query_option_is_masked_to_the_end_of_the_url(url: str, shown: str) -> None:
    """A raw '&' in its value makes the rest of it look like further options."""
    from sitq_core.urls import masked

    assert masked(url) == shown


@pytest.mark.parametrize("url", ["sqlite:///a\tb.db", "postgresql://u@h/d\nb", "sqlite:///x.db\r"])
def test_a_tab_or_line_break_inside_a_url_is_refused_not_dropped(url: str) -> None:
    """urlsplit drops them: 'sqlite:///a<TAB>b.db' opened ab.db, another file than the one given."""
    with pytest.raises(ConfigurationError) as caught:
        parse_backend_url(url + "x" if url.endswith("\r") else url)  # (a trailing one is stripped as space)
    assert caught.value.parameter == "url" and "tab or line break" in str(caught.value)


def test_spaces_around_a_url_are_ignored() -> None:
    assert parse_backend_url("  sqlite:///tasks.db \n") == parse_backend_url("sqlite:///tasks.db")
