"""Backend URLs: ``name[+driver]://[user[:password]@][host][:port][/database][?opt=value]``.

The grammar is SQLAlchemy's. For SQLite, ``sqlite:///tasks.db`` is relative to
the working directory, ``sqlite:////var/lib/app/tasks.db`` is absolute, and
``sqlite://`` or ``sqlite:///:memory:`` is an in-memory database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import ConfigurationError

__all__ = ["BackendURL", "parse_backend_url"]


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
        host = self.host or ""
        if ":" in host:  # an IPv6 address keeps its brackets
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        database = f"/{self.database}" if self.database is not None else ""
        query = "&".join(
            f"{k}={'***' if hide_password and 'password' in k.lower() else quote(str(v), safe='')}"
            for k, v in self.query.items()
        )
        return f"{self.name}://{auth}{host}{port}{database}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.render()


def parse_backend_url(url: str) -> BackendURL:
    """Parse a backend URL; a malformed one raises ``ConfigurationError`` naming ``url``."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"expected a backend URL like 'sqlite:///tasks.db', got {url!r}",
            parameter="url",
            value=url,
        )
    scheme_part = url.split("://", 1)[0]
    scheme, _, driver = scheme_part.lower().partition("+")
    if not scheme:
        raise ConfigurationError(f"backend URL {url!r} has no scheme", parameter="url", value=url)
    parts = urlsplit("x" + url[len(scheme_part) :])  # a neutral scheme keeps urlsplit generic
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(
            f"backend URL {url!r} has an invalid port", parameter="url", value=url, cause=exc
        ) from exc
    path = parts.path
    database = unquote(path[1:]) if path.startswith("/") else (unquote(path) or None)
    if database == "":
        database = None
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):  # '+' is a plus
        if key in query:
            raise ConfigurationError(f"backend URL option {key!r} is given twice", parameter=key, value=url)
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
    )
