"""In-process wake-ups that work across event loops and threads.

A backend object may be shared by a queue running in one event loop (for
example the private loop of ``SyncTaskQueue``) and a worker in another. An
``asyncio.Event`` belongs to one loop, so waiters here register a future on
their own loop and are woken with ``call_soon_threadsafe``.

Two ways not to miss a notice that comes between a check and the wait after it:

- :meth:`Notifier.subscribe` registers *before* the check; a notice for that
  key then ends the wait that follows at once (and notices for other keys
  do not).
- For work, where the check (a reserve) and the wait are separate backend
  calls, a backend reads :meth:`Notifier.count` of a tracked key when the
  reserve begins (:func:`record_mark`) and compares it in ``wait_for_work``
  (:func:`take_mark`). The mark belongs to the calling task's context, so two
  workers sharing one backend object keep their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import TracebackType

from .bounded import within

__all__ = ["Notifier", "Subscription", "record_mark", "safety_pauses", "take_mark"]

_Entry = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class Notifier:
    """Wake coroutines waiting on a key, from any thread or event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, list[_Entry]] = {}
        self._counts: dict[Hashable, int] = {}  # notices per tracked key

    def after_fork_in_child(self) -> None:
        """Forget the parent's waiters (their loops do not exist here) and its lock's state."""
        self._lock = threading.Lock()
        self._waiters = {}

    def subscribe(self, key: Hashable) -> Subscription:
        """Register for ``key`` now; wait later with :meth:`Subscription.wait` (use it as a context manager)."""
        return Subscription(self, key)

    async def wait(self, key: Hashable, timeout: float | None) -> bool:
        """Wait until ``notify(key)`` is called; False when ``timeout`` passes first."""
        with self.subscribe(key) as subscription:
            return await subscription.wait(timeout)

    def track(self, key: Hashable) -> None:
        """Count the notices of ``key`` from now on (see :meth:`count`)."""
        with self._lock:
            self._counts.setdefault(key, 0)

    def count(self, key: Hashable) -> int:
        """How many notices of a tracked ``key`` were sent (0 for a key not tracked)."""
        return self._counts.get(key, 0)

    def has_waiters(self, key: Hashable) -> bool:
        """True when someone waits on ``key`` (lets callers skip work)."""
        return key in self._waiters

    def notify(self, key: Hashable) -> None:
        """Wake every waiter of ``key``."""
        self.notify_many((key,))

    def notify_many(self, keys: Iterable[Hashable]) -> None:
        """Wake every waiter of each key."""
        if not self._waiters and not self._counts:  # the common case: nobody waits, nothing counted
            return
        woken: list[_Entry] = []
        with self._lock:
            for key in keys:
                if key in self._counts:
                    self._counts[key] += 1
                if self._waiters:
                    woken.extend(self._waiters.pop(key, ()))
        _wake(woken)

    def notify_all(self) -> None:
        """Wake every waiter of every key (after notices may have been lost, e.g. in a reconnect)."""
        with self._lock:
            for key in self._counts:
                self._counts[key] += 1
            woken = [entry for entries in self._waiters.values() for entry in entries]
            self._waiters.clear()
        _wake(woken)

    def _register(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            self._waiters.setdefault(key, []).append(entry)

    def _unregister(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(entry)
                if not waiters:
                    del self._waiters[key]


class Subscription:
    """One registration for one key, made before the caller checks; woken at most once."""

    def __init__(self, notifier: Notifier, key: Hashable) -> None:
        loop = asyncio.get_running_loop()
        self._notifier, self._key = notifier, key
        self._entry: _Entry = (loop, loop.create_future())
        notifier._register(key, self._entry)

    async def wait(self, timeout: float | None) -> bool:
        """True once a notice came since subscribing (at once if it already did); False after ``timeout``."""
        future = self._entry[1]
        if future.done():
            return True
        try:
            await within(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._notifier._unregister(self._key, self._entry)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


# Marks live in a dict owned by the calling task's context: a worker's reserve and the
# wait_for_work task it starts (asyncio copies the context into it) share one dict.
_MARKS: contextvars.ContextVar[dict[int, int]] = contextvars.ContextVar("sitq_reserve_marks")


def record_mark(owner: object, value: int) -> None:
    """Remember ``value`` (a notice count read as a reserve begins) for this caller and ``owner``."""
    marks = _MARKS.get(None)
    if marks is None:
        marks = {}
        _MARKS.set(marks)
    marks[id(owner)] = value


def take_mark(owner: object) -> int | None:
    """The value :func:`record_mark` kept for this caller and ``owner``, once; None when there is none."""
    marks = _MARKS.get(None)
    return None if marks is None else marks.pop(id(owner), None)


def safety_pauses(first: float, maximum: float, clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
    """Pauses between a waiter's own re-checks: ``first``, doubling up to ``maximum``, each +-10% jitter.

    The re-check is only a safety net for a lost wake-up; backing off with
    jitter keeps thousands of long waits from all querying in step. The
    jitter belongs to the process, not to the waiter: each pause ends on the
    next point of a grid (a fifth of the pause apart, at a phase this process
    drew at random) at least 90% of the pause away, as read on ``clock`` (the
    waiting loop's ``time``). Waiters of one process that started together
    so re-check in the same loop turn, and a backend serves them with one
    read; other processes re-check at other moments.
    """
    pause = first
    while True:
        step = pause / 5
        now = clock()
        offset = _grid_phase * step
        point = math.ceil((now + 0.9 * pause - offset) / step) * step + offset
        yield max(point - now, 0.0)
        pause = min(pause * 2, maximum)


_grid_phase = random.random()  # where this process's re-check grid starts, as a fraction of its step


def _new_grid_phase() -> None:
    global _grid_phase
    _grid_phase = random.random()  # a forked child re-checks at moments of its own, not its parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_grid_phase)


def _wake(woken: list[_Entry]) -> None:
    for loop, future in woken:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
