"""Who holds a backend open: queues that connected it and workers running on it.

Queues sharing one backend object (a helper ``async with TaskQueue(backend)``
inside another one's, a ``SyncTaskQueue`` beside an async queue, a ``Worker``
started on the backend a queue opened) would otherwise close it under each
other: a file database reopens on the next call, but an in-memory one is
thrown away with every task in it. A queue's ``close()`` closes the backend
only when nobody else holds it; a worker never closes a backend it did not open.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

__all__ = ["Holders", "holders"]


class Holders:
    """How many holders each backend has (weakly keyed: a dropped backend is forgotten)."""

    def __init__(self) -> None:
        # reentrant: a garbage-collected SyncTaskQueue lets go from inside the collector, which may run
        # on this very thread while it holds the lock
        self._lock = threading.RLock()
        self._counts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        # backends a queue asked to close while others held them: the last holder closes them
        self._close_wanted: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def lock(self) -> threading.RLock:
        """The lock of these counts, for state kept beside them (one lock: no order to get wrong)."""
        return self._lock

    def reset_after_fork(self) -> None:
        """A forked child: another thread of the parent may have held the lock as the fork came."""
        self._lock = threading.RLock()

    def hold(self, backend: Any) -> bool:
        """Count one more holder; False when ``backend`` cannot be tracked (every queue then closes it)."""
        try:
            with self._lock:
                self._counts[backend] = self._counts.get(backend, 0) + 1
        except TypeError:  # not weakly referenceable, or not hashable
            return False
        return True

    def count(self, backend: Any) -> int:
        """How many hold ``backend`` now."""
        try:
            with self._lock:
                return self._counts.get(backend, 0)
        except TypeError:
            return 0

    def want_closed(self, backend: Any) -> None:
        """A queue's close() found others holding ``backend``: whoever lets go last closes it."""
        with contextlib.suppress(TypeError), self._lock:
            self._close_wanted.add(backend)

    def close_wanted(self, backend: Any) -> bool:
        """True (once) when nobody holds ``backend`` any more and a queue asked to close it meanwhile."""
        try:
            with self._lock:
                if self._counts.get(backend, 0) or backend not in self._close_wanted:
                    return False
                self._close_wanted.discard(backend)
                return True
        except TypeError:
            return False

    def let_go(self, backend: Any, held: bool, *, want_closed: bool = False) -> int:
        """One holder fewer (when ``held``); returns how many others still hold ``backend``.

        ``want_closed``: when others still hold it, mark it for the last of them to close, in the same
        step (a holder let go by the garbage collector in between would otherwise see nothing to close).
        """
        try:
            with self._lock:
                count = self._counts.get(backend, 0) - (1 if held else 0)
                if count > 0:
                    self._counts[backend] = count
                    if want_closed:
                        self._close_wanted.add(backend)
                else:
                    self._counts.pop(backend, None)
        except TypeError:
            return 0
        return max(count, 0)


holders = Holders()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=holders.reset_after_fork)
