"""sitq task functions for the benchmark: module-level so worker processes import them (``-i bench_tasks``)."""

from __future__ import annotations

import time


def noop() -> int:
    """The trivial task: returns 1 (a result is stored, as huey stores one)."""
    return 1


async def anoop() -> int:
    """The trivial task as a coroutine (runs on the worker's event loop, no thread hop)."""
    return 1


def stamp() -> float:
    """Returns the wall-clock time at which it started."""
    return time.time()


def sleep_stamp(seconds: float) -> float:
    """Sleeps, then returns the wall-clock time at which it ended."""
    time.sleep(seconds)
    return time.time()
