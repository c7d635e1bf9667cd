"""Name -> class registries for backends and serializers.

Plugins register import strings (or classes); a target is imported and
validated only when its name is used, so one broken plugin never breaks
another, and every failure names the distribution to blame.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from .errors import (
    BrokenPluginError,
    PluginConflictError,
    UnknownBackendError,
    UnknownSerializerError,
    ValidationError,
    describe_exception,
)

__all__ = ["NAME_PATTERN", "Clash", "Provider", "Registry", "RegistryEntry", "conflict_text", "load_failure_text"]

#: A backend, URL scheme or serializer name. ``\Z``, not ``$``: "sqlite\n" is no name.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_+-]*\Z")

T = TypeVar("T")


def is_import_string(target: str) -> bool:
    """True for ``package.module:Class`` (dotted on either side of the colon), every part a Python identifier.

    Identifiers as Python reads them (``str.isidentifier``): non-ASCII names such
    as ``été.backend:Backend`` are as valid as ASCII ones.
    """
    module, colon, attribute = target.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    return bool(colon) and all(part.isidentifier() for part in parts)


logger = logging.getLogger("sitq.plugins")


@dataclass(frozen=True, slots=True)
class Provider:
    """Who registered a name: plugin (entry-point) name, distribution and version.

    ``builtin`` marks sitq-core's own registrations, which no plugin can replace; ``in_code`` a plugin
    registered by a program (``register_plugin``), not loaded from an entry point, which
    ``SITQ_DISABLED_PLUGINS`` cannot switch off.
    """

    plugin: str
    dist: str | None = None
    version: str | None = None
    builtin: bool = False
    in_code: bool = False

    def __str__(self) -> str:
        if self.dist is None:
            return f"plugin {self.plugin!r}"
        return f"{self.dist} {self.version or ''}".strip()


@dataclass(frozen=True, slots=True)
class Clash:
    """Another registration answering to the same name or URL scheme as an entry."""

    other: Provider
    key: str  # the name or URL scheme both answer to
    other_name: str  # the name the other provider registered


@dataclass(slots=True)
class RegistryEntry(Generic[T]):
    """One registered name and where it came from."""

    name: str
    target: type[T] | str
    provider: Provider
    description: str = ""
    aliases: tuple[str, ...] = ()
    conflicts: list[Clash] = field(default_factory=list)
    ignored: list[Provider] = field(default_factory=list)  # plugins that tried to replace a built-in name
    broken: BrokenPluginError | None = None  # a registered class that failed its checks at registration
    failed: BrokenPluginError | None = None  # the last load of an import string failed (tried again next time)

    @property
    def status(self) -> str:
        """``"ok"``, or why the name cannot be chosen now: ``"conflict"`` or ``"broken"``.

        Only a clash over the name itself is a conflict here: a clash over one of its extra URL
        schemes makes that scheme ambiguous (``contested_schemes``), not the name.
        """
        if self.clashes_over(self.name):
            return "conflict"
        return "broken" if self.broken is not None or self.failed is not None else "ok"

    def clashes_over(self, key: str) -> list[Clash]:
        """The other registrations that answer to ``key`` (this entry's name or one of its URL schemes) too."""
        return [clash for clash in self.conflicts if clash.key == key]

    @property
    def contested_schemes(self) -> list[str]:
        """This entry's extra URL schemes that another registration answers to as well: they cannot be chosen."""
        return [alias for alias in self.aliases if self.clashes_over(alias)]

    @property
    def target_path(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"


class Registry(Generic[T]):
    """Maps names (and aliases such as extra URL schemes) to registered classes."""

    def __init__(self, kind: str, base: type[Any], validate: Callable[[type[T], RegistryEntry[T]], None]) -> None:
        self.kind = kind
        self.base = base
        self._validate = validate
        self._entries: dict[str, RegistryEntry[T]] = {}  # the first registration of each name
        self._aliases: dict[str, RegistryEntry[T]] = {}  # an extra URL scheme -> the first entry answering to it
        self._later: list[RegistryEntry[T]] = []  # later registrations of a name already taken (a conflict)
        self._loaded: dict[tuple[str, Provider], type[T]] = {}

    def add(
        self,
        name: str,
        target: type[T] | str,
        provider: Provider,
        *,
        description: str = "",
        aliases: tuple[str, ...] = (),
    ) -> bool:
        """Record a registration; False when it was ignored.

        A second provider of a name is kept as a conflict (using the name then
        raises ``PluginConflictError``), except that a built-in name stays
        built-in: a plugin registering it again is ignored (and listed as such).
        """
        for candidate in (name, *aliases):
            if not isinstance(candidate, str) or not NAME_PATTERN.match(candidate):
                raise ValidationError(
                    f"{self.kind} name {candidate!r} from {provider} is invalid; "
                    "expected lower case letters, digits, '_', '-' or '+', starting with a letter",
                    parameter="name",
                    value=candidate,
                )
        if not isinstance(target, str) and not inspect.isclass(target):
            raise ValidationError(
                f"{self.kind} {name!r} from {provider} must be a class or an import string "
                f"'module:Class', got {type(target).__name__}",
                parameter=self.kind,
                value=target,
            )
        if isinstance(target, str) and not is_import_string(target):  # found now, not as an import error on use
            raise ValidationError(
                f"{self.kind} {name!r} from {provider}: {target!r} is not an import string 'module:Class' "
                "(for example 'acme_store.backend:AcmeBackend')",
                parameter=self.kind,
                value=target,
            )
        existing = self._entries.get(name)
        if existing is not None:
            if existing.provider == provider:
                return True
            if existing.provider.builtin and not provider.builtin:
                existing.ignored.append(provider)
                return False
        entry = RegistryEntry(name, target, provider, description, tuple(aliases))
        if not isinstance(target, str):  # a class can be checked now, so the plugin is listed as broken at once
            try:
                self._check_class(target, entry)
            except BrokenPluginError as exc:
                entry.broken = exc
        # A name or URL scheme that another provider already answers to is a clash too: it would
        # make the same URL resolve to different classes depending on which plugin loaded first.
        # Only that key is ambiguous; the two entries' other names and schemes still resolve.
        for key in (name, *aliases):
            for owner in self._owners(key):
                if owner.provider == provider:
                    continue
                if owner.provider.builtin and not provider.builtin:
                    owner.ignored.append(provider)
                    return False
                owner.conflicts.append(Clash(provider, key, name))
                entry.conflicts.append(Clash(owner.provider, key, owner.name))
        if existing is None:
            self._entries[name] = entry
        else:  # kept, so its own URL schemes still lead to it
            self._later.append(entry)
        for alias in aliases:
            self._aliases.setdefault(alias, entry)
        return True

    def _owners(self, key: str) -> list[RegistryEntry[T]]:
        """Every entry answering to ``key``, as a name or as an extra URL scheme."""
        return [entry for entry in (*self._entries.values(), *self._later) if key == entry.name or key in entry.aliases]

    def _owner(self, key: str) -> RegistryEntry[T] | None:
        """The entry answering to ``key``: the first registration of that name, else the first with that scheme."""
        return self._entries.get(key) or self._aliases.get(key)

    def registration(self, name: str, provider: Provider) -> RegistryEntry[T] | None:
        """What ``provider`` registered under ``name`` (of two providers of one name, either one's entry)."""
        return next(
            (e for e in (*self._entries.values(), *self._later) if (e.name, e.provider) == (name, provider)), None
        )

    def all_entries(self) -> list[RegistryEntry[T]]:
        """Every registration, a later one of a name already taken included (``entries`` lists one per name)."""
        return [*self.entries(), *self._later]

    def names(self) -> list[str]:
        """Every registered name, those that cannot be chosen now (conflict, broken) included."""
        return sorted(self._entries)

    def usable_names(self) -> list[str]:
        """The registered names that are not known to fail when chosen (no clash over the name, not found broken).

        A name registered as an import string counts as usable until a load of it failed
        (:meth:`try_loads` finds out at once).
        """
        return [entry.name for entry in self.entries() if entry.status == "ok"]

    def try_loads(self) -> None:
        """Load every name not loaded yet, so that ``status`` says which would fail when chosen.

        For errors that list the names (an unknown name's): a plugin installed
        without its driver is listed as broken, and not suggested, from the first
        error on, not only after a load of it happened to fail. A failed load is
        tried again each time (the driver may have been installed since).
        """
        for entry in self.all_entries():
            if entry.broken is not None or entry.clashes_over(entry.name):
                continue
            if (entry.name, entry.provider) in self._loaded:
                continue
            with contextlib.suppress(BrokenPluginError):  # kept in entry.failed
                self._load_entry(entry)

    def entries(self) -> Iterator[RegistryEntry[T]]:
        for name in self.names():
            yield self._entries[name]

    def entry(self, name: str) -> RegistryEntry[T] | None:
        """The entry for a name, else for an alias (a real name always wins), or None."""
        return self._owner(name)

    def load(self, name: str) -> type[T]:
        """Import and validate the class registered under ``name``.

        Raises ``PluginConflictError`` when two distributions claim the name,
        ``BrokenPluginError`` when the target cannot be imported or is
        invalid, and ``UnknownBackendError`` when nothing claims it.
        """
        entry = self.entry(name)
        if entry is None:
            raise self.unknown(name)
        if entry.clashes_over(name):  # only the contested name or scheme: the entry's others still resolve
            raise PluginConflictError(conflict_text(self.kind, entry, name), parameter=self.kind, value=name)
        if entry.broken is not None:
            raise entry.broken
        return self._load_entry(entry)

    def _load_entry(self, entry: RegistryEntry[T]) -> type[T]:
        """Import and check ``entry``'s class once (cached); a failure is kept in ``entry.failed`` and raised."""
        key = (entry.name, entry.provider)
        cached = self._loaded.get(key)
        if cached is not None:
            return cached
        target = entry.target
        try:
            if isinstance(target, str):
                target = _import_target(self.kind, entry)
            self._check_class(target, entry)
        except BrokenPluginError as exc:
            entry.failed = exc  # listed as broken, and no longer suggested for a typo
            raise
        entry.failed = None
        self._loaded[key] = target
        return target

    def _check_class(self, target: Any, entry: RegistryEntry[T]) -> None:  # target: Any until checked
        """A registered target must be a concrete subclass of the base (raises ``BrokenPluginError``)."""
        if not (inspect.isclass(target) and issubclass(target, self.base)):
            raise BrokenPluginError(
                f"{self.kind} {entry.name!r} from {entry.provider} is {target!r}, "
                f"not a subclass of {self.base.__name__}",
                parameter=self.kind,
                value=entry.name,
            )
        self._validate(cast("type[T]", target), entry)

    def unknown(self, name: str, *, note: str = "", disabled: Mapping[str, str] | None = None) -> UnknownBackendError:
        """The error for a name nobody registered, listing the installed names (and ``note``, a sentence).

        ``disabled``: names that installed but disabled plugins provide (or may),
        each with a sentence saying so; one close to ``name`` is suggested, with
        its sentence, when no name that can be chosen is close.
        """
        self.try_loads()  # what fails when chosen is known now, whatever this process chose before
        installed = self.usable_names()  # a name that would fail when chosen is neither listed nor suggested
        schemes = [
            alias
            for alias, owner in self._aliases.items()
            if owner.status == "ok" and not owner.clashes_over(alias) and alias not in self._entries
        ]
        hint = ""
        close = difflib.get_close_matches(name, installed + schemes, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
        elif disabled:
            close = difflib.get_close_matches(name, [key for key in disabled if key != name], n=1)
            if close:
                hint = f" Did you mean {close[0]!r}? {disabled[close[0]]}"
        listed = ", ".join(installed) if installed else "(none)"
        unusable = ", ".join(f"{entry.name} ({entry.status})" for entry in self.entries() if entry.status != "ok")
        if unusable:
            hint += f" Installed but cannot be chosen: {unusable}."
        error_type = UnknownSerializerError if self.kind == "serializer" else UnknownBackendError
        return error_type(
            f"no {self.kind} named {name!r}. Installed: {listed}.{hint}{f' {note}' if note else ''}",
            parameter=self.kind,
            value=name,
            valid_options=installed,
        )


def load_failure_text(entry: RegistryEntry[Any]) -> str | None:
    """Why the last load of ``entry`` failed, on one line without its name (a listing's row gives it), or None.

    A target that failed to import (a plugin installed without its driver) is said as the exception and
    the import string; a class that failed its checks, by the check's own message.
    """
    failed = entry.failed
    if failed is None:
        return None
    if failed.cause is not None:  # only _import_target's error has one
        return f"{describe_exception(failed.cause)} (importing {entry.target_path})"
    return failed.message


def conflict_text(kind: str, entry: RegistryEntry[Any], key: str | None = None) -> str:
    """Who else answers to ``entry``'s name or URL schemes (only to ``key``, when given), and how to settle it."""
    conflicts = entry.conflicts if key is None else entry.clashes_over(key)
    clashes: list[str] = []
    for clash in conflicts:
        mine, theirs = str(entry.provider), str(clash.other)
        if entry.provider.dist is not None and mine == theirs:  # two entry points of one distribution
            mine, theirs = (f"entry point {p.plugin!r} of {mine}" for p in (entry.provider, clash.other))
            both = f"entry points {entry.provider.plugin!r} and {clash.other.plugin!r} of {entry.provider}"
        else:
            both = f"{mine} and {theirs}"
        if clash.key == entry.name == clash.other_name:
            clashes.append(f"{kind} {entry.name!r} is registered by both {both}")
        else:
            clashes.append(
                f"{kind} {entry.name!r} of {mine} and {kind} {clash.other_name!r} of {theirs} "
                f"both answer to {clash.key!r}"
            )
    return f"{'; '.join(clashes)}. {_settle_text([entry.provider, *(clash.other for clash in conflicts)])}"


def _settle_text(providers: list[Provider]) -> str:
    """How to settle a clash between ``providers``: by how each plugin was loaded.

    ``SITQ_DISABLED_PLUGINS`` only keeps entry points from loading: a plugin a program
    registered itself (``register_plugin``) is settled by not registering it.
    """
    sides = list({provider.plugin: provider for provider in providers}.values())
    loaded = [p for p in sides if not p.in_code]
    in_code = [p for p in sides if p.in_code]
    disable = " or ".join(f"SITQ_DISABLED_PLUGINS={p.plugin}" for p in loaded)
    if not in_code:
        # of one distribution's own entry points, uninstalling "one" is no choice: only disabling is
        one_dist = len({str(p) for p in loaded}) == 1 and loaded[0].dist is not None
        return f"{'Disable one' if one_dist else 'Uninstall one, or disable one'} with {disable}"
    unregister = " or ".join(f"unregister_plugin({p.plugin!r})" for p in in_code)
    one = len(in_code) == 1
    advice = (
        f"{'Plugin' if one else 'Plugins'} {', '.join(repr(p.plugin) for p in in_code)} "
        f"{'was' if one else 'were'} registered in code (register_plugin), which SITQ_DISABLED_PLUGINS cannot "
        f"switch off: stop registering {'it' if one else 'one'}, or call {unregister} on the plugin manager"
    )
    if loaded:
        advice += f"; or disable {'the other' if len(loaded) == 1 else 'one of the others'} with {disable}"
    return advice


def _import_target(kind: str, entry: RegistryEntry[T]) -> type[T]:
    module_name, _, attribute = entry.target_path.partition(":")
    try:
        module = importlib.import_module(module_name)
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:
        # the plugin's own code raised: its traceback goes to the log, where the error's hint points
        logger.debug("traceback of %s %r (%s)", kind, entry.name, entry.target_path, exc_info=exc)
        raise BrokenPluginError(
            f"{kind} {entry.name!r} comes from {entry.provider}, whose target "
            f"{entry.target_path!r} failed to import: {describe_exception(exc)}. "
            "For its traceback: SITQ_LOG_LEVEL=DEBUG (sitq --log-level DEBUG), or SITQ_STRICT_PLUGINS=1; "
            "in a program, log 'sitq' at DEBUG or read this error's __cause__",
            parameter=kind,
            value=entry.name,
            cause=exc,
        ) from exc
    return target  # type: ignore[return-value]
