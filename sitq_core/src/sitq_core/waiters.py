"""The ``get_result`` calls waiting on one queue, so that closing the queue can end them.

Without this a waiter outlived ``close()``: it went on polling the store and
reopened it (a PostgreSQL backend opened a new pool and listener that nobody
closed). ``close()`` now cancels each waiter's task; the waiter recognises the
cancel as the close's (not its caller's) and raises ``TaskQueueError``.
Registering costs one dict entry per call; the futures ``close()`` waits on
are made only when it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from . import forks

__all__ = ["ResultWaiters"]

#: how long ``close()`` waits for cancelled waiters on its own loop to unwind
_UNWIND_SECONDS = 1.0


class ResultWaiters:
    """Tasks inside ``get_result``, by the loop they run on; the ones a close interrupted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # queues may be shared by loops in several threads
        self._waiting: dict[asyncio.Task[object], asyncio.AbstractEventLoop] = {}
        self._interrupted: set[asyncio.Task[object]] = set()
        self._unwound: dict[asyncio.Task[object], asyncio.Future[None]] = {}
        self._closes: dict[int, int] = {}  # close() calls under way, by the thread whose loop runs them
        forks.forget_in_child(self)

    def _after_fork_in_child(self) -> None:
        """Only the forking thread goes on in a child: forget the closes and waits of the others' loops.

        A close that another thread was running at the fork never ends here:
        counted on, it made every ``get_result`` of the child refuse for good.
        A fork from a coroutine keeps what that thread's own loop is doing.
        """
        me = threading.get_ident()
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._closes = {thread: n for thread, n in self._closes.items() if thread == me}
        self._waiting = {task: loop for task, loop in self._waiting.items() if loop is here}
        self._interrupted = {task for task in self._interrupted if task in self._waiting}
        self._unwound = {task: done for task, done in self._unwound.items() if done.get_loop() is here}

    def close_begins(self) -> None:
        me = threading.get_ident()
        with self._lock:
            self._closes[me] = self._closes.get(me, 0) + 1

    def close_ends(self) -> None:
        me = threading.get_ident()
        with self._lock:
            left = self._closes.pop(me, 0) - 1
            if left > 0:
                self._closes[me] = left

    @property
    def closing(self) -> bool:
        """True while a close() of the queue runs: a get_result starting then would reopen the store."""
        return bool(self._closes)

    def __reduce__(self) -> tuple[type[ResultWaiters], tuple[()]]:
        return (ResultWaiters, ())  # a copied or unpickled queue has no waiters of its own yet

    def enter(self) -> asyncio.Task[object] | None:
        """Record the current task as waiting; returns it (None outside a task)."""
        task = asyncio.current_task()
        if task is not None:
            with self._lock:
                self._waiting[task] = task.get_loop()
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        """The wait of ``task`` is over (returned, raised or interrupted)."""
        if task is None:
            return
        with self._lock:
            self._waiting.pop(task, None)
            self._interrupted.discard(task)  # a close's cancel that had not landed yet never will
            unwound = self._unwound.pop(task, None)
        if unwound is not None and not unwound.done():
            unwound.get_loop().call_soon_threadsafe(_set_done, unwound)

    def interrupted(self, task: asyncio.Task[object] | None) -> bool:
        """True when ``task``'s cancellation came from ``close()`` alone (then it is undone)."""
        if task is None:
            return False
        with self._lock:
            if task not in self._interrupted:
                return False
            self._interrupted.discard(task)
        return task.uncancel() == 0  # the caller's own cancel, if one came too, still stands

    async def end_all(self) -> None:
        """Cancel every waiting task; wait briefly for those on this loop to leave ``get_result``.

        A task is marked as the close's at the moment it is cancelled, on its
        own loop, and only once: a second close at the same time, or the
        caller's own cancel landing first, must not be taken for this one.
        """
        here = asyncio.get_running_loop()
        with self._lock:
            for task, loop in list(self._waiting.items()):
                if loop.is_closed():  # that loop ended under its waiter: the task never runs again
                    del self._waiting[task]
                    self._interrupted.discard(task)
            mine = [task for task, loop in self._waiting.items() if loop is here]
            others = [(task, loop) for task, loop in self._waiting.items() if loop is not here]
            unwound = [self._unwound.setdefault(task, here.create_future()) for task in mine]
            cancel_now = [task for task in mine if task not in self._interrupted]
            self._interrupted.update(cancel_now)
        for task in cancel_now:
            task.cancel()  # suspended inside get_result: the cancel lands there
        for task, loop in others:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its task will never run again
                loop.call_soon_threadsafe(self._cancel_if_waiting, task)
        if unwound:
            await asyncio.wait(unwound, timeout=_UNWIND_SECONDS)

    def _cancel_if_waiting(self, task: asyncio.Task[object]) -> None:
        """On ``task``'s own loop: cancel it only if it is still inside ``get_result`` (never the code after)."""
        with self._lock:
            cancel = task in self._waiting and task not in self._interrupted
            if cancel:
                self._interrupted.add(task)
        if cancel:
            task.cancel()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
