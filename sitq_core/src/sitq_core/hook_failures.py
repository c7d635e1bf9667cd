"""The log of observer hooks that keep raising: the first failure in full, then a count, with none left out.

An observer that fails on every task must not put a traceback per task in
the log, so after its first failure a plugin's hook gets one line a minute at
most, saying how many times it raised since the last line. The count not yet
logged is written when a stopping worker calls
:func:`flush_hook_failure_summaries` and when the process ends (an ``atexit`` hook registered after logging's
own, so it runs while logging still works): the last minute's failures are
reported too. A plugin manager let go (``reset_plugin_manager``) leaves its
counts here, so they are reported all the same.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass

from .errors import describe_exception

__all__ = ["EVERY", "HookFailureLog", "flush_hook_failure_summaries"]

logger = logging.getLogger("sitq.plugins")

#: seconds between two log lines about one plugin hook that keeps failing
EVERY = 60.0


@dataclass(slots=True)
class _Quiet:
    """One plugin hook's failures since its last log line."""

    logged_at: float  # time.monotonic() of its last line
    count: int = 0
    last_error: str = ""


class _State:
    """A ``HookFailureLog``'s counts; kept by this module from the first failure on, so none outlives its report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, str], _Quiet] = {}

    def flush(self) -> None:
        """Log each count not logged yet, once."""
        with self.lock:
            due = [(key, quiet.count, quiet.last_error) for key, quiet in self.seen.items() if quiet.count]
            now = time.monotonic()
            for key, *_ in due:
                self.seen[key] = _Quiet(now)
        for (plugin_name, hook_name), count, error in due:
            _log_count(plugin_name, hook_name, count, error)


class HookFailureLog:
    """The failures of a plugin manager's observer hooks, logged as the module docstring says; thread-safe."""

    def __init__(self) -> None:
        self._state = _State()

    def failed(self, plugin_name: str, hook_name: str, error: BaseException) -> None:
        """Log ``error`` of ``plugin_name``'s ``hook_name`` in full the first time, then count it."""
        key = (plugin_name, hook_name)
        now = time.monotonic()
        state = self._state
        with state.lock:
            quiet = state.seen.get(key)
            if quiet is None:
                state.seen[key] = _Quiet(now)
                with _failing_lock:
                    _failing.append(state)  # a few small dicts: only managers whose observers raised
            elif now - quiet.logged_at < EVERY:
                quiet.count += 1
                quiet.last_error = describe_exception(error)
                return
            else:
                state.seen[key] = _Quiet(now)
        if quiet is None:
            logger.error("sitq plugin %s raised in %s; ignored", plugin_name, hook_name, exc_info=error)
        else:
            _log_count(plugin_name, hook_name, quiet.count + 1, describe_exception(error))

    def flush(self) -> None:
        """Log the failures counted since each hook's last line, now."""
        self._state.flush()


def _log_count(plugin_name: str, hook_name: str, count: int, error: str) -> None:
    logger.error(
        "sitq plugin %s raised in %s again (%d more time(s) since the last line); ignored: %s",
        plugin_name,
        hook_name,
        count,
        error,
    )


#: the counts of every manager whose observers raised, held beyond the manager's life
_failing: list[_State] = []
_failing_lock = threading.Lock()


def flush_hook_failure_summaries() -> None:
    """Log every observer-hook failure counted but not logged yet, in every plugin manager of this process.

    For a worker that stops (after its last outcome was reported) and for the
    process's exit; calling it again with nothing new logs nothing.
    """
    with _failing_lock:
        states = list(_failing)
    for state in states:
        state.flush()


# Registered after logging's own handler (logging is imported above), so it runs first: atexit is last in, first out.
atexit.register(flush_hook_failure_summaries)
