"""The loop watch's helper: where the worker's blocked event loop is, past sitq's and asyncio's frames."""

from __future__ import annotations

import os
import sys

_OWN_PACKAGES = frozenset({"sitq", "sitq_core", "sitq_sqlite", "sitq_postgres", "asyncio"})


_LOOP_RUNNERS = frozenset({"asyncio.events", "asyncio.base_events", "asyncio.runners"})  # where the loop calls in


def _loop_stack(thread_id: int, depth: int = 3) -> tuple[str, bool | None]:
    """Where the loop's current code is, past sitq's and asyncio's frames, and whether that code is sitq's own.

    Only the frames of the callback or task step the loop is in count (not
    its callers). The innermost frame outside the standard library tells
    whose code runs: outside sitq and asyncio, the result is
    `` (now in f at file.py:12, called from ...)`` (those two left out) and
    True; in sitq or asyncio, or nowhere (sitq at work, for a task too, or
    the loop idle in select), ``('', False)``: no code of anyone's blocks the
    loop, so it waits for CPU time. ``('', None)``: the stack cannot be read.
    """
    try:
        frame = sys._current_frames().get(thread_id)
    except Exception:  # not every Python has it
        return "", None
    if frame is None:
        return "", None
    places: list[str] = []
    foreign: bool | None = None  # whose code runs: decided by the innermost frame outside the standard library
    while frame is not None:
        module = frame.f_globals.get("__name__")
        module = module if isinstance(module, str) else ""
        top = module.partition(".")[0]
        if module in _LOOP_RUNNERS or top == "uvloop":
            break
        if foreign is None and top not in sys.stdlib_module_names:
            foreign = top not in _OWN_PACKAGES
        if top not in _OWN_PACKAGES:
            code = frame.f_code
            places.append(f"{code.co_name} at {os.path.basename(code.co_filename)}:{frame.f_lineno}")
        frame = frame.f_back
    if not foreign:
        return "", False
    if len(places) > depth:  # the innermost ones, and the code the loop called (the task's or callback's own)
        places = [*places[: depth - 1], "...", places[-1]]
    return f" (now in {', called from '.join(places)})", True
