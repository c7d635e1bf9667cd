"""Backend URLs: ``name[+driver]://[user[:password]@][host][:port][,host2[:port2]...][/database][?opt=value]``.

The grammar is SQLAlchemy's. For SQLite, ``sqlite:///tasks.db`` is relative to
the working directory, ``sqlite:////var/lib/app/tasks.db`` is absolute, and
``sqlite://`` or ``sqlite:///:memory:`` is an in-memory database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from .errors import ConfigurationError

__all__ = ["BackendURL", "parse_backend_url", "split_url"]


@dataclass(frozen=True, slots=True)
class BackendURL:
    """A parsed backend URL; the password never appears in ``repr`` or ``str``."""

    scheme: str
    driver: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets (sslpassword)
    #: Further ``(host, port)`` pairs after the first of a multi-host URL (``pg://h1:5432,h2:5433/db``).
    more_hosts: tuple[tuple[str, int | None], ...] = ()

    @property
    def name(self) -> str:
        """The registry key: ``scheme+driver`` when a driver is given, else ``scheme``."""
        return f"{self.scheme}+{self.driver}" if self.driver else self.scheme

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text, with the password masked unless asked otherwise."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + ("***" if hide_password else quote(self.password, safe=""))
            auth += "@"
        hosts = ",".join(_host_port(host, port) for host, port in ((self.host, self.port), *self.more_hosts))
        # re-encoded: a database named "a#b" or "a?b" must not turn into a fragment or a query
        database = f"/{quote(self.database, safe='/:')}" if self.database is not None else ""
        query = "&".join(
            f"{k}={'***' if hide_password and 'password' in k.lower() else quote(str(v), safe='')}"
            for k, v in self.query.items()
        )
        return f"{self.name}://{auth}{hosts}{database}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.render()


_QUERY_SECRET = re.compile(r"((?:^|[?&])[^=&]*password[^=&]*=)[^&]*", re.IGNORECASE)


def masked(url: str) -> str:
    """``url`` as it may appear in errors and logs: the password and any ``*password*=`` value as ``***``."""
    return _QUERY_SECRET.sub(r"\1***", _mask_password(url))


def _mask_password(url: str) -> str:
    """Hide ``user:password@`` even when the password holds an unescaped ``/``, ``?`` or ``@``.

    The password ends at the last ``@`` of the authority (up to the first
    ``/``); when there is none there but an ``@`` follows in the path before
    the query, an unescaped ``/`` cut the password short, and it runs to that
    ``@``. An ``@`` inside the query (``application_name=me@x``) is not one.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    if "@" in authority:
        end = authority.rfind("@")
    else:
        query = rest.find("?", max(slash, 0))
        before_query = rest if query < 0 else rest[:query]
        if slash < 0 or "@" not in before_query[slash:]:
            return url
        end = before_query.rfind("@")
    colon = rest.find(":", 0, end)
    if colon < 0 or "/" in rest[:colon] or "@" in rest[:colon]:
        return url  # a user name only, no password to hide
    return f"{head}://{rest[: colon + 1]}***{rest[end:]}"


def _host_port(host: str | None, port: int | None) -> str:
    text = host or ""
    if ":" in text:  # an IPv6 address keeps its brackets
        text = f"[{text}]"
    return text if port is None else f"{text}:{port}"


def split_url(url: str) -> SplitResult:
    """``urlsplit``, for a netloc that may list several hosts as libpq writes them (``h1:5432,[::1]:5433``).

    Python builds carrying the CVE-2024-11168 fix (3.11.4+ in distributions,
    3.12.8+, 3.13.1+) refuse anything before a ``[`` in the host part, so a
    list whose later host is an IPv6 address raised "Invalid IPv6 URL". Only
    the netloc's first host goes through ``urlsplit`` (which still checks it);
    the result carries the whole netloc, and callers check the other hosts.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return urlsplit(url)
    ends = [index for index in (rest.find("/"), rest.find("?"), rest.find("#")) if index >= 0]
    end = min(ends, default=len(rest))
    netloc = rest[:end]
    userinfo, at, hostlist = netloc.rpartition("@")
    first = f"{userinfo}{at}{hostlist.split(',', 1)[0]}"
    return urlsplit(f"{scheme}://{first}{rest[end:]}")._replace(netloc=netloc)


def _split_hosts(shown: str, netloc: str) -> tuple[str, tuple[tuple[str, int | None], ...]]:
    """Keep the first host of ``user@h1:p1,h2:p2`` in ``netloc``; return the others parsed."""
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return netloc, ()
    first, *others = hostlist.split(",")
    more: list[tuple[str, int | None]] = []
    for item in others:
        try:
            parsed = urlsplit(f"x://{item}")
            host, port = parsed.hostname, parsed.port
        except ValueError as exc:
            raise ConfigurationError(
                f"backend URL {shown!r} has an invalid host or port in {item!r}",
                parameter="url",
                value=shown,
                cause=exc,
            ) from exc
        if not host:
            raise ConfigurationError(
                f"backend URL {shown!r} has an empty host in its host list", parameter="url", value=shown
            )
        more.append((host, port))
    return f"{userinfo}{at}{first}", tuple(more)


def parse_backend_url(url: str) -> BackendURL:
    """Parse a backend URL; a malformed one raises ``ConfigurationError`` naming ``url``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"expected a backend URL like 'sqlite:///tasks.db', got {masked(url) if isinstance(url, str) else url!r}",
            parameter="url",
            value=masked(url) if isinstance(url, str) else url,
        )
    url = url.strip()  # a line read from an env file or a shell variable
    shown = masked(url)  # errors never echo a password
    if any(char in url for char in "\t\r\n"):
        # urlsplit drops them silently: 'sqlite:///a<TAB>b.db' opened ab.db, another file than the one given
        raise ConfigurationError(
            f"backend URL {shown!r} holds a tab or line break; percent-encode it (%09, %0D, %0A) if it is meant",
            parameter="url",
            value=shown,
        )
    scheme_part = url.split("://", 1)[0]
    scheme, _, driver = scheme_part.lower().partition("+")
    if not scheme:
        raise ConfigurationError(f"backend URL {shown!r} has no scheme", parameter="url", value=shown)
    # A neutral scheme keeps urlsplit generic. '#' is an ordinary character here, as in SQLAlchemy's
    # grammar (a backend URL has no fragment): 'jobs#2.db' names that file, 'pass#word' is the password.
    try:
        parts = split_url("x" + url[len(scheme_part) :].replace("#", "%23"))
    except ValueError as exc:  # an unclosed '[' of an IPv6 host
        raise ConfigurationError(
            f"backend URL {shown!r} is malformed: {exc}", parameter="url", value=shown, cause=exc
        ) from exc
    netloc, more_hosts = _split_hosts(shown, parts.netloc)
    if more_hosts:
        parts = parts._replace(netloc=netloc)
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"backend URL {shown!r} has an invalid port (a password holding '/', '?' or '@' must be "
            "percent-encoded: %2F, %3F, %40)",
            parameter="url",
            value=shown,
        ) from None  # the parser's own message repeats what it took for the port: a piece of the password
    path = parts.path
    database = unquote(path[1:]) if path.startswith("/") else (unquote(path) or None)
    if database == "":
        database = None
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):  # '+' is a plus
        if key in query:
            raise ConfigurationError(f"backend URL option {key!r} is given twice", parameter=key, value=shown)
        query[key] = value
    return BackendURL(
        scheme=scheme,
        driver=driver or None,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname or None,
        port=port,
        database=database,
        query=query,
        more_hosts=more_hosts,
    )
