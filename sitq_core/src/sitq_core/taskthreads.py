"""The thread pool that runs sync tasks: daemon threads, so an abandoned call never holds the process open.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the
interpreter exits. A sync task left running after ``stop(timeout=...)`` (its
lease already released, so it runs again elsewhere) would then keep an
application that embeds a worker from exiting until the call returned, while a
supervisor waits and finally kills it. These threads are daemons: at exit the
process leaves them behind, as ``sitq worker`` does.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

__all__ = ["TaskThreads"]

P = ParamSpec("P")
T = TypeVar("T")

_WorkItem = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TaskThreads(Executor):
    """Up to ``max_workers`` daemon threads named ``<prefix>_<n>``, started as work arrives and reused."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by a thread that waits for work
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False
        work = self._work
        # dropped without shutdown(): its idle threads end too (they hold no reference to it)
        self._on_collected = weakref.ref(self, lambda _ref: work.put(None))

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                name = f"{self._prefix}_{len(self._threads)}"
                thread = threading.Thread(target=_serve, args=(self._work, self._idle), name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._work.put(None)
        if wait:
            for thread in list(self._threads):
                thread.join()


def _serve(work: queue.SimpleQueue[_WorkItem | None], idle: threading.Semaphore) -> None:
    """One thread's loop: run work items until the pool shuts down (or is garbage-collected)."""
    while True:
        item = work.get()
        if item is None:  # shut down: pass the word on to the next thread
            work.put(None)
            return
        future, fn, args, kwargs = item
        del item
        if future.set_running_or_notify_cancel():
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # the caller's to see, whatever it is (as in ThreadPoolExecutor)
                future.set_exception(exc)
            else:
                future.set_result(value)
                del value  # an idle thread kept its last return value (a batch's: all of them) alive
        del future, fn, args, kwargs
        idle.release()
