"""Where a module that ``--import`` or ``--allow-task`` names raised as it was imported, in one line.

The CLI shows an import failure as one ``sitq: error:`` line (the traceback
only at ``--log-level DEBUG``); ``ZeroDivisionError: division by zero`` alone
does not say which file to open. The frame named is the innermost one of the
user's code: not the import machinery, not sitq's own packages (a task module
that calls sitq wrongly), not the standard library (``json.loads`` raising
for the module's bad settings). Without one (a module that is not found, a
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


def raised_where(exc: BaseException) -> str:
    """`` (raised at boom.py:4, in <module>; --log-level DEBUG shows the whole traceback)``, or "" when no
    frame of the traceback is the user's code."""
    found: tuple[str, int, str] | None = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if _users(frame):
            found = (frame.f_code.co_filename, line, frame.f_code.co_name)
    if found is None:
        return ""
    filename, line, name = found
    return f" (raised at {_shown(filename)}:{line}, in {name}; --log-level DEBUG shows the whole traceback)"


def _users(frame: FrameType) -> bool:
    """A frame of the user's code: not the import system, sitq itself or the standard library."""
    module = frame.f_globals.get("__name__")
    if not isinstance(module, str) or module.partition(".")[0] in _NOT_THE_USERS:
        return False
    filename = frame.f_code.co_filename
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    try:
        path = str(Path(filename).resolve())
    except (OSError, RuntimeError, ValueError):
        return True
    return "site-packages" in path or not path.startswith(_STDLIB)


def _shown(filename: str) -> str:
    """The file relative to the working directory when it is inside it (where ``--import`` found it)."""
    try:
        return os.path.relpath(filename) if Path(filename).resolve().is_relative_to(Path.cwd()) else filename
    except (OSError, ValueError):
        return filename
