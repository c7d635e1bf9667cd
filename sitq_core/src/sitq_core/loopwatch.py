"""``LoopWatch``: a daemon thread that notices an event loop that stopped answering, and says so while it lasts.

A worker renews its leases from its event loop. An async task that blocks
that loop (``time.sleep``, a CPU loop, blocking I/O) stops every renewal, of
the sync tasks running safely in threads too, and nothing on the loop can
notice until the block ends, by which time other workers may have taken those
tasks. A thread can: every ``period`` seconds it wakes, and while the owner is
busy (holds tasks) it asks the loop to answer a ping (``call_soon_threadsafe``).
A ping left unanswered for ``late_after`` seconds is reported once, from the
thread, while the loop is still blocked; the answer that finally comes is
reported too. An idle owner is not pinged, so an idle worker costs one wake-up
per ``period`` and nothing on its loop; each wake-up also checks that the loop
is not closed (one closed without stopping its owner is never pinged again).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable

from . import forks

__all__ = ["LoopWatch"]

log = logging.getLogger("sitq.worker")


class LoopWatch:
    """Watches ``loop`` on a daemon thread named ``name``; ``stop()`` ends it (from any thread).

    ``busy()`` (called on the thread) says whether the loop must answer now;
    ``blocked(seconds)`` is called on the thread once per unanswered ping that
    is ``late_after`` seconds old, and ``answered(seconds)`` on the loop when
    such a ping is answered at last. The callbacks are held weakly (bound
    methods of the owner), so the watch never keeps its owner alive; it ends
    when the owner is gone or the loop is closed. In a forked child (which has
    none of the parent's threads) an inherited watch counts as stopped.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        period: float,
        late_after: float,
        busy: Callable[[], bool],
        blocked: Callable[[float], None],
        answered: Callable[[float], None],
        name: str,
    ) -> None:
        self._loop = loop
        self._period = period
        self._late_after = late_after
        self._busy = weakref.WeakMethod(busy)
        self._blocked = weakref.WeakMethod(blocked)
        self._answered = weakref.WeakMethod(answered)
        self._name = name
        self._lock = threading.Lock()  # the ping's state, shared by the thread and the loop
        self._stopped = threading.Event()
        self._sent: float | None = None  # monotonic time of the ping not answered yet
        self._reported = False  # that ping was reported late
        self._thread: threading.Thread | None = None
        forks.forget_in_child(self)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread at its next wake-up (at once if it waits); never blocks."""
        self._stopped.set()

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _after_fork_in_child(self) -> None:
        """The thread does not exist here, and a lock it held at the fork would stay held: start over, stopped."""
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stopped.set()
        self._thread = None
        self._sent, self._reported = None, False

    def _run(self) -> None:
        stopped = self._stopped
        try:
            while not stopped.wait(self._period):
                if not self._check():
                    return
        except Exception:  # a watch must never take anything down with it
            log.exception("sitq: the event loop watch %s failed; it stops", self._name)

    def _check(self) -> bool:
        """One wake-up: send a ping, or report the one still unanswered. False: the watch should end."""
        if self._loop.is_closed():  # closed without stopping the owner (an idle one would never ping to learn it)
            return False
        now = time.monotonic()
        with self._lock:
            sent = self._sent
            late = sent is not None and not self._reported and now - sent >= self._late_after * 0.98  # float slack
            if late:
                self._reported = True
        if sent is None:
            busy = self._busy()
            if busy is None:  # the owner is gone
                return False
            if not busy():
                return True
            with self._lock:
                self._sent, self._reported = now, False
            try:
                self._loop.call_soon_threadsafe(self._pong, now)
            except RuntimeError:  # the loop is closed: nothing left to watch
                return False
            return True
        if late:
            blocked = self._blocked()
            if blocked is None:
                return False
            assert sent is not None
            blocked(now - sent)
        return True

    def _pong(self, sent: float) -> None:
        """On the loop: the ping sent at ``sent`` is answered."""
        with self._lock:
            if self._sent != sent:  # a ping of before a fork, or of a watch restarted since
                return
            late = self._reported
            self._sent, self._reported = None, False
        if late:
            answered = self._answered()
            if answered is not None:
                answered(time.monotonic() - sent)
