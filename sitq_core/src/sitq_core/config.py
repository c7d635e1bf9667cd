"""Turn a URL, a name or a config mapping into a backend and a serializer.

One path serves ``sitq.connect``, ``TaskQueue("sqlite:///x.db")``, the config
mapping, the ``SITQ_BACKEND`` environment variable and the CLI's
``--backend``. Precedence: an explicit argument, then ``SITQ_BACKEND``, then
:data:`DEFAULT_BACKEND_URL`.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from .backend import Backend
from .errors import (
    ConfigurationError,
    PluginError,
    SitqError,
    UnknownBackendError,
    ValidationError,
    describe_exception,
    safe_repr,
)
from .plugin_manager import SitqPluginManager
from .plugins import get_plugin_manager
from .serializers import Serializer
from .urls import BackendURL, hidden_options, masked, parse_backend_url, redacted

logger = logging.getLogger("sitq.config")

__all__ = [
    "DEFAULT_BACKEND_URL",
    "DEFAULT_SERIALIZER",
    "SERIALIZER_OPTION",
    "BackendSpec",
    "SerializerSpec",
    "build_serializer",
    "resolve_backend",
    "resolve_serializer",
    "split_config",
    "url_serializer",
]

DEFAULT_BACKEND_URL = "sqlite:///sitq.db"
DEFAULT_SERIALIZER = "cloudpickle"

BackendSpec = Backend | str | Mapping[str, Any]
SerializerSpec = Serializer | type[Serializer] | str | None


#: The URL query option that chooses the serializer, as a config mapping's ``serializer`` key does.
SERIALIZER_OPTION = "serializer"


def split_config(spec: BackendSpec | None) -> tuple[Backend | str | None, dict[str, Any], Any]:
    """Split a spec into (backend name/URL/instance, backend options, serializer).

    The serializer is a config mapping's ``serializer`` key, or a URL's
    ``?serializer=`` option (the URL given, or, for None, the one in
    ``SITQ_BACKEND``); a mapping giving it both ways, differently, is refused.
    """
    if spec is None:
        from_env = os.environ.get("SITQ_BACKEND")
        in_env = url_serializer(from_env) if from_env else None
        return None, {}, _FromVariable(in_env) if in_env is not None else None
    if isinstance(spec, str):
        return spec, {}, url_serializer(spec)
    if isinstance(spec, Backend):
        return spec, {}, None
    if isinstance(spec, Mapping):
        options = dict(spec)
        serializer = options.pop("serializer", None)
        target = options.pop("backend", None)
        url = options.pop("url", None)
        if target is not None and url is not None:
            raise ConfigurationError(
                "give either 'backend' or 'url' in the config, not both", parameter="url", value=redacted("url", url)
            )
        target = target if target is not None else url
        if target is None:
            raise ConfigurationError(
                "the config mapping needs a 'backend' key (a backend name or URL)",
                parameter="backend",
                value=None,
                valid_options=_installed_backend_names(),
            )
        in_url = url_serializer(target) if isinstance(target, str) else None
        if in_url is not None and serializer is not None and in_url != serializer:
            raise ConfigurationError(
                f"the config mapping gives the serializer twice, differently: {safe_repr(serializer)} as its "
                f"'serializer' key and {in_url!r} as its URL's ?serializer= option; keep one",
                parameter="serializer",
                value=serializer,
            )
        return target, options, serializer if serializer is not None else in_url
    raise ValidationError(
        f"backend must be a Backend, a URL or name string, or a config mapping; got {type(spec).__name__}",
        parameter="backend",
        value=redacted("backend", spec),  # bytes of a URL may hold its password
    )


class _FromVariable(str):
    """A serializer name read from the ``SITQ_BACKEND`` URL: an error about it says so, as one about the URL does."""

    __slots__ = ()


#: what an error caused by the ``SITQ_BACKEND`` value ends with
FROM_VARIABLE = " (from the SITQ_BACKEND environment variable)"


def _told_from_variable(exc: SitqError) -> SitqError:
    """``exc`` saying that the ``SITQ_BACKEND`` value caused it (a copy: a broken plugin's error is a cached object)."""
    told = copy.copy(exc)
    told.message = f"{exc.message}{FROM_VARIABLE}"
    told.args = (told.message, *exc.args[1:])
    return told


def url_serializer(text: str) -> str | None:
    """The ``?serializer=`` option of the backend URL ``text``, or None (none given, or not a URL).

    A URL that does not parse has none here: building its backend raises the
    error. Nor has a URL whose ``serializer`` option may be a piece of a
    password (one after a secret option, or in a URL whose password may run
    past its host part, :func:`hidden_options`): it is left to the backend,
    whose refusal of it does not name it.
    """
    if "://" not in text:
        return None
    hidden = hidden_options(text)
    if hidden is None or SERIALIZER_OPTION in hidden:
        return None
    try:
        return parse_backend_url(text).query.get(SERIALIZER_OPTION)
    except SitqError:
        return None


def _installed_backend_names() -> list[str]:
    manager = get_plugin_manager()
    manager.collect()
    manager.backends.try_loads()  # a backend installed without its driver is not offered
    return manager.backends.usable_names()


def resolve_backend(spec: BackendSpec | None = None, **options: Any) -> Backend:
    """Build a backend from an instance, a URL, a registered name or a config mapping.

    ``None`` reads ``SITQ_BACKEND``, then falls back to ``DEFAULT_BACKEND_URL``.
    Keyword options are merged into the mapping's options (they win).
    """
    target, config_options, _serializer = split_config(spec)
    config_options.update(options)
    if target is None:
        from_env = os.environ.get("SITQ_BACKEND")
        if from_env is not None and not from_env.strip():  # set from an unset shell variable: not "the default"
            raise ConfigurationError(
                "the SITQ_BACKEND environment variable is set but empty: give it a URL or backend name, or unset "
                f"it to use the default {DEFAULT_BACKEND_URL}",
                parameter="SITQ_BACKEND",
                value=from_env,
            )
        target = from_env or DEFAULT_BACKEND_URL
        if target == DEFAULT_BACKEND_URL and "path" in config_options:  # connect(path="app.db"): the default
            target = DEFAULT_BACKEND_URL.partition("://")[0]  # backend by name, with the caller's file
        if from_env:
            try:
                return _build_backend(target, config_options)
            except SitqError as exc:  # the caller passed nothing: say where the bad value came from
                raise _told_from_variable(exc) from exc.__cause__
    return _build_backend(target, config_options)


def _build_backend(target: Any, config_options: dict[str, Any]) -> Backend:
    """``resolve_backend`` once the target (a backend, URL or name) is known."""
    if isinstance(target, Backend):
        if config_options:
            raise ConfigurationError(
                "options cannot be applied to an already built backend",
                parameter=next(iter(config_options)),
                value={key: redacted(key, value) for key, value in config_options.items()},
            )
        return target
    if not isinstance(target, str) or not target.strip():
        shown = redacted("backend", target)
        raise ValidationError(
            f"backend name or URL must be a non-empty string, got {safe_repr(shown)}", parameter="backend", value=shown
        )
    manager = get_plugin_manager()
    if "://" in target:
        url = parse_backend_url(target)
        if url_serializer(target) is not None:  # the queue's or worker's (split_config), not the backend's
            url = replace(url, query={k: v for k, v in url.query.items() if k != SERIALIZER_OPTION})
        if config_options:  # config keys beside a URL act like extra query options
            url = replace(url, query={**url.query, **config_options})
        if not _has(manager, url.name) and url.driver and _has(manager, url.scheme):
            _refuse_driver(manager, url, target)
        name = url.name if _has(manager, url.name) else url.scheme
        cls = _scheme_class(manager, name, target.strip().partition("://")[0])
        return _from_url(cls, url, target)
    text = target.strip()
    name = text.lower()
    cls = manager.backend_class(name) if _has(manager, name) else _unknown_name(manager, text)
    return cls.from_config(config_options)


#: A libpq connection string: ``key=value`` pairs (``host=db dbname=app user=app password=...``).
_LIBPQ_PAIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def _unknown_name(manager: SitqPluginManager, text: str) -> type[Backend]:
    """Raise the error for ``text`` (stripped), given where a backend name goes and registered by no plugin.

    The text is shown as given (not lower-cased) and masked (:func:`masked`):
    text that is not a name may be a connection string holding a password.
    Only a name that a disabled or absent plugin provides yields a class
    here (never; kept for the type checker): that path raises too.
    """
    name = text.lower()
    shown = masked(text)
    if _LIBPQ_PAIR.match(text):  # no registered name holds '=': a libpq connection string
        raise ConfigurationError(
            f"backend {shown!r} is a libpq connection string (key=value pairs), neither a backend name nor a "
            "URL: give it as the postgres backend's dsn option, in a config mapping {'backend': 'postgres', "
            "'dsn': '...'} (or sitq.connect('postgres', dsn='...')), or write it as a URL: "
            "postgresql://user:password@host:port/dbname",
            parameter="backend",
            value=shown,
        )
    if "@" in name and ":" in name:  # no registered name holds '@': a URL gone wrong
        raise ConfigurationError(
            f"backend {shown!r} is neither a backend name nor a URL: a URL starts with its scheme and '://' "
            "(postgresql://user:password@host/db)",
            parameter="backend",
            value=shown,
        )
    # a SQLite path where a URL or name goes: "did you mean 'sqlite'" would only half help
    if text == ":memory:":
        hint = (
            "An in-memory SQLite database is the URL 'sqlite://' (or 'sqlite:///:memory:', "
            "or SQLiteBackend(':memory:'))."
        )
    elif _looks_like_a_file(text):
        # '%' and '?' as they are would name another file (a%20b.db is 'a b.db'; what?.db is 'what')
        url = "sqlite:///" + text.replace("%", "%25").replace("?", "%3F")
        hint = f"A SQLite file is given as a URL: {url!r} (or SQLiteBackend({text!r}))."
    else:
        hint = ""
    if hint:
        error = manager.backends.unknown(name)
        raise type(error)(
            f"{error.message.partition(' Did you mean')[0].replace(repr(name), repr(shown), 1)} {hint}",
            parameter="backend",
            value=shown,
            valid_options=getattr(error, "valid_options", None),
        )
    return _class_shown_as(manager, name, shown)


def _scheme_class(manager: SitqPluginManager, name: str, given: str) -> type[Backend]:
    """The backend class of the URL scheme ``name`` (lower-cased), which the URL wrote as ``given``.

    An unknown scheme is shown as written (``no backend named 'Redis'``), as
    an unknown name given alone is: matching is case-insensitive, the error
    repeats what the user typed.
    """
    if "+" not in name:  # the driver did not count: 'Sqlit+foo://' is the unknown scheme 'Sqlit'
        given = given.partition("+")[0]
    return _class_shown_as(manager, name, masked(given))


def _class_shown_as(manager: SitqPluginManager, name: str, shown: str) -> type[Backend]:
    """The backend class of ``name`` (lower-cased); an unknown one is refused quoting ``shown``, as written."""
    try:
        return manager.backend_class(name)
    except UnknownBackendError as exc:
        if type(exc) is not UnknownBackendError or exc.value != name or shown == name:
            raise
        refused = exc
    # raised outside the handler: the refusal, which quotes the text lower-cased and unmasked, is not kept
    raise UnknownBackendError(
        refused.message.replace(repr(name), repr(shown), 1),
        parameter="backend",
        value=shown,
        valid_options=refused.valid_options,
    )


def _refuse_driver(manager: SitqPluginManager, url: BackendURL, target: str) -> None:
    """Refuse ``scheme+driver://`` when the backend of ``scheme`` registers no such scheme.

    ``sqlite+pysqlite://`` used to open the file as ``sqlite://`` does, as if
    the suffix chose something: the URL schemes a backend registers are the
    ones it accepts (``sqlite+aiosqlite``, ``postgresql+asyncpg``).
    """
    entry = manager.backends.entry(url.scheme)
    assert entry is not None  # checked by the caller
    accepted = [entry.name, *entry.aliases]
    shown = masked(target.strip())
    raise ConfigurationError(
        f"backend URL {shown!r}: backend {entry.name!r} has no driver {url.driver!r}; the URL schemes it "
        f"accepts are {', '.join(accepted)}",
        parameter="url",
        value=shown,
        valid_options=accepted,
    )


def _from_url(cls: type[Backend], url: BackendURL, target: str) -> Backend:
    """``cls.from_url(url)``; an error that may quote a piece of the password is replaced by one that does not.

    When a password holds an unescaped ``/``, ``?``, ``&`` or ``=``, the URL
    parser reads the rest of it as the path or as options, which the backend
    then refuses by name and value ("unknown option 'dor'"). Such an error,
    about an option that ``masked(target)`` hides, or about any part of a
    URL whose password may run past its host part, says what to fix instead.
    The replacement is raised outside the handler: the original is not kept
    in its chain either.
    """
    try:
        return cls.from_url(url)
    except (ConfigurationError, ValidationError) as exc:
        refused = exc
    hidden = hidden_options(target)
    if hidden is not None and refused.parameter not in hidden:
        raise refused
    shown = masked(target)
    backend = cls.name or cls.__name__
    if hidden is None:
        what = (
            f"backend {backend!r} refused the URL {shown!r}; the reason is not shown, since the URL has an '@' after "
            "its host part, so any part of it before that '@' may be its password"
        )
    else:
        what = (
            f"backend {backend!r} refused an option of the URL {shown!r}, which is not named here, since it "
            "comes after a secret option and may be a piece of its value"
        )
    advice = (
        ". Percent-encode '/', '?', '@', '&', '=' and '#' in a password (%2F, %3F, %40, %26, %3D, %23), and an "
        "'@' in the path or query (%40)"
    )
    error_type = ValidationError if isinstance(refused, ValidationError) else ConfigurationError
    raise error_type(what + advice, parameter="url", value=shown)


def _looks_like_a_file(text: str) -> bool:
    """A file path or name (``data/Tasks.db``, ``tasks.sqlite3``, ``C:\\q.db``), not a backend name or host."""
    if re.match(r"^[A-Za-z]:[\\/]", text):  # a Windows drive
        return True
    if ":" in text:  # 'sqlite:tasks.db' is a URL gone wrong, not a path
        return False
    return "/" in text or "\\" in text or bool(re.search(r"\.(db|db3|sqlite|sqlite3)$", text, re.IGNORECASE))


def _has(manager: SitqPluginManager, name: str) -> bool:
    manager.collect()
    return manager.backends.entry(name) is not None


def resolve_serializer(spec: SerializerSpec = None) -> Serializer:
    """A serializer from an instance, a registered name, or None (the default, cloudpickle)."""
    if isinstance(spec, _FromVariable):  # the SITQ_BACKEND URL's ?serializer= (split_config(None))
        try:
            return resolve_serializer(str(spec))
        except SitqError as exc:
            raise _told_from_variable(exc) from exc.__cause__
    if spec is None:
        spec = DEFAULT_SERIALIZER
    if isinstance(spec, Serializer):
        return _named(spec)
    if isinstance(spec, type) and issubclass(spec, Serializer):
        return _named(spec())
    if not isinstance(spec, str) or not spec:
        raise ValidationError(
            f"serializer must be a Serializer instance or a registered name such as 'cloudpickle' "
            f"or 'msgpack', got {safe_repr(spec)}",
            parameter="serializer",
            value=spec,
        )
    registered = spec.strip().lower()
    return named_as_registered(build_serializer(get_plugin_manager(), registered), registered)


def build_serializer(manager: SitqPluginManager, name: str, **options: Any) -> Serializer:
    """The serializer registered as ``name`` (lower case) in ``manager``, built with ``options`` (none: by name).

    A class that cannot be built so (an ``__init__`` that needs an argument,
    or one that raises something other than a sitq error) is a mistake of the
    plugin that registered it: a ``PluginError`` naming the serializer, that
    plugin and the cause (chained) says so, instead of a bare ``TypeError``.
    A sitq error its ``__init__`` raises (msgpack's "needs the msgpack
    package") is already said in sitq's words and goes out as it is.
    """
    cls: Any = manager.serializer_class(name)
    try:
        return cast("Serializer", cls(**options))
    except SitqError:
        raise
    except Exception as exc:
        failure = exc
    entry = manager.serializers.entry(name)
    by = _registered_by(entry.provider if entry is not None else None)
    with_what = f"with {', '.join(options)}" if options else "with no arguments"
    try:
        inspect.signature(cls).bind(**options)
        unbuildable = False
    except TypeError:
        unbuildable = True
    except ValueError:  # no signature to read (a builtin's __init__)
        unbuildable = False
    if unbuildable:
        what = (
            f"serializer {name!r}{by} cannot be built {with_what}, as sitq builds a serializer chosen by name "
            f"({describe_exception(failure)}): give each parameter of its __init__ a default"
        )
    else:
        what = f"serializer {name!r}{by} failed when built {with_what}: {describe_exception(failure)}"
    raise PluginError(what, parameter="serializer", value=name, cause=failure) from failure


def _registered_by(provider: Any) -> str:
    """``", registered by the plugin 'acme' (acme-ser 1.0),"``: who registered a name, for an error's sentence."""
    if provider is None:
        return ""
    if provider.builtin:
        return ", one of sitq-core's own,"
    where = f" ({provider})" if provider.dist is not None else ""
    return f", registered by the plugin {provider.plugin!r}{where},"


def _named(serializer: Serializer) -> Serializer:
    """``serializer``, checked for a name to store with its tasks (a worker finds the serializer by it).

    A name that is not a str is refused (ValidationError naming ``serializer``).
    An empty one (a subclass that kept the base class's "") still works with a
    worker given the same serializer, as it always did, so it is only warned
    about: a worker that looks serializers up by name cannot read those tasks.
    """
    name = getattr(serializer, "name", None)
    kind = type(serializer).__name__
    if not isinstance(name, str):
        raise ValidationError(
            f"serializer {kind} has a name that is not a str (name = {name!r}): give the class a non-empty "
            f"str name, such as name = {kind.lower()!r}; it is stored with each task so that a worker finds "
            "the serializer that wrote it",
            parameter="serializer",
            value=serializer,
        )
    if not name.strip() and kind not in _warned_unnamed:
        _warned_unnamed.add(kind)
        logger.warning(
            "serializer %s has no name: its tasks are stored with serializer '' and only a worker given this "
            "same serializer can run them; give the class a name, such as name = %r",
            kind,
            kind.lower(),
        )
    return serializer


_warned_unnamed: set[str] = set()


def named_as_registered(serializer: Serializer, registered: str) -> Serializer:
    """``serializer``, carrying a ``name`` that workers can look up again.

    Tasks record the ``name`` of the serializer that wrote them, and workers
    find the serializer by it. A plugin class whose ``name`` differs from the
    name it was registered under (a typo, or none set) would make every task
    it writes unreadable ("not available here"), so the registered name is
    used instead; an alias of another registered serializer keeps its own.
    """
    own = getattr(serializer, "name", None)
    if own == registered:
        return serializer
    manager = get_plugin_manager()
    try:
        same = isinstance(own, str) and bool(own) and manager.serializer_class(own) is type(serializer)
    except SitqError:
        same = False
    if not same:
        try:
            setattr(serializer, "name", registered)  # noqa: B010 - an instance's own name over its class's
        except AttributeError:  # a read-only name: it stays what it is
            logger.warning("serializer %r names itself %r, which no worker can look up", registered, own)
    return serializer
