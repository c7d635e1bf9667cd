"""Plugin discovery, registration and lifecycle notification.

Loading order: built-in plugins first (the serializers), then every entry
point of the ``sitq`` group one at a time, each in its own ``try`` so a
broken plugin is recorded (with its distribution) and the others still load.
Environment switches:

- ``SITQ_LOAD_PLUGINS=a,b``: load only these entry points ("" loads none);
- ``SITQ_DISABLED_PLUGINS=a,b``: never load these;
- ``SITQ_STRICT_PLUGINS=1``: raise on the first broken plugin (CI, tests).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, Literal

import pluggy

from . import hookspecs
from .backend import SPEC_VERSION, Backend
from .errors import (
    BackendNotInstalledError,
    BrokenPluginError,
    PluginError,
    SitqError,
    UnknownBackendError,
    ValidationError,
    describe_exception,
)
from .hook_failures import HookFailureLog, flush_hook_failure_summaries
from .install_hints import install_hint
from .registry import Provider, Registry, RegistryEntry, conflict_text, load_failure_text
from .serializers import Serializer

__all__ = [
    "ENTRY_POINT_GROUP",
    "KNOWN_PLUGINS",
    "PluginRecord",
    "SitqPluginManager",
    "flush_hook_failure_summaries",
]

logger = logging.getLogger("sitq.plugins")

ENTRY_POINT_GROUP = "sitq"
BUILTIN_PLUGINS = ("sitq_core.builtin_plugin",)

#: Names sitq knows about even when their distribution is absent: name -> (dist, extra).
KNOWN_PLUGINS: dict[str, tuple[str, str]] = {
    "sqlite": ("sitq-sqlite", "sitq[sqlite]"),
    "postgres": ("sitq-postgres", "sitq[postgres]"),
    "postgresql": ("sitq-postgres", "sitq[postgres]"),
}

Status = Literal["ok", "broken", "disabled", "conflict"]


@dataclass(slots=True)
class PluginRecord:
    """What ``sitq plugins`` shows for one plugin."""

    name: str
    dist: str | None
    version: str | None
    status: Status
    builtin: bool = False
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    serializers: list[str] = field(default_factory=list)
    disabled_by: str | None = None
    #: the distribution loaded instead of this one, which provides the same entry-point name
    shadowed_by: str | None = None
    #: whether ``error`` came from an exception raised in the plugin's code, so a traceback exists
    has_traceback: bool = False
    #: mistakes that leave the plugin working (it stays ``ok``, strict mode does not raise): fix them all the same
    warnings: list[str] = field(default_factory=list)
    #: registered by a program (``register_plugin``), not loaded from an entry point: no switch turns it off
    in_code: bool = False

    def error_line(self) -> str | None:
        """``error`` on one line (pluggy's validation errors span several), for tables and one-line lists."""
        if self.error is None:
            return None
        return "; ".join(line.strip() for line in self.error.splitlines() if line.strip())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dist": self.dist,
            "version": self.version,
            "status": self.status,
            "builtin": self.builtin,
            "error": self.error,
            "hooks": sorted(self.hooks),
            "backends": sorted(self.backends),
            "serializers": sorted(self.serializers),
            "warnings": list(self.warnings),
        }


_NOT_BUILTIN = PluginRecord("", None, None, "ok")
#: How many disabled plugins of unknown content an unknown-name error names (SITQ_LOAD_PLUGINS="" disables all).
DISABLED_NAMED_IN_ERRORS = 5
#: How many broken plugins an unknown-name error names, with their errors.
BROKEN_NAMED_IN_ERRORS = 5
# (plugin, distribution, message) of every load failure, name clash and warning logged: check_plugin and the listings
# load every installed plugin into managers of their own, each of which would otherwise repeat the others' lines
_logged_failures: set[tuple[str, str | None, str]] = set()
_logged_failures_lock = threading.Lock()


def forget_logged_failures() -> None:
    """Let the next load log every plugin's failure again (``reset_plugin_manager``: a rediscovery)."""
    with _logged_failures_lock:
        _logged_failures.clear()


def _first_time(record: PluginRecord, message: str) -> bool:
    """Whether this plugin's failure, clash or warning ``message`` is new to this process's log (and remember it)."""
    key = (record.name, record.dist, message)
    with _logged_failures_lock:
        if key in _logged_failures:
            return False
        _logged_failures.add(key)
        return True


def _sentence(text: str | None) -> str:
    """``text`` ending with exactly one full stop (or its own '?' / '!')."""
    text = (text or "").rstrip()
    return text if text.endswith((".", "?", "!")) else f"{text}."


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def _warn_unmatched(by_name: dict[str, list[EntryPoint]], allow: list[str] | None, deny: set[str]) -> None:
    """Warn about SITQ_LOAD_PLUGINS / SITQ_DISABLED_PLUGINS items naming no entry point and no distribution."""
    known = set(by_name) | {_dist_key(ep.dist.name) for eps in by_name.values() for ep in eps if ep.dist is not None}
    for variable, items in (("SITQ_LOAD_PLUGINS", allow or []), ("SITQ_DISABLED_PLUGINS", sorted(deny))):
        for item in items:
            if item not in known and _dist_key(item) not in known:
                logger.warning(
                    "%s names %r, which is neither a sitq entry point nor a distribution providing one (installed: %s)",
                    variable,
                    item,
                    ", ".join(sorted(by_name)) or "none",
                )


def _dist_of(ep: EntryPoint) -> tuple[str | None, str | None]:
    """The distribution name and version an entry point comes from."""
    return (ep.dist.name, ep.dist.version) if ep.dist is not None else (None, None)


def strict_plugins() -> bool:
    """Whether ``SITQ_STRICT_PLUGINS`` asks for broken plugins to raise (and show their traceback)."""
    return os.environ.get("SITQ_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


class SitqPluginManager(pluggy.PluginManager):
    """pluggy's manager plus sitq's registries, records and safe notification."""

    def __init__(self, *, load_entrypoints: bool = True, strict: bool | None = None) -> None:
        """``strict``: raise on the first broken plugin; None follows ``SITQ_STRICT_PLUGINS``."""
        super().__init__("sitq")
        self._strict = strict
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.backends: Registry[Backend] = Registry("backend", Backend, _validate_backend)
        self.serializers: Registry[Serializer] = Registry("serializer", Serializer, _validate_serializer)
        self._load_entrypoints = load_entrypoints
        self._loaded = False  # loading has begun (set under _setup_lock)
        self._load_done = False  # loading has finished: the lock-free fast path
        self._collected = False
        self._collect_done = False
        self._setup_lock = threading.RLock()
        self._observer_cache: dict[str, bool] = {}
        self._hook_failures = HookFailureLog()  # observers that raise: first in full, then counted
        self._strict_errors: list[BrokenPluginError] | None = None  # gathered during a load or collect
        self._strict_failure: BrokenPluginError | None = None  # raised again by every later use, in strict mode

    # ---------------------------------------------------------------- loading

    def ensure_loaded(self) -> None:
        """Load built-ins and entry points once (lazily, on first use), safely from any thread.

        Other threads wait until loading has finished; the loading thread itself
        may come back here (a plugin resolving a name) and gets what is loaded so far.
        """
        if self._load_done:
            return
        with self._setup_lock:
            if self._loaded:
                return
            self._loaded = True
            outermost = self._strict_errors is None
            if outermost:
                self._strict_errors = []
            try:
                self._load()
            except BaseException:
                if outermost:
                    self._strict_errors = None  # the real error goes first
                raise
            finally:
                self._load_done = True
            if outermost:
                self._raise_strict_errors()

    def _load(self) -> None:
        for module_name in BUILTIN_PLUGINS:
            module = __import__(module_name, fromlist=["_"])
            self.register(module, name=module_name)
            self.records[module_name] = PluginRecord(
                module_name, "sitq-core", _dist_version("sitq-core"), "ok", builtin=True
            )
        if self._load_entrypoints:
            self.load_entrypoints()
        self.check_hooks()

    def register_plugin(self, plugin: object, name: str, *, dist: str | None = None) -> None:
        """Register a plugin object (module or instance) in code and record it, checked as an entry point is.

        A plugin an entry point would leave ``broken`` (a hook pluggy refuses, a misspelt or
        ``async def`` hook, an unmarked hook and no working one) is refused at once with
        ``BrokenPluginError`` naming the hook and the fix, and nothing of it is registered: a
        program registering in code gets an exception, not a status it never looks at.

        An object registered already is registered once: under the same name again nothing
        happens (a module registering itself at import, imported by two paths); under
        another name, or a name another plugin has, raises ``BrokenPluginError`` saying
        which plugin holds it (pluggy's own ``ValueError`` lists every plugin instead).
        """
        self.ensure_loaded()
        who = f"sitq plugin {name!r} (registered in code)" if dist is None else f"sitq plugin {name!r} from {dist}"
        if self.is_registered(plugin) and self.get_name(plugin) == name:
            logger.debug("%s is registered already under that name; nothing to do", who)
            return
        clash = self._registered_already(plugin, name)
        if clash is not None:
            raise BrokenPluginError(f"{who} was refused: {clash}", parameter="plugin", value=name)
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a parameter the hook does not have
            if self.is_registered(plugin):
                self.unregister(plugin)
            raise BrokenPluginError(
                f"{who} was refused: {describe_exception(exc)}", parameter="plugin", value=name, cause=exc
            ) from exc
        problems, warnings = self._hook_problems(plugin)
        if problems:
            self.unregister(plugin)
            raise BrokenPluginError(f"{who} was refused: {'; '.join(problems)}", parameter="plugin", value=name)
        record = PluginRecord(name, dist, _dist_version(dist) if dist else None, "ok", in_code=True)
        self.records[name] = record
        for warning in warnings:
            self._warn(record, warning)
        self._reset_registrations()

    def _registered_already(self, plugin: object, name: str) -> str | None:
        """Why pluggy would refuse ``plugin`` under ``name`` as registered already, said plainly; None if not."""
        if self.is_registered(plugin):
            held = self.get_name(plugin)
            record = self.records.get(held or "")
            if record is not None and not record.in_code and not record.builtin and record.dist is not None:
                how = "leave out this registration: the entry point registers it already"
            else:
                how = f"leave out this registration, or unregister_plugin({held!r}) first"
            return (
                f"{_object_text(plugin)} is already {self._holder_text(held)}; a plugin object is registered "
                f"once, so that its hooks run once: {how}"
            )
        other = self.get_plugin(name)
        if other is not None:
            holder = self._holder_text(name)
            return f"the name {name!r} is taken by {_object_text(other)}, {holder}: choose another name"
        return None

    def _holder_text(self, name: str | None) -> str:
        """``"loaded from entry point 'metrics' (acme-metrics 1.0)"``: how a registered plugin got its name."""
        record = self.records.get(name or "")
        if record is None or record.in_code or record.dist is None:
            return f"registered in code as plugin {name!r}"
        if record.builtin:
            return f"built into {_dist_text(record)} as plugin {name!r}"
        return f"loaded from entry point {_entry_point(record)!r} ({_dist_text(record)})"

    def unregister_plugin(self, name: str) -> None:
        """Undo ``register_plugin``."""
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.records.pop(name, None)
        self._reset_registrations()

    def load_entrypoints(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load each entry point of ``group`` on its own, recording every outcome.

        ``SITQ_DISABLED_PLUGINS`` and ``SITQ_LOAD_PLUGINS`` apply first, so an
        entry-point name that two distributions provide can be settled by
        naming the distribution to leave out (``SITQ_DISABLED_PLUGINS=<distribution>``,
        which leaves every other plugin loading).
        """
        allow = _env_list("SITQ_LOAD_PLUGINS")
        deny = set(_env_list("SITQ_DISABLED_PLUGINS") or [])
        by_name: dict[str, list[EntryPoint]] = {}
        # By entry-point name, then by distribution name: of two distributions providing one entry-point
        # name, the one whose name sorts first loads, wherever each is installed (importlib.metadata's own
        # order is sys.path's, then a directory listing's, which differs between machines).
        for ep in sorted(entry_points(group=group), key=lambda e: (e.name, _dist_key(_dist_of(e)[0] or ""))):
            same_name = by_name.setdefault(ep.name, [])
            dist = ep.dist.name if ep.dist is not None else None
            if all((other.dist.name if other.dist is not None else None) != dist for other in same_name):
                same_name.append(ep)  # the same distribution seen twice on sys.path counts once
        # Both lists take entry-point names or distribution names (PEP 503 spelling differences allowed).
        allowed_dists = {_dist_key(item) for item in allow or ()}
        denied_dists = {_dist_key(item) for item in deny}
        _warn_unmatched(by_name, allow, deny)
        loaded: list[PluginRecord] = []
        for name, candidates in by_name.items():
            passed_over: list[tuple[EntryPoint, str]] = []  # other providers of this name left out by a switch
            if allow is not None and name not in allow:
                chosen = [ep for ep in candidates if ep.dist is not None and _dist_key(ep.dist.name) in allowed_dists]
                passed_over += [(ep, "SITQ_LOAD_PLUGINS") for ep in candidates if ep not in chosen]
                candidates = chosen
            if denied_dists and name not in deny:
                kept = [ep for ep in candidates if ep.dist is None or _dist_key(ep.dist.name) not in denied_dists]
                if candidates and not kept:
                    deny.add(name)  # every provider of this entry point is a denied distribution
                passed_over += [(ep, "SITQ_DISABLED_PLUGINS") for ep in candidates if ep not in kept]
                candidates = kept or candidates
            first = candidates[0] if candidates else by_name[name][0]
            record = PluginRecord(name, *_dist_of(first), "ok")
            self.records[name] = record
            if candidates and name not in deny:
                for ep, switch in passed_over:  # listed as disabled, as a lone provider would be
                    dist, version = _dist_of(ep)
                    label = f"{name} ({dist})"
                    self.records[label] = PluginRecord(label, dist, version, "disabled", disabled_by=switch)
            if name in deny:
                record.status, record.disabled_by = "disabled", "SITQ_DISABLED_PLUGINS"
                self.set_blocked(name)
                continue
            if not candidates:
                record.status, record.disabled_by = "disabled", "SITQ_LOAD_PLUGINS"
                continue
            for other in candidates[1:]:
                dist, version = _dist_of(other)
                message = (
                    f"entry point {name!r} is provided by both {record.dist} and {dist}; only {record.dist} was "
                    f"loaded. Uninstall one, or leave one out: SITQ_DISABLED_PLUGINS={dist} keeps {record.dist}, "
                    f"SITQ_DISABLED_PLUGINS={record.dist} loads {dist} instead"
                )
                shadowed = PluginRecord(f"{name} ({dist})", dist, version, "broken", shadowed_by=record.dist)
                self._broken(shadowed, message, None)
            self._load_one(first, record)
            loaded.append(record)
        if loaded:
            logger.debug(
                "loaded sitq plugins: %s",
                ", ".join(f"{r.dist}-{r.version} ({r.name})" for r in loaded if r.status == "ok"),
            )

    def _load_one(self, ep: EntryPoint, record: PluginRecord) -> None:
        try:
            plugin = ep.load()
        except Exception as exc:
            self._broken(record, f"{describe_exception(exc)}", exc)
            return
        try:
            self.register(plugin, name=ep.name)
        except Exception as exc:  # pluggy validation error, duplicate registration
            if self.is_registered(plugin):
                self.unregister(plugin)
            self._broken(record, f"{describe_exception(exc)}", exc)
            return
        # checked now, not after every entry point has loaded: strict mode finds broken plugins in name order
        self._check_plugin_hooks(ep.name, plugin)

    def _broken(self, record: PluginRecord, message: str, exc: BaseException | None) -> None:
        record.status, record.error, record.has_traceback = "broken", message, exc is not None
        self.records[record.name] = record
        self._observer_cache.clear()  # its observation hooks are no longer called
        if _first_time(record, message):  # once per process, however many managers load it
            logger.warning("sitq plugin %s failed to load: %s", _who(record), message)
            if exc is not None:
                logger.debug("traceback of plugin %s", record.name, exc_info=exc)
        else:
            logger.debug("sitq plugin %s failed to load again (logged before): %s", _who(record), message)
        if self._is_strict():
            origin = f"from {record.dist}" if record.dist is not None else "(registered in code)"
            error = BrokenPluginError(
                f"sitq plugin {record.name!r} {origin} failed to load: {message}",
                parameter="plugin",
                value=record.name,
                cause=exc,
            )
            if self._strict_errors is None:
                raise self._first_strict_failure(error)
            # while loading or collecting: the other plugins still load, then the first error is raised,
            # so the process is not left with half a registry (sitq-sqlite "not installed")
            self._strict_errors.append(error)

    def _warn(self, record: PluginRecord, message: str, *, strict_refuses: bool = False) -> None:
        """Record and log a mistake that leaves the plugin working: it stays ``ok``.

        Strict mode does not raise for it, unless ``strict_refuses``: a plugin that does
        nothing at all works, but is almost surely not what its author meant to install.
        """
        if message in record.warnings:
            return  # check_hooks and collect may run again; one line per mistake
        record.warnings.append(message)
        if _first_time(record, message):  # once per process, however many managers load the plugin
            logger.warning("sitq plugin %s: %s", _who(record), message)
        if strict_refuses and self._is_strict():
            origin = f"from {record.dist}" if record.dist is not None else "(registered in code)"
            error = BrokenPluginError(
                f"sitq plugin {record.name!r} {origin} is refused in strict mode: {message}",
                parameter="plugin",
                value=record.name,
            )
            if self._strict_errors is None:
                raise self._first_strict_failure(error)
            self._strict_errors.append(error)

    def _raise_strict_errors(self) -> None:
        errors, self._strict_errors = self._strict_errors, None
        if errors:
            raise self._first_strict_failure(errors[0])

    def _first_strict_failure(self, error: BrokenPluginError) -> BrokenPluginError:
        """The error to raise in strict mode now that ``error`` was found: the process's first broken plugin's.

        Loading finds plugins that fail to import (in entry-point name order) before
        registering finds those whose registrations fail; a later find must not
        take the first one's place, or the same lookup names a different culprit
        each time it is tried. A fresh copy each time, as later lookups get.
        """
        failure = self._strict_failure
        if failure is None or failure.context.get("value") not in self.records:  # none yet, or it was unregistered
            self._strict_failure = failure = error
        return BrokenPluginError(
            failure.message, parameter="plugin", value=failure.context.get("value"), cause=failure.cause
        )

    def _is_strict(self) -> bool:
        return self._strict if self._strict is not None else strict_plugins()

    def _raise_again_if_strict(self) -> None:
        """Strict mode stays strict: every later lookup of a backend or serializer fails too, not only the
        first (a fresh error each time), while the broken plugin is still there. Observation hooks go on."""
        failure = self._strict_failure
        if failure is not None and failure.context.get("value") not in self.records:
            self._strict_failure = failure = None  # that plugin was unregistered since
        if failure is not None and self._is_strict():
            raise self._first_strict_failure(failure)

    def check_hooks(self) -> None:
        """Record plugins whose hooks sitq would never call as meant, before any is called.

        An unknown hook name (a typo, usually; a marked impl is known by its
        ``specname=`` if it has one, and one marked ``optionalhook=True`` may
        name a hook of a newer sitq-core) and an ``async def`` hook (sitq
        never awaits one) mark the plugin broken. A ``sitq_*`` function
        without the ``hookimpl`` marker (pluggy skips it without a word) does
        too when the plugin has no working hook at all; beside working hooks
        it may be a deliberate default, so it is a warning.
        """
        for name in list(self.records):
            plugin = self.get_plugin(name)
            if plugin is not None:
                self._check_plugin_hooks(name, plugin)

    def _check_plugin_hooks(self, name: str, plugin: object) -> None:
        """``check_hooks`` for one registered plugin: a broken one is unregistered, so none of its hooks is called.

        An entry point whose object has no ``sitq_*`` function at all (it names the
        package, ``sitq_jsonq``, not its module with the hooks, ``sitq_jsonq.plugin``)
        is a warning: nothing in it is broken, it just does nothing; strict mode refuses it.
        """
        problems, warnings = self._hook_problems(plugin)
        if problems:
            self.unregister(plugin)  # first: strict mode raises in _broken
            self._broken(self.records[name], "; ".join(problems), None)
        for warning in warnings:
            self._warn(self.records[name], warning)
        record = self.records[name]
        if not problems and not record.builtin and not record.in_code and self._implements_no_hook(plugin):
            self._warn(record, no_hooks_text(plugin), strict_refuses=True)

    def _implements_no_hook(self, plugin: object) -> bool:
        """Whether ``plugin`` has no hook implementation and no function named like a hook."""
        if any(attribute.startswith("sitq_") for attribute, _value in _own_functions(plugin)):
            return False
        return all(self.parse_hookimpl_opts(plugin, attribute) is None for attribute in dir(plugin))

    def _hook_problems(self, plugin: object) -> tuple[list[str], list[str]]:
        """What is wrong with a plugin's hooks: (problems that break it, warnings that leave it working).

        Unmarked functions are looked for only among the plugin's own attributes
        (a module's, a class's own ``__dict__``, an instance's and its class's
        own): a class inheriting no-op ``sitq_*`` defaults from a library base
        and marking the ones it uses is right, and pluggy calls only marked ones. Marked
        ones are found as pluggy's ``register`` finds them, so a plugin need not be registered.
        """
        known = [name for name in dir(hookspecs) if name.startswith("sitq_")]
        marked: list[tuple[str, Callable[..., object], bool]] = []  # (hook it implements, function, optional)
        for attribute in dir(plugin):
            options = self.parse_hookimpl_opts(plugin, attribute)
            if options is not None:
                hook_name = options.get("specname") or attribute
                marked.append((hook_name, getattr(plugin, attribute), bool(options.get("optionalhook"))))
        problems: list[str] = []
        unmarked: list[str] = []
        for attribute, value in _own_functions(plugin):
            if not attribute.startswith("sitq_") or self.parse_hookimpl_opts(plugin, attribute) is not None:
                continue
            if attribute not in known:
                guess = difflib.get_close_matches(attribute, known, n=1)
                hint = f"; did you mean {guess[0]}?" if guess else ""
                problems.append(f"unknown hook {attribute}{hint}")
            elif value is not getattr(hookspecs, attribute):
                unmarked.append(
                    f"{attribute} is not marked as a hook, so sitq never calls it: decorate it with "
                    "@sitq_core.hookimpl (also sitq.hookimpl)"
                )
        # marked ones (inherited too: pluggy registers them all), by the hook each implements: specname= if given
        working = False
        for hook_name, function, optional in sorted(marked, key=lambda found: found[0]):
            if hook_name in known:
                working = True
                if _is_async(function):
                    problems.append(_ASYNC_HOOK.format(hook=hook_name))
            elif optional:  # pluggy's way for one plugin to serve several sitq-core versions
                logger.debug(
                    "sitq plugin %s: optional hook %s is not a hook of this sitq-core, so it is never called",
                    self.get_name(plugin) or plugin,
                    hook_name,
                )
            else:
                guess = difflib.get_close_matches(hook_name, known, n=1)
                hint = f"; did you mean {guess[0]}?" if guess else ""
                problems.append(f"unknown hook {hook_name}{hint}")
        if working and not problems:
            return problems, unmarked
        return problems + unmarked, []

    # ------------------------------------------------------------ registration

    def _reset_registrations(self) -> None:
        with self._setup_lock:
            self._collected = self._collect_done = False
        self._observer_cache.clear()
        self.backends = Registry("backend", Backend, _validate_backend)
        self.serializers = Registry("serializer", Serializer, _validate_serializer)
        for record in self.records.values():
            record.backends.clear()
            record.serializers.clear()
            if record.status == "conflict":  # recomputed by the next collect()
                record.status, record.error = "ok", None

    def collect(self) -> None:
        """Call the registration hooks once, attributing each name to its plugin (thread-safe like loading)."""
        self.ensure_loaded()
        if self._collect_done:
            return
        with self._setup_lock:
            if self._collected:
                return
            self._collected = True
            outermost = self._strict_errors is None  # a plugin's import may collect() while loading goes on
            if outermost:
                self._strict_errors = []
            try:
                self._collect()
            except BaseException:
                if outermost:
                    self._strict_errors = None  # the real error goes first
                raise
            finally:
                self._collect_done = True
            if outermost:
                self._raise_strict_errors()

    def _collect(self) -> None:
        for impl in self._builtins_first(self.hook.sitq_register_backends.get_hookimpls()):
            provider = self._provider(impl.plugin_name)
            record = self.records.get(impl.plugin_name)

            def register_backend(
                name: str,
                backend: type[Backend] | str,
                *,
                url_schemes: tuple[str, ...] = (),
                description: str = "",
                _provider: Provider = provider,
                _record: PluginRecord | None = record,
            ) -> None:
                url_schemes = _url_schemes(name, url_schemes)
                if _record is not None and name in _record.backends:
                    again = (backend, url_schemes, description)
                    self._registered_twice(_record, "backend", name, self.backends.registration(name, _provider), again)
                    return
                added = self.backends.add(name, backend, _provider, description=description, aliases=url_schemes)
                if _record is not None and added:
                    _record.backends.append(name)
                    self._broken_registration(_record, self.backends.registration(name, _provider))

            self._call_registration(impl, register_backend, "backend")
        for impl in self._builtins_first(self.hook.sitq_register_serializers.get_hookimpls()):
            provider = self._provider(impl.plugin_name)
            record = self.records.get(impl.plugin_name)

            def register_serializer(
                name: str,
                serializer: type[Serializer] | str,
                *,
                description: str = "",
                _provider: Provider = provider,
                _record: PluginRecord | None = record,
            ) -> None:
                if _record is not None and name in _record.serializers:
                    again = (serializer, (), description)
                    self._registered_twice(
                        _record, "serializer", name, self.serializers.registration(name, _provider), again
                    )
                    return
                added = self.serializers.add(name, serializer, _provider, description=description)
                if _record is not None and added:
                    _record.serializers.append(name)
                    self._broken_registration(_record, self.serializers.registration(name, _provider))

            self._call_registration(impl, register_serializer, "serializer")
        self._record_clashes()
        for name, record in self.records.items():
            plugin = self.get_plugin(name)
            if plugin is not None:
                callers = self.get_hookcallers(plugin) or []
                # not an optional hook this sitq-core does not have: it is never called
                record.hooks = sorted(caller.name for caller in callers if caller.has_spec())

    def _builtins_first(self, impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
        """Built-in registrations run first, so a built-in name can never be taken over."""
        return sorted(impls, key=lambda impl: not self.records.get(impl.plugin_name, _NOT_BUILTIN).builtin)

    def _record_clashes(self) -> None:
        """Mark the plugins whose names clash, so ``sitq plugins`` shows it before anyone uses the name."""
        for registry in (self.backends, self.serializers):
            said: set[tuple[str, frozenset[tuple[str, str]]]] = set()  # clashes already told, from either side
            for entry in registry.all_entries():
                for provider in entry.ignored:
                    self._mark_conflict(
                        provider.plugin,
                        f"{registry.kind} {entry.name!r} is built into sitq-core; this plugin's registration "
                        "of it is ignored",
                    )
                # A clash is over one name or URL scheme, kept on every entry answering to it: told once, and
                # only to the plugins answering to it (an entry clashing with two others over two schemes is
                # two clashes, each with its own advice).
                for key in dict.fromkeys(clash.key for clash in entry.conflicts):
                    clashes = entry.clashes_over(key)
                    sides = frozenset(
                        {(entry.provider.plugin, entry.name), *((c.other.plugin, c.other_name) for c in clashes)}
                    )
                    if (key, sides) in said:
                        continue
                    said.add((key, sides))
                    message = conflict_text(registry.kind, entry, key)
                    for provider in (entry.provider, *(clash.other for clash in clashes)):
                        self._mark_conflict(provider.plugin, message)

    def _mark_conflict(self, plugin_name: str, message: str) -> None:
        record = self.records.get(plugin_name)
        if record is None or record.builtin:
            return
        if record.error is not None and message in record.error:
            return
        if record.status != "broken":  # a broken plugin stays broken; the clash is added to its error
            record.status = "conflict"
        record.error = message if record.error is None else f"{record.error}; {message}"
        if _first_time(record, message):  # once per process, however many managers find the clash
            logger.warning("sitq plugin %s: %s", _who(record), message)

    def _registered_twice(
        self,
        record: PluginRecord,
        kind: str,
        name: str,
        first: RegistryEntry[Any] | None,
        again: tuple[object, tuple[str, ...], str],
    ) -> None:
        """One plugin registering ``name`` again (``again``: target, url_schemes, description): the first stays.

        Any difference makes the plugin broken (which one it meant is a guess, so strict mode
        raises; the second's URL schemes would be dropped), though the first stays usable; the
        same registration again is only a warning. Targets are compared as written (imports are
        lazy): one class under two import paths differs.
        """
        target, schemes, description = again
        path = target if isinstance(target, str) else f"{getattr(target, '__module__', '?')}:{_qualname(target)}"
        differences = []
        if first is None or path != first.target_path:
            differences.append(f"as {first.target_path if first else ''!r} and then as {path!r}")
        if first is not None and sorted(schemes) != sorted(first.aliases):
            differences.append(f"with url_schemes {first.aliases!r} and then {schemes!r}")
        if first is not None and description != first.description:
            differences.append(f"with description {first.description!r} and then {description!r}")
        if not differences:
            self._warn(
                record, f"{kind} {name!r} is registered twice by this plugin, the same way: register each name once"
            )
            return
        message = (
            f"{kind} {name!r} is registered twice by this plugin, {', '.join(differences)}; "
            "the first is used: register each name once"
        )
        if record.error is not None and message in record.error:
            return
        self._broken(record, message if record.error is None else f"{record.error}; {message}", None)

    def _broken_registration(self, record: PluginRecord, entry: RegistryEntry[Any] | None) -> None:
        """A class registered directly that failed its checks marks its plugin broken right away."""
        if entry is not None and entry.broken is not None and entry.provider.plugin == record.name:
            message = entry.broken.message
            if record.error is not None and message in record.error:
                return
            # added to what it already failed with (an earlier class of its own): `sitq plugins` shows them all
            self._broken(record, message if record.error is None else f"{record.error}; {message}", entry.broken)

    def _call_registration(self, impl: pluggy.HookImpl, register: Callable[..., None], kind: str) -> None:
        """Call one registration hook; an async one is not called.

        One that returns something is warned about; only when it registered
        nothing with ``register`` as well is the plugin broken, since what it
        returned is likely what it meant to register. What it did register
        stays usable either way.
        """
        hook = f"sitq_register_{kind}s"
        record = self.records.get(impl.plugin_name) or PluginRecord(impl.plugin_name, None, None, "ok")
        if _is_async(impl.function):  # calling it would only make a coroutine that is never awaited
            message = _ASYNC_HOOK.format(hook=hook)
            if record.status != "broken" or message not in (record.error or ""):  # check_hooks may have said so
                self._broken(record, message, None)
            return
        calls = 0
        public = _public_signature(register)

        def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            try:
                public.bind(*args, **kwargs)
            except TypeError as exc:  # said as the plugin wrote it: register(...), not sitq's inner function
                raise TypeError(_register_call_error(public, kwargs, exc)) from None
            register(*args, **kwargs)

        try:
            returned = impl.function(register=counted)
        except Exception as exc:
            self._broken(record, f"registration failed: {_described(exc)}", exc)
            return
        if inspect.iscoroutine(returned):  # a plain function handing back a coroutine: its work never runs
            returned.close()
            self._broken(record, _ASYNC_HOOK.format(hook=hook), None)
        elif returned is not None and calls == 0 and not _empty(returned):
            self._broken(
                record,
                f"{hook} returned {_a_value(returned)} and registered nothing: call register(name, cls) for "
                f"each {kind}; the return value is ignored",
                None,
            )
        elif returned is not None:  # a habit (returning the names it registered): harmless, but not a contract
            self._warn(
                record,
                f"{hook} returned {_a_value(returned)}, which is ignored: what it registered with "
                "register(name, cls) is used; return None",
            )

    def _provider(self, plugin_name: str) -> Provider:
        record = self.records.get(plugin_name)
        if record is None:  # registered with pluggy's own register(), in code
            return Provider(plugin_name, in_code=True)
        return Provider(plugin_name, record.dist, record.version, builtin=record.builtin, in_code=record.in_code)

    # -------------------------------------------------------------- resolution

    def backend_class(self, name: str) -> type[Backend]:
        """The backend class registered under ``name`` (or URL scheme), with helpful errors."""
        self.collect()
        self._raise_again_if_strict()
        entry = self.backends.entry(name)
        if entry is None:
            raise self._missing("backend", name, self.backends)
        return self.backends.load(name)

    def serializer_class(self, name: str) -> type[Serializer]:
        """The serializer class registered under ``name``."""
        self.collect()
        self._raise_again_if_strict()
        if self.serializers.entry(name) is None:
            raise self._missing("serializer", name, self.serializers)
        return self.serializers.load(name)

    def known_record(self, name: str) -> PluginRecord | None:
        """The plugin record of a name sitq knows (``KNOWN_PLUGINS``), found by its distribution.

        A broken or disabled plugin registered nothing, so its aliases (``postgresql``
        for the ``postgres`` entry point) are found through the distribution that provides them.
        """
        known = KNOWN_PLUGINS.get(name.split("+", 1)[0])
        if known is None:
            return None
        wanted = _dist_key(known[0])
        for record in self.records.values():
            if record.dist is not None and _dist_key(record.dist) == wanted:
                return record
        return None

    def _missing(self, kind: str, name: str, registry: Registry[Any]) -> PluginError:
        registry.try_loads()  # valid_options: the names that load, whatever this process chose before
        base = name.split("+", 1)[0]
        candidates = [self.records.get(name), self.records.get(base)]
        if kind == "backend":
            candidates.append(self.known_record(name))
        # a distribution left out because another one provides its entry-point name too
        candidates += [r for r in self.records.values() if r.shadowed_by is not None and _entry_point(r) == base]
        for record in candidates:
            if record is None or record.status not in ("broken", "disabled"):
                continue
            provides = self._known_to_provide(record, kind, name)
            if provides is False:
                continue
            # Only when sitq knows what the plugin provides does the message say it provides the name; else
            # only its entry-point name matches, and a disabled or unimportable plugin registered nothing.
            who = f"the plugin {record.name!r} ({_dist_text(record)})"
            claim = f"comes from {_dist_text(record)}" if provides else f"may come from {who}"
            if record.status == "broken" and record.shadowed_by is not None:
                return BrokenPluginError(  # never imported: reinstalling it would not help, and no traceback exists
                    f"{kind} {name!r} {claim}, which was not loaded: {self._shadowed_text(record, kind, name)}",
                    parameter=kind,
                    value=name,
                    valid_options=registry.usable_names(),
                )
            if record.status == "broken":
                hint = KNOWN_PLUGINS.get(base)
                reinstall = f" Reinstall it: {install_hint(*hint)}." if hint else ""
                unknown = "" if provides else " (what a plugin provides is not known until it loads)"
                return BrokenPluginError(
                    f"{kind} {name!r} {claim}, which failed to load{unknown}: "
                    f"{_sentence(record.error)}{reinstall}{_traceback_hint(record)}",
                    parameter=kind,
                    value=name,
                    valid_options=registry.usable_names(),
                )
            claim = f"is provided by {record.dist}" if provides else f"may be provided by {who}"
            unknown = "" if provides else ": what a disabled plugin provides is not known until it is enabled"
            return PluginError(
                f"{kind} {name!r} {claim}, which is installed but disabled by {record.disabled_by}{unknown}",
                parameter=kind,
                value=name,
                valid_options=registry.usable_names(),
            )
        known = KNOWN_PLUGINS.get(base)
        if known is not None and kind == "backend" and _dist_version(known[0]) is not None:
            return PluginError(  # installed, so "not installed" would send the reader after the wrong fix
                f"backend {name!r} is provided by the {known[0]} distribution, which is installed but not "
                f"registered in the current plugin manager{self._why_not_registered(known[0])}",
                parameter=kind,
                value=name,
                valid_options=registry.usable_names(),
            )
        if known is not None and kind == "backend":
            dist, extra = known
            return BackendNotInstalledError(
                f"backend {name!r} is provided by the {dist} distribution, which is not installed: "
                f"{install_hint(dist, extra)}",
                parameter=kind,
                value=name,
                valid_options=registry.usable_names(),
            )
        notes: list[str] = []
        quiet = self.records.get(base)
        if quiet is not None and not quiet.builtin and quiet.status in ("ok", "conflict"):
            notes.append(_registers_no_such_name(quiet, kind))
        broken = [record for record in self.records.values() if record.status == "broken"]
        if broken:  # a plugin that failed, or failed partway through its registrations, is the likely cause
            shown = broken[:BROKEN_NAMED_IN_ERRORS]
            listed = "; ".join(f"{_plugin_text(r)}: {(r.error_line() or '').rstrip('.')}" for r in shown)
            if len(broken) > len(shown):
                listed += f"; and {len(broken) - len(shown)} more (sitq plugins lists them)"
            notes.append(f"These plugins failed to load, so what they provide may be missing: {listed}.")
        # a typo's "Did you mean" offers names of this kind only: those sitq knows a disabled plugin provides
        error: UnknownBackendError = registry.unknown(name, disabled=self._disabled_names(kind))
        disabled = self.unknown_disabled_plugins()
        if disabled:
            # never imported, so what each provides is unknown: one whose entry-point name is close to the name
            # asked for is told first, as the likely provider (not offered as the name to give), the rest after
            close = (
                []
                if " Did you mean " in error.message
                else difflib.get_close_matches(name, [_entry_point(r) for r in disabled], n=1)
            )
            likely = next((r for r in disabled if close and _entry_point(r) == close[0]), None)
            if likely is not None:  # first, where a "Did you mean" would be
                notes.insert(
                    0,
                    f"The {_plugin_text(likely)} may provide it; it is installed but disabled by {likely.disabled_by}.",
                )
            others = [r for r in disabled if r is not likely]
            shown = others[:DISABLED_NAMED_IN_ERRORS]
            listed = ", ".join(_plugin_text(r) for r in shown)
            if len(others) > len(shown):
                listed += f" and {len(others) - len(shown)} more (sitq plugins lists them)"
            if shown:
                also = "Also installed" if likely is not None else "Installed"
                notes.append(
                    f"{also} but disabled, so what they provide is not known until they are enabled: {listed}."
                )
        if not notes:
            return error
        return type(error)(
            f"{error.message} {' '.join(notes)}",
            parameter=error.parameter,
            value=error.value,
            valid_options=error.valid_options,
        )

    def _disabled_names(self, kind: str) -> dict[str, str]:
        """Names installed plugins would provide but for being disabled -> a sentence saying so (for a typo's hint).

        sitq's own distributions by the names they provide (``KNOWN_PLUGINS``); any
        other disabled plugin by its entry-point name, which it *may* provide.
        """
        disabled: dict[str, str] = {}
        if kind == "backend":
            for known in KNOWN_PLUGINS:
                record = self.known_record(known)
                if record is not None and record.status == "disabled":
                    disabled[known] = (
                        f"It is provided by {_dist_text(record)}, which is installed but disabled by "
                        f"{record.disabled_by}."
                    )
        return disabled

    def _why_not_registered(self, dist: str) -> str:
        """For an installed sitq distribution this manager has no record of: why, and how to register it."""
        wanted = _dist_key(dist)
        plugins = [
            ep
            for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is not None and _dist_key(ep.dist.name) == wanted
        ]
        if not self._load_entrypoints:
            target = plugins[0].value.replace(":", ".") if plugins else ""
            how = (
                f": import {plugins[0].module} and call manager.register_plugin({target}, {plugins[0].name!r})"
                if plugins
                else ""
            )
            return f" (made with load_entrypoints=False, it loads no installed plugin){how}"
        if not plugins:
            return f" (it has no entry point in group {ENTRY_POINT_GROUP!r}: reinstall it)"
        return " (its entry point was not loaded)"

    def _shadowed_text(self, record: PluginRecord, kind: str, name: str) -> str:
        """Why a distribution whose entry-point name another one took was left out, and how to load it."""
        entry_point = _entry_point(record)
        loaded = self.records.get(entry_point)
        winner = record.shadowed_by
        winner_text = _dist_text(loaded) if loaded is not None and loaded.dist == winner else winner
        return (
            f"its entry point {entry_point!r} is also provided by {winner_text}, which was loaded instead (of "
            f"distributions providing one entry-point name, the first by name loads) and registers no {kind} "
            f"{name!r}. Uninstall {winner}, or leave it out with SITQ_DISABLED_PLUGINS={winner}."
        )

    def _known_to_provide(self, record: PluginRecord, kind: str, name: str) -> bool | None:
        """Whether a plugin that registered nothing usable provides ``name``: True, False, or None (unknown).

        sitq knows what its own distributions provide (``KNOWN_PLUGINS``: backends only) and
        what a plugin registered before it broke; anything else a disabled or unimportable
        plugin would register is unknown, however its entry point is named.
        """
        if name in (record.backends if kind == "backend" else record.serializers):
            return True
        if record.dist is not None and _dist_key(record.dist) in _known_dists():
            return kind == "backend" and self.known_record(name) is record
        return None

    def unknown_disabled_plugins(self) -> list[PluginRecord]:
        """Disabled plugins whose names are not known (they were never imported; sitq's own ones are known)."""
        return [
            record
            for record in self.records.values()
            if record.status == "disabled" and (record.dist is None or _dist_key(record.dist) not in _known_dists())
        ]

    # ----------------------------------------------------------- observation

    def has_observers(self, hook_name: str) -> bool:
        """True when some plugin implements this observation hook (cached)."""
        cached = self._observer_cache.get(hook_name)
        if cached is None:
            self.ensure_loaded()
            cached = bool(self._observers(hook_name))
            self._observer_cache[hook_name] = cached
        return cached

    def _observers(self, hook_name: str) -> list[pluggy.HookImpl]:
        """The implementations of a hook to call, last registered first; none of a broken plugin's.

        A plugin broken as it loads is not registered at all; one broken by its
        registrations (found at the first lookup) keeps what it registered, but
        its observation hooks are not called either.
        """
        return [
            impl
            for impl in reversed(getattr(self.hook, hook_name).get_hookimpls())
            if self.records.get(impl.plugin_name, _NOT_BUILTIN).status != "broken"
        ]

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of an observation hook, isolating failures."""
        if not self.has_observers(hook_name):
            return
        for impl in self._observers(hook_name):
            try:
                outcome = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if inspect.iscoroutine(outcome):
                    outcome.close()
                    logger.error(
                        "sitq hooks are synchronous; plugin %s returned a coroutine from %s",
                        impl.plugin_name,
                        hook_name,
                    )
            except (KeyboardInterrupt, SystemExit):
                raise  # the process is asked to end (Ctrl-C, sys.exit): that is not the observer's to swallow
            except BaseException as exc:  # CancelledError or an odd BaseException too: it would end the worker
                self._hook_failures.failed(impl.plugin_name, hook_name, exc)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        self._observer_cache.clear()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._observer_cache.clear()
        return result

    def load_targets(self) -> None:
        """Import every registered backend and serializer now, marking a plugin whose target fails as broken.

        For the CLI's listings (``sitq backends``, ``sitq plugins``, ``sitq --version``): a name registered
        as an import string is otherwise imported only when chosen, so a plugin installed without its
        driver (sitq-postgres without asyncpg) was listed as ok until a command used it. Resolution stays
        lazy: nothing else calls this.
        """
        self.collect()
        registries: tuple[Registry[Any], ...] = (self.backends, self.serializers)
        for registry in registries:
            for entry in list(registry.entries()):
                if entry.status != "ok":
                    continue
                try:
                    registry.load(entry.name)
                except BrokenPluginError as exc:
                    record = self.records.get(entry.provider.plugin)
                    if record is None or record.status == "disabled":  # registered with pluggy's own register()
                        continue
                    message = f"{registry.kind} {entry.name!r}: {load_failure_text(entry) or exc.message}"
                    if record.error is not None and message in record.error:
                        continue
                    self._broken(record, message if record.error is None else f"{record.error}; {message}", exc)

    def plugin_records(self, *, include_builtin: bool = False) -> list[PluginRecord]:
        """Every plugin seen, broken and disabled ones included."""
        self.collect()
        return [r for r in self.records.values() if include_builtin or not r.builtin]


_ASYNC_HOOK = "{hook} is 'async def', which sitq never awaits: hooks must be plain (synchronous) functions"
#: the end of the warning about an entry point whose object has no hooks (named by ``no_hooks_text``)
NO_HOOKS_HINT = "implements no sitq_* hook: does the entry point name the module with the hooks?"


def no_hooks_text(plugin: object) -> str:
    """The warning for a plugin object without hooks: ``module sitq_jsonq implements no sitq_* hook: ...``."""
    if isinstance(plugin, ModuleType):
        return f"module {plugin.__name__} {NO_HOOKS_HINT}"
    return f"{_a_value(plugin) if not isinstance(plugin, type) else f'class {_qualname(plugin)}'} {NO_HOOKS_HINT}"


def _object_text(plugin: object) -> str:
    """``"module acme.plugin"``, ``"class Acme"`` or ``"a Counter instance"``: a plugin object, without its repr."""
    if isinstance(plugin, ModuleType):
        return f"module {plugin.__name__}"
    if isinstance(plugin, type):
        return f"class {_qualname(plugin)}"
    return f"{_a_value(plugin)} instance"


def _registers_no_such_name(record: PluginRecord, kind: str) -> str:
    """A sentence for "no backend named X" when an installed plugin is named X but registers no such name."""
    who = f"The installed {_plugin_text(record)}"
    provides = [f"backend {name}" for name in sorted(record.backends)]
    provides += [f"serializer {name}" for name in sorted(record.serializers)]
    if provides:
        return f"{who} registers no {kind} of that name; it provides: {', '.join(provides)}."
    why = next((warning for warning in record.warnings if NO_HOOKS_HINT in warning), None)
    return f"{who} registers nothing{f': {why}' if why else '.'}"


def _own_functions(plugin: object) -> list[tuple[str, object]]:
    """The functions defined on ``plugin`` itself, not inherited: a module's, or a class's own (and an instance's)."""
    owners: list[object] = [plugin]
    if not isinstance(plugin, type | ModuleType):
        owners.insert(0, type(plugin))  # an instance: its class's own methods, then its own attributes
    found: dict[str, object] = {}
    for owner in owners:
        for attribute, value in getattr(owner, "__dict__", {}).items():
            function = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            if callable(function):
                found[attribute] = function
    return sorted(found.items())


def _public_signature(register: Callable[..., None]) -> inspect.Signature:
    """``register``'s signature as plugins see it: without sitq's own ``_`` parameters, and without annotations."""
    signature = inspect.signature(register)
    return signature.replace(
        parameters=[
            parameter.replace(annotation=inspect.Parameter.empty)
            for parameter in signature.parameters.values()
            if not parameter.name.startswith("_")
        ],
        return_annotation=inspect.Signature.empty,
    )


def _register_call_error(public: inspect.Signature, kwargs: dict[str, Any], error: TypeError) -> str:
    """What is wrong with a plugin's ``register(...)`` call: an unknown keyword named, with the accepted ones."""
    unknown = [keyword for keyword in kwargs if keyword not in public.parameters]
    if not unknown:
        return f"register{public} was called wrongly: {error}"
    keywords = [p.name for p in public.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    guess = difflib.get_close_matches(unknown[0], keywords, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return (
        f"register() got an unexpected keyword argument {unknown[0]!r}{hint}; "
        f"accepted keywords: {', '.join(keywords)} (register{public})"
    )


def _url_schemes(name: object, value: object) -> tuple[str, ...]:
    """``register(..., url_schemes=...)`` as a tuple; a bare string is refused (it would be one scheme per letter)."""
    if isinstance(value, str | bytes):
        raise ValidationError(
            f"register({name!r}, ...): url_schemes takes a sequence of URL scheme names, such as ({value!r},), "
            f"not a bare {type(value).__name__} (a string is a sequence of its letters)",
            parameter="url_schemes",
            value=value,
        )
    if not isinstance(value, Iterable):
        raise ValidationError(
            f"register({name!r}, ...): url_schemes takes a sequence of URL scheme names, such as ('acme+file',), "
            f"got {_a_value(value)}",
            parameter="url_schemes",
            value=value,
        )
    return tuple(value)


def _is_async(function: Callable[..., object]) -> bool:
    """Whether calling ``function`` only makes a coroutine or async generator, running none of its body."""
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def _validate_backend(target: type[Backend], entry: RegistryEntry[Backend]) -> None:
    if inspect.isabstract(target):
        missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
        raise BrokenPluginError(
            f"backend {entry.name!r} from {entry.provider} ({entry.target_path}) does not implement: {missing}",
            parameter="backend",
            value=entry.name,
        )
    not_async = [
        name for name in _abstract_names(Backend) if not inspect.iscoroutinefunction(getattr(target, name, None))
    ]
    if not_async:
        raise BrokenPluginError(
            f"backend {entry.name!r} from {entry.provider}: these methods must be 'async def': "
            f"{', '.join(sorted(not_async))}",
            parameter="backend",
            value=entry.name,
        )
    if target.spec_version > SPEC_VERSION:
        raise BrokenPluginError(
            f"backend {entry.name!r} from {entry.provider} needs backend spec version "
            f"{target.spec_version}, but this sitq-core supports {SPEC_VERSION}: upgrade sitq-core",
            parameter="backend",
            value=entry.name,
        )


def _validate_serializer(target: type[Serializer], entry: RegistryEntry[Serializer]) -> None:
    if inspect.isabstract(target):
        missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
        raise BrokenPluginError(
            f"serializer {entry.name!r} from {entry.provider} does not implement: {missing}",
            parameter="serializer",
            value=entry.name,
        )


def _abstract_names(cls: type) -> Iterable[str]:
    return sorted(getattr(cls, "__abstractmethods__", ()))


def _qualname(target: object) -> str:
    """A registered class's qualified name (its repr when it has none: not a class at all)."""
    return str(getattr(target, "__qualname__", repr(target)))


def _a_value(value: object) -> str:
    """``"a dict"``: what a hook returned, named by its type (its repr may be long or costly)."""
    type_name = type(value).__name__
    return f"{'an' if type_name[:1].lower() in 'aeiou' else 'a'} {type_name}"


def _empty(value: object) -> bool:
    """Whether a registration hook's return value is an empty collection (nothing to have registered)."""
    try:
        return isinstance(value, Sized) and len(value) == 0
    except Exception:  # an odd __len__
        return False


def _dist_version(dist: str | None) -> str | None:
    if dist is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _entry_point(record: PluginRecord) -> str:
    """The entry-point name of a record (a left-out second provider's record is named ``"x (its-dist)"``)."""
    return record.name.removesuffix(f" ({record.dist})") if record.dist is not None else record.name


def _who(record: PluginRecord) -> str:
    """``"acme (acme-store)"``: a plugin as log lines name it; one registered in code (no distribution) by name."""
    if record.dist is None or record.dist in record.name:
        return record.name
    return f"{record.name} ({record.dist})"


def _plugin_text(record: PluginRecord) -> str:
    """``"plugin 'acme' (acme-store 1.0)"``: a plugin as one-line lists in errors name it."""
    return f"plugin {_entry_point(record)!r} ({_dist_text(record)})"


def _traceback_hint(record: PluginRecord) -> str:
    """How to see this plugin's traceback, if it has one.

    Not just ``SITQ_STRICT_PLUGINS=1``: strict mode raises the first broken
    plugin, which need not be this one. Loading only this one, strictly, raises its own.
    """
    if not record.has_traceback or record.dist is None:
        return ""
    return (
        f" For its traceback: SITQ_LOAD_PLUGINS={_entry_point(record)} SITQ_STRICT_PLUGINS=1, "
        "or SITQ_LOG_LEVEL=DEBUG sitq plugins."
    )


def _dist_text(record: PluginRecord) -> str:
    """``"sitq-sqlite 0.1.0"``: a plugin's distribution and version, as messages name it."""
    return f"{record.dist or record.name} {record.version or ''}".strip()


def _known_dists() -> set[str]:
    """The distributions ``KNOWN_PLUGINS`` names, normalised: sitq knows what they provide without importing them."""
    return {_dist_key(dist) for dist, _extra in KNOWN_PLUGINS.values()}


def _dist_key(dist: str) -> str:
    """A distribution name normalised for comparison (PEP 503: case, ``-``, ``_`` and ``.`` alike)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def _described(exc: Exception) -> str:
    """``describe_exception``, but a sitq error by its message alone: its ``(context: ...)`` repeats what the
    message says, and a listing's line (``sitq plugins``, ``sitq backends``) has no room for it."""
    if isinstance(exc, SitqError) and isinstance(exc.message, str) and exc.message.strip():
        return f"{type(exc).__name__}: {exc.message}"
    return describe_exception(exc)
