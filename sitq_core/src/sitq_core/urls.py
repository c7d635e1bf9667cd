"""Backend URLs: ``name[+driver]://[user[:password]@][host][:port][,host2[:port2]...][/database][?opt=value]``.

The grammar is SQLAlchemy's. For SQLite, ``sqlite:///tasks.db`` is relative to
the working directory, ``sqlite:////var/lib/app/tasks.db`` is absolute, and
``sqlite://`` or ``sqlite:///:memory:`` is an in-memory database.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

from .errors import ConfigurationError

__all__ = [
    "BackendURL",
    "hidden_options",
    "looks_secret",
    "masked",
    "masked_text",
    "parse_backend_url",
    "redacted",
    "split_url",
]


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
    #: A ``/`` follows the host part even where no database follows it: ``sqlite:///`` (a file name left
    #: out, say by an unset shell variable) as against ``sqlite://``.
    path_given: bool = False

    @property
    def name(self) -> str:
        """The registry key: ``scheme+driver`` when a driver is given, else ``scheme``."""
        return f"{self.scheme}+{self.driver}" if self.driver else self.scheme

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text, with the password masked unless asked otherwise.

        Masked, it goes through :func:`masked`: an ``@`` in the path or query
        is written as it is, so that a URL whose password ran past its host
        part (an unescaped ``/`` or ``?``) is masked up to its last ``@``, and
        the query is hidden from its first secret option on.
        """
        if not hide_password:
            return self._text(None if self.password is None else quote(self.password, safe=""), safe="")
        return masked(self._text(None if self.password is None else "***", safe="@"))

    def _text(self, password: str | None, *, safe: str) -> str:
        """The URL with ``password`` (already encoded) as its password; ``safe``: characters left unencoded."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if password is not None:
                auth += ":" + password
            auth += "@"
        hosts = ",".join(_host_port(host, port) for host, port in ((self.host, self.port), *self.more_hosts))
        # re-encoded: a database named "a#b" or "a?b" must not turn into a fragment or a query
        database = f"/{quote(self.database, safe='/:' + safe)}" if self.database is not None else ""
        if self.database is None and self.path_given:
            database = "/"
        query = "&".join(f"{quote(k, safe=safe)}={quote(str(v), safe=safe)}" for k, v in self.query.items())
        return f"{self.name}://{auth}{hosts}{database}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.render()


#: Words that make an option's value a secret: password, sslpassword, passwd, pwd, api_key, auth_token, ...
_SECRET_WORDS = re.compile(r"pass|pw|secret|token|key|word|cred", re.IGNORECASE)
_SECRET_NAMES = ("password", "passwd", "secret", "token")  # and near misses of them ("pasword", "secrte")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def looks_secret(name: object) -> bool:
    """True for an option whose value may be a secret (its name holds pass, pw, secret, token, key, word or cred).

    A near miss of one (``pasword``, ``sekret``) counts too, and so does
    ``dsn``: a connection string may hold a password.
    """
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    if lowered == "dsn" or _SECRET_WORDS.search(lowered):
        return True
    return bool(difflib.get_close_matches(lowered, _SECRET_NAMES, n=1, cutoff=0.75))


def redacted(name: object, value: Any) -> Any:
    """``value`` as an error about option ``name`` may show it: ``***`` for a secret, a URL masked, else unchanged.

    A ``dsn`` that is a URL shows as :func:`masked` does (its password
    hidden); any other value of a secret-looking option as ``***``, bytes and
    key=value connection strings included. A URL given to any other option is
    masked too.
    """
    if isinstance(name, str) and name.lower() == "dsn" and isinstance(value, str) and _URL_START.match(value.strip()):
        return masked(value.strip())
    if looks_secret(name):
        return "***"
    if isinstance(value, str) and "://" in value:
        return masked(value)
    if isinstance(value, bytes | bytearray) and b"://" in value:
        return "***"
    return value


def masked(url: str) -> str:
    """``url`` as it may appear in errors and logs: no part of its password, nor of a secret option, shows.

    The password runs from the first ``:`` of the host part to the last
    ``@`` of the whole URL: an unescaped ``/``, ``?`` or ``@`` in it cannot
    end it early (an ``@`` in the path or query, as in
    ``?application_name=me@host``, then hides the host part too: it is not
    told apart from a password's end). The query is hidden from the value of
    its first secret-looking option (:func:`looks_secret`) to the end, since
    an unescaped ``&`` in that value makes the rest look like more options.
    Text without ``://`` (a URL missing part of it, a libpq ``key=value``
    connection string) is masked as :func:`masked_text` says.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return masked_text(url)
    return f"{head}://{_mask_query(_mask_userinfo(rest))}"


#: A libpq ``key=value`` pair: the value quoted (``'a b'``, with ``\'`` inside; to the end when unclosed) or a word.
#: The key is the run of ``[A-Za-z0-9_.-]`` from its first letter or ``_`` (the digits, dots and dashes before
#: that are group 1, kept as they are). A match starts only where such a run starts (the lookbehind) and every
#: repeat is possessive, so that the pattern is tried once per run, never again from inside it: a
#: ``[A-Za-z_][A-Za-z0-9_.-]*`` tried from every position of a long name with no ``=`` took quadratic time
#: (100,000 characters: minutes), and masking is on the path of every error about an unknown backend name.
_KEYWORD_VALUE = re.compile(
    r"(?<![A-Za-z0-9_.-])([0-9.-]*+)([A-Za-z_][A-Za-z0-9_.-]*+)(\s*+=\s*+)('(?:[^'\\]|\\.)*+'?|\S*+)", re.DOTALL
)


def masked_text(text: str) -> str:
    """``text`` that is not a URL (no ``://``), as errors may show it: no secret of it shows.

    The value of each ``key=value`` pair whose key looks secret
    (:func:`looks_secret`: ``password='...'`` of a libpq connection string)
    shows as ``***``; so does, for text such as ``postgresql//user:pw@host``
    (a URL that lost the ``:`` of its ``://``), everything from its first
    ``:`` to its last ``@``, where a password would be; and a query is
    hidden from its first secret option on, as in a URL.
    """
    text = _KEYWORD_VALUE.sub(
        lambda pair: f"{pair[1]}{pair[2]}{pair[3]}***" if looks_secret(pair[2]) else pair[0], text
    )
    colon, at = text.find(":"), text.rfind("@")
    if 0 <= colon < at:
        text = f"{text[: colon + 1]}***{text[at:]}"
    return _mask_query(text)


def hidden_options(url: str) -> frozenset[str] | None:
    """The query options of ``url`` that :func:`masked` hides: an error about one must not name it nor show its value.

    They may be pieces of a password holding an unescaped ``&`` or ``=``.
    None when the password may run past the host part (a ``:`` there and an
    ``@`` after it): then any detail of the URL may be a piece of it.
    """
    _head, sep, rest = url.strip().partition("://")
    if not sep:
        return frozenset()
    if _userinfo_overruns(rest):
        return None
    return frozenset(_query_keys(rest) - _query_keys(_mask_query(rest)))


def _authority_end(rest: str) -> int:
    """Where the host part of ``rest`` (a URL after its ``://``) ends: at its first ``/`` or ``?`` (``#`` is text)."""
    return min((index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest))


def _userinfo_span(rest: str) -> tuple[int, int] | None:
    """``(colon, at)``: the first ``:`` of the host part and the last ``@``, when the password may lie between."""
    colon = rest.find(":", 0, _authority_end(rest))
    at = rest.rfind("@")
    return None if colon < 0 or at < colon else (colon, at)


def _userinfo_overruns(rest: str) -> bool:
    span = _userinfo_span(rest)
    return span is not None and span[1] > _authority_end(rest)


def _mask_userinfo(rest: str) -> str:
    span = _userinfo_span(rest)
    if span is None:
        return rest  # no password: no ':' in the host part, or no '@' after it
    colon, at = span
    return f"{rest[: colon + 1]}***{rest[at:]}"


def _mask_query(rest: str) -> str:
    """``rest`` with everything after the ``=`` of its first secret-looking query option as ``***``."""
    start = rest.find("?")
    if start < 0:
        return rest
    position = start + 1
    for item in rest[start + 1 :].split("&"):
        key, equals, _value = item.partition("=")
        if equals and looks_secret(unquote(key)):
            return f"{rest[: position + len(key) + 1]}***"
        position += len(item) + 1
    return rest


def _query_keys(rest: str) -> set[str]:
    """The option names of the query of ``rest``, read as ``parse_backend_url`` reads them."""
    query = rest.partition("?")[2].replace("#", "%23").replace("+", "%2B")
    return {key for key, _value in parse_qsl(query, keep_blank_values=True)}


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
    """Keep the first host of ``user@h1:p1,h2:p2`` in ``netloc``; return the others parsed.

    A host that does not parse is named only when the masked URL ``shown``
    shows it: otherwise it may be a piece of a password that ran past the
    host part (and so would the parser's own message, which is not kept).
    """
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return netloc, ()
    first, *others = hostlist.split(",")
    more: list[tuple[str, int | None]] = []
    for item in others:
        try:
            parsed = urlsplit(f"x://{item}")
            host, port = parsed.hostname, _port_of(parsed)
        except ValueError:
            host, port = None, -1
        if port == -1:  # raised outside the handler: the parser's error stays out of __context__ too
            where = f" in {item!r}" if item in shown else ""
            raise ConfigurationError(
                f"backend URL {shown!r} has an invalid host or port{where}", parameter="url", value=shown
            )
        if not host:
            raise ConfigurationError(
                f"backend URL {shown!r} has an empty host in its host list", parameter="url", value=shown
            )
        more.append((host, port))
    return f"{userinfo}{at}{first}", tuple(more)


def _port_of(parts: SplitResult) -> int | None:
    """The port of a one-host ``parts``: None when there is none, -1 when it is not a number.

    A port of ASCII digits is kept as written, whatever its size (urlsplit
    refuses one above 65535): the backend checks the range, so that a port
    out of it gets the same error as in its other forms (``?port=``, a
    ``dsn``). urlsplit's own error is not kept: what it took for the port
    may be a piece of the password, which its message repeats.
    """
    try:
        return parts.port
    except ValueError:
        pass
    hostport = parts.netloc.rpartition("@")[2]
    after_host = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    _host, colon, text = after_host.partition(":")
    return int(text) if colon and _DIGITS.fullmatch(text) else -1


_DIGITS = re.compile(r"[0-9]+")


def parse_backend_url(url: str) -> BackendURL:
    """Parse a backend URL; a malformed one raises ``ConfigurationError`` naming ``url``.

    No error repeats a password or a piece of one (see :func:`masked`), nor
    keeps the parser's own error, which may quote one, in its chain.
    """
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
    refusal = ""
    try:
        parts = split_url("x" + url[len(scheme_part) :].replace("#", "%23"))
    except ValueError as exc:  # an unclosed '[' of an IPv6 host, or a '[' in a password
        refusal = str(exc)
    if refusal:  # raised outside the handler, so that the parser's error is not its __context__
        reason = (
            "Invalid IPv6 URL (an unclosed '['; a '[' or ']' in a password must be percent-encoded: %5B, %5D)"
            if "IPv6" in refusal
            else "its host part holds characters the URL parser refuses (percent-encode them in a password)"
        )
        raise ConfigurationError(f"backend URL {shown!r} is malformed: {reason}", parameter="url", value=shown)
    netloc, more_hosts = _split_hosts(shown, parts.netloc)
    if more_hosts:
        parts = parts._replace(netloc=netloc)
    port = _port_of(parts)
    if port == -1:
        raise ConfigurationError(
            f"backend URL {shown!r} has an invalid port (a password holding '/', '?', '#' or '@' must be "
            "percent-encoded: %2F, %3F, %23, %40)",
            parameter="url",
            value=shown,
        )
    path = parts.path
    try:
        database = unquote(path[1:] if path.startswith("/") else path, errors="strict")
    except UnicodeDecodeError:
        # unquote's default put U+FFFD in place of each bad byte: another name than the one given
        raise ConfigurationError(
            f"backend URL {shown!r} percent-encodes bytes that are not UTF-8 text in its path; encode the name "
            "as UTF-8 (for example %C3%A9 for 'é')",
            parameter="url",
            value=shown,
        ) from None
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):  # '+' is a plus
        if key in query:
            hidden = hidden_options(url)
            if hidden is None or key in hidden:  # maybe a piece of a password holding a raw '&'
                raise ConfigurationError(
                    f"backend URL {shown!r} gives an option twice (not named here: a password holding '&', '=' or "
                    "'?' must be percent-encoded: %26, %3D, %3F)",
                    parameter="url",
                    value=shown,
                )
            raise ConfigurationError(f"backend URL option {key!r} is given twice", parameter=key, value=shown)
        query[key] = value
    return BackendURL(
        scheme=scheme,
        driver=driver or None,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname or None,
        port=port,
        database=database or None,
        query=query,
        more_hosts=more_hosts,
        path_given=bool(path),
    )
