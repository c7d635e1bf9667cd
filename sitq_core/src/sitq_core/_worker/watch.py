"""The loop watch: warn while the worker's event loop does not answer, and say whose code holds it.

No lease is renewed while the loop is blocked (an async task that never awaits), so other workers
may take its tasks over: the daemon thread of ``loopwatch`` calls in here to log it, naming the code
that runs (``_loop_stack``) and the tasks started on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from typing import Any

from .log import logger
from .running import _named, _names
from .state import WorkerState


class LoopWatching(WorkerState):
    """Warns while the loop does not answer (called by the ``LoopWatch`` daemon thread)."""

    def _end_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()

    def _watch_busy(self) -> bool:
        """On the watch's thread: the loop must answer while tasks are held (their leases need it)."""
        return self._running and bool(self._held)

    def _loop_blocked(self, seconds: float) -> None:
        """On the watch's thread, while the loop does not answer: what blocks it, what follows, how to fix it.

        Called once the loop has not answered for half the lease, so a renewal
        is overdue and a lease may run out soon. What runs on the loop decides
        the diagnosis: this worker's async task, other code, or nothing but
        sitq's, asyncio's and Python's own code; then the loop most likely gets
        no CPU time (threads holding the GIL), and async advice would mislead.
        """
        self._loop_stall_seen = time.monotonic()  # (a float's store is atomic) for _let_expired_go's wording
        try:
            held = [r for r in list(self._held.values()) if not r.settled]
        except RuntimeError:  # changed as it was read: the loop runs again after all
            return
        current: Any = None
        with contextlib.suppress(Exception):
            current = asyncio.current_task(self._loop)
        on_loop = [r for r in held if r.on_loop and r.future is not None and not r.future.done()]
        blocking = next((r for r in on_loop if current is not None and r.future is current), None)
        others = [r for r in on_loop if r is not blocking]
        where, foreign = _loop_stack(self._loop_thread)
        async_advice = (
            "An async task must not block the loop (time.sleep, a CPU loop, blocking I/O): make it a plain (sync) "
            "function, which runs in a thread, or move the blocking call into asyncio.to_thread(...) or "
            "loop.run_in_executor(...)"
        )
        cpu_advice = (
            "Threads running CPU-bound Python code (sync tasks too) share the GIL with the loop: run fewer of them "
            "at once (a lower max_concurrency, and more worker processes), or raise lease_timeout"
        )
        starved = (
            "the loop most likely gets no CPU time (threads running CPU-bound Python code hold the GIL, or the "
            "machine is overloaded)"
        )
        if foreign is False:  # sitq at work (for a task too), or the loop idle: no code of anyone's blocks it
            what = (
                f"what runs on it is sitq's, asyncio's or Python's own code, not a task's or other code, so {starved}"
            )
            advice = cpu_advice
        elif blocking is not None:
            what = f"async task {_named(blocking)} is blocking it{where}"
            if others:
                what += f" (other async tasks running: {_names(others)})"
            advice = async_advice
        elif others:
            what = f"an async task running on it ({_names(others)}), or other code on the loop, is blocking it{where}"
            advice = async_advice
        elif foreign:
            what = f"none of this worker's async tasks runs on it: other code on the loop is blocking it{where}"
            advice = async_advice
        else:  # its stack could not be read
            what = f"none of this worker's async tasks runs on it: other code on the loop is blocking it, or {starved}"
            advice = f"{async_advice}. {cpu_advice}"
        soonest = min((r.lease_until for r in held), default=math.inf) - time.monotonic()
        if soonest <= 0:
            risk = "; some of them may have run out already"
        elif math.isfinite(soonest):
            risk = f"; the first of them may run out in {soonest:.1f} s"
        else:
            risk = ""
        logger.warning(
            "worker %s: its event loop has not responded for %.1f s (lease_timeout=%g s), so the leases of the "
            "%d task(s) it holds cannot be renewed%s: %s. Once their leases run out, other workers may run these "
            "tasks again while they still run here (sync tasks in their threads too), and this worker's outcomes "
            "for them are refused. %s",
            self.worker_id,
            seconds,
            self.lease_timeout,
            len(held),
            risk,
            what,
            advice,
        )

    def _loop_answered(self, seconds: float) -> None:
        """On the loop: it answers again after the watch reported it blocked; says if a lease may have run out.

        ``lease_until`` is the earliest a lease can end unrenewed, so a stall
        that passed none of them (and was shorter than the lease) cost none.
        """
        now = self._loop_stall_seen = time.monotonic()
        held = [r for r in self._held.values() if not r.settled]
        lapsed = [r for r in held if r.lease_until <= now]
        if seconds < self.lease_timeout and not lapsed:
            logger.warning(
                "worker %s: its event loop responded again after %.1f s, before any lease it holds ran out",
                self.worker_id,
                seconds,
            )
            return
        logger.warning(
            "worker %s: its event loop responded again after %.1f s; the leases of %d task(s) it holds may have run "
            "out meanwhile: another worker may run them too, and this worker's outcomes for them are refused",
            self.worker_id,
            seconds,
            len(lapsed or held),
        )


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
