"""Where a module that ``--import`` or ``--allow-task`` names raised as it was imported, in one line.

The CLI shows an import failure as one ``sitq: error:`` line (the traceback
only at ``--log-level DEBUG``); ``ZeroDivisionError: division by zero`` alone
does not say which file to open. The frame named is the innermost one of the
user's code: not the import machinery, not sitq's own packages (a task module
that calls sitq wrongly), not the standard library (``json.loads`` raising
for the module's bad settings), and not an installed library it called
(``packaging.version.Version("x")``). A module installed into site-packages
itself has only such frames: the outermost, its own line, is named. Without one (a module that is not found, a
function it lacks) the message says it all, and nothing is added.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path
from types import FrameType

__all__ = ["raised_where"]

#: top-level packages whose frames are not the user's: the import system and sitq's own distributions
_NOT_THE_USERS = frozenset({"importlib", "sitq", "sitq_core", "sitq_sqlite", "sitq_postgres"})
_STDLIB = tuple(
    str(Path(path).resolve()) + os.sep
    for path in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)
_INSTALLED = frozenset({"site-packages", "dist-packages"})  # folders pip installs packages into


def raised_where(exc: BaseException) -> str:
    """`` (raised at boom.py:4, in <module>; --log-level DEBUG shows the whole traceback)``, or "" when no
    frame of the traceback is the user's code."""
    own: tuple[str, int, str] | None = None  # innermost frame of code not installed as a package
    installed: tuple[str, int, str] | None = None  # outermost one in site-packages: the imported module's line
    for frame, line in traceback.walk_tb(exc.__traceback__):
        where = _users(frame)
        if where == "own":
            own = (frame.f_code.co_filename, line, frame.f_code.co_name)
        elif where == "installed" and installed is None:
            installed = (frame.f_code.co_filename, line, frame.f_code.co_name)
    found = own or installed  # an application installed into site-packages has only those
    if found is None:
        return ""
    filename, line, name = found
    return f" (raised at {_shown(filename)}:{line}, in {name}; --log-level DEBUG shows the whole traceback)"


def _users(frame: FrameType) -> str:
    """Whose frame: "own" (the user's code), "installed" (a package in site-packages), or "" (the import
    system, sitq itself, the standard library)."""
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str) or module.partition(".")[0] in _NOT_THE_USERS:
        return ""
    filename = frame.f_code.co_filename
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return ""
    try:
        path = Path(filename).resolve()
    except (OSError, RuntimeError, ValueError):
        return "own"
    if not _INSTALLED.isdisjoint(path.parts):
        return "installed"
    return "" if str(path).startswith(_STDLIB) else "own"


def _shown(filename: str) -> str:
    """The file relative to the working directory when it is inside it (where ``--import`` found it)."""
    try:
        return os.path.relpath(filename) if Path(filename).resolve().is_relative_to(Path.cwd()) else filename
    except (OSError, ValueError):
        return filename
