"""In-process wake-ups that work across event loops and threads.

A backend object may be shared by a queue running in one event loop (for
example the private loop of ``SyncTaskQueue``) and a worker in another. An
``asyncio.Event`` belongs to one loop, so waiters here register a future on
their own loop and are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Hashable, Iterable

__all__ = ["Notifier"]


class Notifier:
    """Wake coroutines waiting on a key, from any thread or event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[Hashable, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._seq = 0

    @property
    def seq(self) -> int:
        """A number that changes with every notification (of any key).

        Read it before checking for what you wait for and pass it to
        :meth:`wait` as ``since``: a notification sent between the check and
        the wait then ends the wait at once instead of being missed.
        """
        return self._seq

    async def wait(self, key: Hashable, timeout: float | None, *, since: int | None = None) -> bool:
        """Wait until ``notify(key)`` is called; False when ``timeout`` passes first.

        With ``since`` (a :attr:`seq` read earlier), return True at once when
        any notification came after that reading.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if since is not None and since != self._seq:
                return True
            self._waiters.setdefault(key, []).append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    with contextlib.suppress(ValueError):
                        waiters.remove(entry)
                    if not waiters:
                        del self._waiters[key]

    def has_waiters(self, key: Hashable) -> bool:
        """True when someone waits on ``key`` (lets callers skip work)."""
        return key in self._waiters

    def notify(self, key: Hashable) -> None:
        """Wake every waiter of ``key``."""
        self.notify_many((key,))

    def notify_many(self, keys: Iterable[Hashable]) -> None:
        """Wake every waiter of each key."""
        woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        with self._lock:
            self._seq += 1
            if not self._waiters:  # the common case: nobody waits
                return
            for key in keys:
                woken.extend(self._waiters.pop(key, ()))
        _wake(woken)

    def notify_all(self) -> None:
        """Wake every waiter of every key (after notices may have been lost, e.g. in a reconnect)."""
        with self._lock:
            self._seq += 1
            woken = [entry for entries in self._waiters.values() for entry in entries]
            self._waiters.clear()
        _wake(woken)


def _wake(woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, future in woken:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
