"""libpq ``key=value`` connection strings, turned into the URL form asyncpg accepts.

libpq takes ``host=db port=5432 dbname=app user=app password='s e c'``
as well as URLs; asyncpg only URLs. Every pair becomes a query parameter of
``postgresql://?...``, which asyncpg reads the same way (``host``, ``port``,
``user``, ``password``, ``dbname``, ``sslmode``, ...; several hosts as
``host=a,b``; a socket directory as ``host=/var/run/postgresql``).
Quoting follows libpq: a value in single quotes may hold spaces, and a
backslash escapes the next character (``\\'`` or ``\\\\``).

Ports are checked here too, when the backend is made: asyncpg would raise a
bare ``ValueError`` (or ``OverflowError``) for ``port=abc`` at the first call,
and it ignores ``?port=`` once a URL names its hosts, where libpq applies it
to them; such a port is therefore written onto those hosts.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode

from sitq_core import checks
from sitq_core.errors import ConfigurationError, ValidationError, safe_repr
from sitq_core.urls import hidden_options, masked, split_url

__all__ = [
    "LIBPQ_PARAMETERS",
    "NO_LIMIT",
    "SITQ_OPTIONS",
    "UNSUPPORTED",
    "is_keyword_dsn",
    "keyword_dsn_to_url",
    "prepared_dsn",
]

NO_LIMIT = 86_400.0  # the longest connect_timeout sitq accepts: what libpq's "no limit" becomes

#: Connection parameters a URL may carry beside sitq's own options; they stay in the DSN for the driver.
LIBPQ_PARAMETERS = frozenset(
    {
        "host",  # e.g. a socket directory: postgresql:///app?host=/var/run/postgresql
        "port",
        "user",
        "password",
        "dbname",
        "service",
        "sslnegotiation",
        "application_name",
        "gsslib",
        "krbsrvname",
        "passfile",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
    }
)

#: sitq's own options, which a URL given as the backend carries but a dsn given on its own must not.
SITQ_OPTIONS = ("schema", "min_connections", "max_connections")

#: libpq connection parameters that asyncpg does not understand (it would send them to the server
#: as settings, which fails at connect time with 'unrecognized configuration parameter').
UNSUPPORTED = frozenset(
    {
        "channel_binding",
        "client_encoding",  # asyncpg speaks UTF-8 only
        "fallback_application_name",
        "gssdelegation",
        "gssencmode",
        "hostaddr",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "load_balance_hosts",
        "options",
        "replication",
        "require_auth",
        "requirepeer",
        "requiressl",
        "sslcertmode",
        "sslcompression",
        "sslcrldir",
        "sslsni",
        "tcp_user_timeout",
    }
)


#: libpq parameters with a fixed set of values (checked when the backend is made, not at connect).
CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "primary", "standby", "prefer-standby", "read-write", "read-only"),
}


def prepared_dsn(dsn: str | None, connect_timeout: float, *, default_timeout: float) -> tuple[str | None, float]:
    """The dsn as asyncpg takes it, and the connect timeout to use.

    A key=value string becomes a URL. libpq's own ``connect_timeout`` (in
    either form) means what sitq's does: it is taken out of the dsn and used
    unless ``connect_timeout`` was given another value than the default.
    Parameters asyncpg cannot use raise ``ConfigurationError`` naming them.
    """
    if dsn is None:
        return None, connect_timeout
    _check_text(dsn)
    keywords = is_keyword_dsn(dsn)
    if keywords:
        dsn = keyword_dsn_to_url(dsn)
    dsn = dsn.strip()  # a line read from an env file: urlsplit ignores the spaces, the rewrite below would not
    _check_scheme(dsn)
    try:
        return _prepared_url(dsn, connect_timeout, default_timeout=default_timeout)
    except (ConfigurationError, ValidationError) as exc:
        if keywords:  # quoted values, read without ambiguity: a refused name or value is no piece of the password
            raise
        refused = exc
    # Errors about the dsn itself never repeat it. One about a parameter may quote its name and value, which
    # are pieces of the password when that holds a raw '&' (?password=a&b=c) or runs past the host part (an
    # unescaped '/' or '?', then '@'): such an error says what to fix instead, and keeps no chain.
    hidden = hidden_options(dsn)
    if hidden is not None:  # and the keys as read here, where '#' ends the query (hidden_options reads it as text)
        hidden |= _query_keys(dsn) - _query_keys(masked(dsn))
    if refused.parameter == "dsn" or (hidden is not None and refused.parameter not in hidden):
        raise refused
    raise ValidationError(
        "dsn has a parameter that is refused and not named here, since it may be a piece of the password: "
        "percent-encode '/', '?', '@', '&', '=' and '#' in a password (%2F, %3F, %40, %26, %3D, %23)",
        parameter="dsn",
    )


#: What a dsn is, as errors about one say it (its value is never repeated: it may hold a password)
_EXPECTED = (
    "a postgresql:// or postgres:// URL (postgresql://user:password@host:5432/dbname) or a libpq key=value "
    "string (host=db dbname=app user=app)"
)
#: The schemes asyncpg reads (any case: urlsplit lowers it); it refused any other at the first call
_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _check_text(dsn: str) -> None:
    """Refuse a dsn that is blank or cannot be encoded as UTF-8, the encoding of PostgreSQL's startup packet.

    A lone surrogate (from text decoded with ``errors="surrogateescape"``)
    made asyncpg fail at the first call with a bare ``AttributeError`` of its
    protocol; a blank dsn, with "invalid DSN", and an empty one is most often
    an unset variable (``None`` is how libpq's defaults are asked for).
    """
    if not dsn.strip():
        raise ValidationError(
            f"dsn is {'empty' if not dsn else 'blank'}: expected {_EXPECTED}, or None for libpq's defaults and the "
            "PG* environment variables",
            parameter="dsn",
        )
    try:
        dsn.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "dsn must be text that can be encoded as UTF-8: it holds a lone surrogate (as text decoded with "
            "errors='surrogateescape' does); percent-encode the bytes meant in a URL (%FF)",
            parameter="dsn",
        ) from None


def _check_scheme(dsn: str) -> None:
    """Refuse a dsn that is no ``postgresql://`` or ``postgres://`` URL (a key=value string is one by now).

    asyncpg reads no other: ``PostgresBackend("5")`` was made, and every call
    failed with "invalid DSN: scheme is expected to be either postgresql or
    postgres". A scheme that is a plain word is named; the rest is not shown.
    """
    scheme, sep, _rest = dsn.partition(":")  # asyncpg reads the scheme as urlparse does: postgresql:/db works too
    if sep and scheme.lower() in _SCHEMES:
        return
    if not sep:
        found = "no scheme (no ':')"
    elif _SCHEME.fullmatch(scheme):
        driver = " (a driver suffix belongs to sitq.connect's URL, not to a dsn)" if "+" in scheme else ""
        found = f"the scheme {scheme!r}{driver}"
    else:
        found = "no scheme" if not scheme else "another text before its first ':'"
    raise ValidationError(f"dsn must be {_EXPECTED}; it has {found}", parameter="dsn")


def _prepared_url(dsn: str, connect_timeout: float, *, default_timeout: float) -> tuple[str, float]:
    """``prepared_dsn`` for a URL."""
    if any(char in dsn for char in "\t\r\n"):
        # urlsplit drops them silently (a tab in a password would vanish): the dsn would not be the one given
        raise ValidationError(
            "dsn must not hold tabs or line breaks (percent-encode them: %09, %0D, %0A)", parameter="dsn"
        )
    try:
        parts = split_url(dsn)  # several hosts, an IPv6 one after the first: urlsplit alone refuses them
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '[' in the host (or a '[' in a password)
        invalid = "an unclosed '['" if "IPv6" in str(exc) else "characters the URL parser refuses"
    else:
        invalid = ""
    if invalid:  # raised outside the handler: the parser's message (which may quote the netloc) is not chained
        raise ValidationError(
            f"dsn is not a valid URL: {invalid} (a password holding '[', ']' or other special characters must be "
            "percent-encoded)",
            parameter="dsn",
        )
    if "\x00" in unquote(parts.netloc) or "\x00" in unquote(parts.path):
        raise ValidationError(  # the server cut the startup packet short at it (values not repeated: secrets)
            "dsn must not hold a NUL character (%00) in its user, password, host or database name", parameter="dsn"
        )
    auth, hosts = _netloc_hosts(parts.netloc)
    if not all(port is None or _is_port_number(port) for _host, port in hosts):
        # asyncpg would fail at the first call, repeating what it read (maybe a piece of the password)
        raise ValidationError(
            "dsn has an invalid host or port (a port is a number from 1 to 65535; a password holding '/', '?', "
            "'#' or '@' must be percent-encoded: %2F, %3F, %23, %40)",
            parameter="dsn",
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    host_lists = [value.split(",") for key, value in pairs if key == "host" and "," in value]
    if (len(hosts) > 1 and not all(host for host, _port in hosts)) or any("" in names for names in host_lists):
        # libpq reads an empty entry as its default host; asyncpg fails every call with a bare IndexError
        raise ValidationError(
            "dsn has an empty host in its host list (asyncpg, the driver sitq uses, cannot read one: write each "
            "host out; a password holding '/', '?', '#' or '@' must be percent-encoded: %2F, %3F, %23, %40)",
            parameter="dsn",
        )
    for key, value in pairs:
        if "\x00" in value or "\x00" in key:
            # the startup packet ends each value at a NUL: the server refused it as a protocol violation,
            # which read as a server problem (a password is not named: it is not among these pairs)
            raise ValidationError(
                f"connection parameter {safe_repr(key)} in the dsn must not hold a NUL character (%00)",
                parameter=key,
            )
        if key in UNSUPPORTED:
            where = (  # options=-c name=value: server settings, which belong on the role or database
                " (set server settings on the role or database instead: ALTER ROLE app SET statement_timeout = '5min')"
                if key == "options"
                else ""
            )
            raise ConfigurationError(
                f"libpq parameter {key!r} is not supported by asyncpg, the driver sitq uses; leave it out of the "
                f"dsn{where}",
                parameter=key,
            )
        if key not in LIBPQ_PARAMETERS and key not in SITQ_OPTIONS and key != "connect_timeout":
            # asyncpg would send it to the server as a setting (work_mem, statement_timeout, search_path), or
            # fail at the first call for a name the server does not know: neither is what libpq does
            raise ConfigurationError(
                f"unknown connection parameter {key!r} in the dsn; sitq passes on these libpq parameters: "
                f"{', '.join(sorted(LIBPQ_PARAMETERS))}, and takes connect_timeout as its own (server settings "
                "such as statement_timeout are not connection parameters: set them on the role or database)",
                parameter=key,
                valid_options=sorted(LIBPQ_PARAMETERS),
            )
        allowed = CHOICES.get(key)
        if allowed is not None and value not in allowed:
            # asyncpg would raise this at connect time as a connection error, which callers retry
            raise ConfigurationError(
                f"libpq parameter {key!r} must be one of: {', '.join(allowed)}; got {safe_repr(value)}",
                parameter=key,
                value=value,
                valid_options=list(allowed),
            )
    for key, value in pairs:
        if key == "service":
            check_service(value)
    _refuse_given_twice(auth, hosts, parts.path, pairs)
    dropped: set[str] = set()  # query parameters taken out of the dsn
    ports = [value for key, value in pairs if key == "port"]
    if ports:  # the last one counts, for libpq and asyncpg alike
        query_hosts = [value for key, value in pairs if key == "host"]
        netloc = _ports_onto_hosts(auth, hosts, ports[-1], query_hosts[-1] if query_hosts else "")
        if netloc is not None:
            start = len(parts.scheme) + len("://")  # the netloc as written, right after the scheme
            dsn = dsn[:start] + netloc + dsn[start + len(parts.netloc) :]
            dropped.add("port")
    timeouts = [value for key, value in pairs if key == "connect_timeout"]
    if timeouts:
        connect_timeout = _dsn_timeout(timeouts[-1], connect_timeout, default_timeout=default_timeout)
        dropped.add("connect_timeout")
    if not dropped:
        return dsn, connect_timeout
    rest = urlencode([(key, value) for key, value in pairs if key not in dropped], quote_via=quote)
    base = dsn.split("?", 1)[0]  # (not urlunsplit: it drops the '//' of a URL without a host)
    return base + (f"?{rest}" if rest else ""), connect_timeout


def _query_keys(dsn: str) -> set[str]:
    """The parameter names of a dsn's query, read as ``_prepared_url`` reads them."""
    try:
        query = split_url(dsn).query
    except ValueError:
        return set()
    return {key for key, _value in parse_qsl(query, keep_blank_values=True)}


def _dsn_timeout(value: str, connect_timeout: float, *, default_timeout: float) -> float:
    """libpq's ``connect_timeout`` from a dsn, unless ``connect_timeout`` was given another value than the default.

    Compared as seconds (``checks.as_seconds``): the default written as a
    ``timedelta`` or a ``Decimal`` is the default too, and a value that is no
    number of seconds (a Decimal sNaN raised when compared) is kept, for the
    caller to refuse by name.
    """
    if checks.as_seconds(connect_timeout) == default_timeout:
        try:
            seconds = float(value)
        except ValueError:
            raise ValidationError(
                f"connect_timeout in the dsn must be a number of seconds, got {safe_repr(value)}",
                parameter="connect_timeout",
                value=value,
            ) from None
        if not math.isfinite(seconds):
            raise ValidationError(
                f"connect_timeout in the dsn must be a finite number of seconds, got {safe_repr(value)}",
                parameter="connect_timeout",
                value=value,
            )
        connect_timeout = seconds if seconds > 0 else NO_LIMIT  # libpq: 0 or less waits without end
    return connect_timeout


def _ports_onto_hosts(auth: str, hosts: list[tuple[str, str | None]], value: str, query_host: str) -> str | None:
    """Check a dsn's ``port`` parameter; return the netloc with it written onto the URL's hosts, if it names any.

    libpq applies ``?port=`` (one port for every host, or one per host) to
    the hosts of the URL; asyncpg ignores it once the URL names a host, and
    reads it only for hosts from ``?host=``, ``PGHOST`` or its defaults
    (None is returned then: the parameter stays). A host that has a port of
    its own in the URL, another than ``?port=`` gives it, is refused: libpq
    would use the query's, asyncpg the URL's. ValidationError for a port
    that is not a number from 1 to 65535, so that asyncpg's bare
    ``ValueError`` never reaches the first call.
    """
    if value == "":  # libpq and asyncpg: the default port, unless the URL's hosts name their own
        if any(port is not None for _host, port in hosts):
            raise _ports_conflict(value)
        return None
    entries = [entry.strip() for entry in value.split(",")]
    if not all(_is_port_number(entry) for entry in entries):
        # libpq reads an empty entry of a list as its default port, asyncpg fails on it: written out, both agree
        raise ValidationError(
            "port in the dsn must be a number from 1 to 65535, or a comma-separated list of them, one for each "
            "host (none left empty)",
            parameter="dsn",
        )
    names = len(hosts) if hosts else len(query_host.split(",")) if query_host else 0
    if len(entries) > 1 and names and len(entries) != names:
        raise ValidationError(
            f"port in the dsn: could not match {len(entries)} port numbers to {names} hosts (as libpq says; give "
            "one port for every host, or a single one for all)",
            parameter="dsn",
        )
    if not hosts:
        return None
    wanted = [str(int(entry)) for entry in entries] if len(entries) > 1 else [str(int(entries[0]))] * len(hosts)
    if any(port is not None and int(port) != int(want) for (_host, port), want in zip(hosts, wanted, strict=True)):
        raise _ports_conflict(value)
    return auth + ",".join(f"{host}:{want}" for (host, _port), want in zip(hosts, wanted, strict=True))


def _ports_conflict(value: str) -> ConfigurationError:
    # The URL's own ports are not repeated: an unescaped '/' in a password can make a piece of it read as one.
    return ConfigurationError(
        "the dsn gives a port twice, differently: on a host of the URL and as ?port= (libpq would use the "
        "query's, asyncpg the URL's); keep one",
        parameter="port",
        value=value,
    )


def check_service(name: str) -> None:
    """Refuse a libpq ``service`` that the service file asyncpg reads does not define.

    libpq refuses an unknown service; asyncpg ignores it and connects with
    the defaults and ``PG*`` variables instead: another database, where
    sitq would create its tables and run tasks. The file is looked up as
    asyncpg does: ``PGSERVICEFILE``, else ``.pg_service.conf`` in the home
    directory (``%APPDATA%\\postgresql`` on Windows); not libpq's system-wide one.
    """
    path = service_file()
    if path is None:
        raise ConfigurationError(
            f"libpq service {name!r}: there is no service file to define it (set PGSERVICEFILE; this process "
            "has no home directory for ~/.pg_service.conf)",
            parameter="service",
            value=name,
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)  # as asyncpg reads it (the locale's encoding)
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"libpq service {name!r}: the service file {path} cannot be read: {exc}", parameter="service", value=name
        ) from exc
    if not parser.has_section(name):
        raise ConfigurationError(
            f"libpq service {name!r} is not defined in {path} (asyncpg, the driver sitq uses, reads only "
            "PGSERVICEFILE or the .pg_service.conf in the home directory); libpq refuses an unknown service, "
            "and so does sitq rather than connect to another database",
            parameter="service",
            value=name,
        )


def service_file() -> Path | None:
    """The service file asyncpg reads, or None when there is none to read (no home directory)."""
    given = os.environ.get("PGSERVICEFILE")
    if given is not None:
        return Path(given)
    try:
        from asyncpg.compat import get_pg_home_directory  # type: ignore[import-untyped]

        home: Path | None = get_pg_home_directory()
    except (ImportError, AttributeError):  # an asyncpg without it: its POSIX rule
        try:
            home = Path.home()
        except (RuntimeError, KeyError):
            home = None
    return None if home is None else home / ".pg_service.conf"


_URL_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:")


def is_keyword_dsn(dsn: str) -> bool:
    """True for a ``key=value`` string: one with an ``=`` that does not start as a URL does (``scheme:``).

    A value may hold ``://`` (``password=ab://cd``): the first word decides, as libpq's does.
    """
    return "=" in dsn and _URL_START.match(dsn) is None


def keyword_dsn_to_url(dsn: str) -> str:
    """The ``postgresql://?key=value&...`` URL of a libpq ``key=value`` string (ValidationError if malformed)."""
    pairs: list[tuple[str, str]] = []
    position, end = 0, len(dsn)
    while True:
        while position < end and dsn[position].isspace():
            position += 1
        if position >= end:
            break
        start = position
        while position < end and dsn[position] != "=" and not dsn[position].isspace():
            position += 1
        key = dsn[start:position]
        while position < end and dsn[position].isspace():
            position += 1
        if not key or position >= end or dsn[position] != "=":
            after = f"after {pairs[-1][0]}=..." if pairs else "at the start"
            raise _malformed(f"a word without '=' {after} (quote values that hold spaces: key='a b')")
        position += 1
        while position < end and dsn[position].isspace():
            position += 1
        value, position = _value(dsn, position, key)
        pairs.append((key, value))
    if not pairs:
        raise _malformed("no key=value pairs")
    return "postgresql://?" + urlencode(pairs, quote_via=quote)


def _value(dsn: str, position: int, key: str) -> tuple[str, int]:
    """Read one value (quoted or bare) starting at ``position``; return it and where it ended."""
    chars: list[str] = []
    end = len(dsn)
    if position < end and dsn[position] == "'":
        position += 1
        while True:
            if position >= end:
                raise _malformed(f"unterminated quoted value of {key!r}")
            char = dsn[position]
            if char == "\\" and position + 1 < end:
                chars.append(dsn[position + 1])
                position += 2
            elif char == "'":
                return "".join(chars), position + 1
            else:
                chars.append(char)
                position += 1
    while position < end and not dsn[position].isspace():
        char = dsn[position]
        if char == "\\" and position + 1 < end:
            chars.append(dsn[position + 1])
            position += 2
        else:
            chars.append(char)
            position += 1
    return "".join(chars), position


def _malformed(detail: str) -> ValidationError:
    # The dsn itself is not repeated: it may hold a password.
    return ValidationError(f"dsn is not a valid libpq key=value string: {detail}", parameter="dsn")


def _refuse_given_twice(
    auth: str, hosts: list[tuple[str, str | None]], path: str, pairs: list[tuple[str, str]]
) -> None:
    """A host, user, password or database both in the URL itself and, differently, as a query parameter.

    libpq lets the query parameter win, asyncpg the URL's own part: the
    connection would reach another database than libpq (and ``psql``) would,
    so it is refused when the backend is made. (Ports: ``_ports_onto_hosts``.)
    """
    last = dict(pairs)  # the last value of each key counts
    user, colon, password = auth.rstrip("@").partition(":")
    in_url = {
        "host": ",".join(unquote(host.strip("[]")).lower() for host, _port in hosts),
        "user": unquote(user),
        "password": unquote(password) if colon else "",
        "dbname": unquote(path.lstrip("/")),
    }
    for key, given in in_url.items():
        wanted = last.get(key)
        if key == "host" and wanted is not None:
            wanted = ",".join(host.strip("[]").lower() for host in wanted.split(","))  # host names ignore case
        if given and wanted is not None and wanted not in (given, given.replace("+", " ")):  # asyncpg reads '+' in
            # the query as a space, and libpq as itself: '+' in both places is the same value either way
            shown = "" if key == "password" else f" ({given!r} and {wanted!r})"
            raise ConfigurationError(
                f"the dsn gives {key!r} twice, differently: in the URL itself and as ?{key}={shown} (libpq would "
                "use the query parameter, asyncpg the URL's own part); keep one",
                parameter=key,
                value=None if key == "password" else wanted,
            )


def _netloc_hosts(netloc: str) -> tuple[str, list[tuple[str, str | None]]]:
    """Split a URL's netloc into its ``user[:password]@`` part and its ``(host, port or None)`` pairs.

    Several hosts are comma-separated, as libpq allows; an IPv6 address is
    in brackets. A port is read as asyncpg reads it (after the first ':'),
    so what is checked here is what asyncpg would use; an empty one (``h:``)
    counts as none, as for both drivers. No host (``user@/db``): no pairs.
    A password with an unescaped '/' ends the netloc early, so part of it
    reads as a port: the caller refuses it without repeating it.
    """
    auth, at, hostlist = netloc.rpartition("@")
    pairs: list[tuple[str, str | None]] = []
    if hostlist:
        for item in hostlist.split(","):
            if item.startswith("[") and "]" in item:
                host, _bracket, rest = item.partition("]")
                host += "]"
                port = rest[1:] if rest.startswith(":") else rest or None  # other text after ']' fails the check
            else:
                host, _colon, port = item.partition(":")
            pairs.append((host, port or None))
    return auth + at, pairs


_DIGITS = re.compile(r"[0-9]+")


def _is_port_number(text: str) -> bool:
    """True for a TCP port libpq accepts: 1 to 65535, in ASCII digits."""
    return _DIGITS.fullmatch(text) is not None and 1 <= int(text) <= 65535
