"""sitq: an async-first task queue. This facade re-exports the public API.

Backends provided by plugins (``SQLiteBackend``, ``PostgresBackend``) resolve lazily: touching the
name without the plugin installed raises an ``ImportError`` that says what to
install.
"""

from __future__ import annotations

from importlib.util import find_spec as _find_spec
from typing import TYPE_CHECKING

from sitq_core import *  # noqa: F403
from sitq_core import __all__ as _core_all
from sitq_core import __version__ as __version__  # "as": re-exported for type checkers (pyright, mypy --strict)
from sitq_core.errors import MissingPluginError as MissingPluginError
from sitq_core.errors import describe_exception as _describe_exception
from sitq_core.install_hints import checkout_folder as _checkout_folder
from sitq_core.install_hints import install_hint as _install_hint

if TYPE_CHECKING:
    from typing import Any

    # ``__all__`` is worked out on first use by the module __getattr__ below (the core's names plus the
    # backends that import); declared for checkers as the core's plus both backends, so that they accept
    # ``"SQLiteBackend" in sitq.__all__`` (api.md) and ``from sitq import *`` still gives every name
    from sitq_core import __all__ as __all__

    # what the module __getattr__ below resolves at run time, declared for type checkers (which do not
    # see that __getattr__: with it, every name, a misspelt one too, would be Any to them)
    from sitq_postgres import PostgresBackend as PostgresBackend
    from sitq_sqlite import SQLiteBackend as SQLiteBackend

    __all__ += ["PostgresBackend", "SQLiteBackend"]

_PLUGIN_NAMES: dict[str, tuple[str, str, str]] = {
    # facade name: (module, attribute, pip extra)
    "SQLiteBackend": ("sitq_sqlite", "SQLiteBackend", "sitq[sqlite]"),
    "PostgresBackend": ("sitq_postgres", "PostgresBackend", "sitq[postgres]"),
}


def _importable(module: str) -> bool:
    try:
        return _find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


def _exported() -> list[str]:
    """``__all__``: the core's names plus each backend whose plugin imports.

    Worked out on first use (``from sitq import *``), not at import: a plugin
    that is installed but broken (its driver missing, say) is left out, so the
    star import works on any install and touching the name explains what failed.
    """
    names = list(_core_all)
    for name, (module, _attribute, _extra) in sorted(_PLUGIN_NAMES.items()):
        if not _importable(module):
            continue
        try:
            _resolve(name)
        except MissingPluginError:
            continue
        names.append(name)
    return names


def _resolve(name: str) -> Any:
    """The module attribute ``name``: a plugin's backend, imported on first use, or the lazy ``__all__``."""
    if name == "__all__":
        exported = globals()["__all__"] = _exported()
        return exported
    target = _PLUGIN_NAMES.get(name)
    if target is None:
        raise AttributeError(f"module 'sitq' has no attribute {name!r}")
    module_name, attribute, extra = target
    try:
        module = __import__(module_name, fromlist=[attribute])
        value = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        dist = module_name.replace("_", "-")
        if _installed(dist):
            reason = f"is installed but failed to import: {_describe_exception(exc)}. Reinstall it"
        else:
            reason = "is not installed. Install it"
        raise MissingPluginError(
            f"sitq.{name} needs the {dist} plugin, which {reason} {_install_hint(dist, extra)}",
            cause=exc,
            context={"name": name, "install": f"pip install {_checkout_folder(dist)}"},
        ) from exc
    globals()[name] = value
    return value


if not TYPE_CHECKING:  # hidden from type checkers, which would take every unknown name for Any
    __getattr__ = _resolve


def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(dist)
    except PackageNotFoundError:
        return False
    return True


def __dir__() -> list[str]:
    """The public names only: the core's, the backends that import, and the module's dunders."""
    names = {name for name in globals() if name.startswith("__")} | set(_core_all) | {"MissingPluginError"}
    for name, (module_name, _attribute, _extra) in _PLUGIN_NAMES.items():
        try:
            __import__(module_name)
        except ImportError:
            continue
        names.add(name)
    return sorted(names)


del TYPE_CHECKING
