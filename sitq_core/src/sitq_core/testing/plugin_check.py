"""Static checks of an installed sitq plugin, without running the suite.

``check_plugin("dictstore")`` loads the entry point of that name from the
``sitq`` group (or, given a distribution name such as ``"sitq-dictstore"``,
each entry point of that distribution, as ``SITQ_LOAD_PLUGINS`` accepts
either) into an isolated plugin manager and returns a list of
problems (empty when the plugin looks right): import errors, invalid or
unknown hooks, backend and serializer targets that do not load or do not
keep the contract's shape (a serializer that cannot be built with no
arguments), and names that clash with another installed
plugin or with a built-in. It never raises for a problem it can describe,
``SITQ_STRICT_PLUGINS`` or not.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points

from ..backend import Backend
from ..config import build_serializer
from ..errors import SitqError, describe_exception
from ..plugin_manager import ENTRY_POINT_GROUP, SitqPluginManager, no_hooks_text

__all__ = ["check_plugin"]


def check_plugin(entry_point_name: str) -> list[str]:
    """Problems found in the plugin named ``entry_point_name`` (``[]``: none).

    The name is an entry point of the ``sitq`` group (``"dictstore"``) or, as
    in ``SITQ_LOAD_PLUGINS``, a distribution (``"sitq-dictstore"``, compared as
    PEP 503 normalises names); a distribution's problems name the entry point
    each one belongs to.
    """
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    found = [ep for ep in installed if ep.name == entry_point_name]
    if found:
        if len({ep.value for ep in found}) > 1:
            return [f"entry point {entry_point_name!r} is defined more than once: {[ep.value for ep in found]}"]
        return _check_entry_point(found[0])
    wanted = _dist_key(entry_point_name)
    from_dist = sorted((ep for ep in installed if _dist_key(_dist_name(ep) or "") == wanted), key=lambda ep: ep.name)
    if not from_dist:
        elsewhere = _other_groups(entry_point_name)
        if elsewhere is not None:
            return [elsewhere]
        known = ", ".join(sorted({f"{ep.name} ({_dist_name(ep) or 'no distribution'})" for ep in installed}))
        return [
            f"no entry point or distribution named {entry_point_name!r} in group {ENTRY_POINT_GROUP!r}; "
            f"installed: {known or 'none'}"
        ]
    return [
        f"entry point {ep.name} ({_dist_name(ep)}): {problem}" for ep in from_dist for problem in _check_entry_point(ep)
    ]


def _other_groups(dist_name: str) -> str | None:
    """For a distribution that is installed but has no ``sitq`` entry point: where its entry points are, if any."""
    try:
        dist = distribution(dist_name)
    except (PackageNotFoundError, ValueError):  # ValueError: not a valid distribution name
        return None
    groups = sorted({ep.group for ep in dist.entry_points})
    where = f"it has ones in: {', '.join(groups)}" if groups else "it has no entry points at all"
    name = dist.metadata["Name"] or dist_name
    return f"distribution {name} is installed but has no entry point in group {ENTRY_POINT_GROUP!r}; {where}"


def _dist_name(ep: EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def _dist_key(name: str) -> str:
    """A distribution name as PEP 503 compares it (case, ``-``, ``_`` and ``.`` alike)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_entry_point(ep: EntryPoint) -> list[str]:
    """Problems of one entry point's plugin."""
    try:
        plugin = ep.load()
    except Exception as exc:
        return [f"entry point {ep.name} = {ep.value!r} failed to import: {describe_exception(exc)}"]
    # never strict: a broken plugin is a record to read, in the words `sitq plugins` uses, whatever
    # SITQ_STRICT_PLUGINS says (strict mode wrapped them: "sitq plugin 'x' from d failed to load: ...")
    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    try:
        manager.register_plugin(plugin, ep.name, dist=ep.dist.name if ep.dist is not None else None)
        manager.check_pending()
    except Exception as exc:  # pluggy validation errors
        known, _warnings = manager._hook_problems(plugin)  # what `sitq plugins` says: "did you mean ...?"
        if known:
            return [f"plugin is broken: {'; '.join(known)}"]
        return [f"hook implementations are invalid: {describe_exception(exc)}"]
    problems: list[str] = []
    try:
        manager.check_hooks()
        manager.collect()
    except SitqError as exc:  # not strict, so not expected: said in the same words all the same
        return [f"plugin is broken: {exc.message}"]
    record = manager.records.get(ep.name)
    if record is not None and record.status == "broken":
        problems.append(f"plugin is broken: {record.error}")
    if record is not None and record.status == "conflict":
        problems.append(f"name clash: {record.error}")
    if record is not None:  # mistakes that leave the plugin working: worth fixing all the same
        problems.extend(f"warning: {warning}" for warning in record.warnings)
    if record is not None and not record.hooks:
        problems.append(
            f"entry point {ep.name} = {ep.value!r}: {no_hooks_text(plugin)}"
            if manager._implements_no_hook(plugin)
            else "the plugin implements no sitq_* hook this sitq-core calls"
        )
    for entry in manager.backends.entries():
        if entry.provider.plugin != ep.name:
            continue
        try:
            cls = manager.backends.load(entry.name)
        except SitqError as exc:
            _add_once(problems, exc)
            continue
        problems.extend(_check_backend_class(entry.name, cls))
    for serializer_entry in manager.serializers.entries():
        if serializer_entry.provider.plugin != ep.name:
            continue
        try:
            manager.serializers.load(serializer_entry.name)
            build_serializer(manager, serializer_entry.name)  # as sitq builds one chosen by name: no arguments
        except SitqError as exc:
            _add_once(problems, exc)
    for clash in _clashes_with_installed(ep.name):
        # with every installed plugin loaded, this plugin's clashes are told together, the ones found
        # with sitq-core alone (a built-in name) among them: each is reported once, in the fuller line
        told = [p for p in problems if p.startswith("name clash: ") and p.removeprefix("name clash: ") in clash]
        if clash in problems:
            continue
        if told:
            problems[problems.index(told[0])] = clash
            problems = [p for p in problems if p not in told[1:]]
        else:
            problems.append(clash)
    return problems


def _add_once(problems: list[str], error: SitqError) -> None:
    """A failed load's error, unless already reported (a class registered directly is checked, and the plugin
    listed as broken with that message, at registration)."""
    if not any(error.message in problem for problem in problems):
        problems.append(str(error))


def _clashes_with_installed(entry_point_name: str) -> list[str]:
    """Names this plugin shares with other installed plugins (or with sitq-core's built-ins)."""
    manager = SitqPluginManager(strict=False)  # another broken plugin must not hide this one's clashes
    manager.collect()
    record = manager.records.get(entry_point_name)
    if record is None or record.status != "conflict" or record.error is None:
        return []
    return [f"name clash: {record.error}"]


def _check_backend_class(name: str, cls: type[Backend]) -> list[str]:
    problems: list[str] = []
    if cls.name != name:
        problems.append(f"backend {name!r}: class attribute name is {cls.name!r}; it should be {name!r}")
    public = [m for m in dir(Backend) if not m.startswith("_") and inspect.iscoroutinefunction(getattr(Backend, m))]
    not_async = [m for m in public if not inspect.iscoroutinefunction(getattr(cls, m, None))]
    if not_async:
        problems.append(f"backend {name!r}: these methods must be 'async def': {', '.join(sorted(not_async))}")
    try:
        takes_name = "name" in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin's __init__)
        takes_name = False
    if takes_name:
        problems.append(
            f"warning: backend {name!r}: __init__ takes a parameter called 'name'; stored as self.name it shadows "
            "Backend.name (the registry name sitq reads from the instance): call it store, path or database_name"
        )
    try:
        cls()
    except TypeError:
        pass  # required constructor arguments are fine; from_config/from_url supply them
    except Exception as exc:
        problems.append(f"backend {name!r}: constructing it with no arguments raised {describe_exception(exc)}")
    return problems
