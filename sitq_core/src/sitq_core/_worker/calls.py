"""What kind of callable a task is, and what to do with an awaitable a sync call handed back.

The worker runs async functions on its loop and anything else on a thread: this decides which, once per function.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from ..memo import CallableMemo
from ..task import is_task_function
from ..thread_batch import CallResult, call_guarded
from .log import logger

_async_cache: CallableMemo[bool] = CallableMemo()


def _is_async_callable(func: Any) -> bool:
    """True when calling ``func`` returns a coroutine (memoised per function: asked once per task)."""
    known = _async_cache.get(func)
    if known is None:
        try:
            known = _inspect_async(func)
        except (
            Exception
        ):  # a user's object whose attribute lookup raises: run it as sync, where its error is the task's
            return False
        _async_cache.remember(func, known)
    return known


def _inspect_async(func: Any) -> bool:
    while isinstance(func, functools.partial) or is_task_function(func):
        func = func.func if isinstance(func, functools.partial) else func.__wrapped__
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - objects with async def __call__
    return call is not None and inspect.iscoroutinefunction(call)


class _DeadlinePassed(TimeoutError):
    """A sync task's call ran past its deadline (raised by the worker, never by the task's own code)."""


def _call_marked(
    mark_started: Callable[[], None],
    stamps: list[float],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run in a pool thread: stamp and say that the call starts, make it, stamp when it returned (or raised).

    ``stamps`` gets two ``time.perf_counter()`` readings taken in the thread itself:
    a task's deadline counts from its thread's start, and whether the call ended
    in time is decided by when it returned, not by when a busy event loop noticed.
    """
    stamps[0] = time.perf_counter()
    mark_started()
    try:
        return call_guarded(func, args, kwargs)
    finally:
        stamps[1] = time.perf_counter()


def _handed_back_awaitable(entry: CallResult | None) -> bool:
    """True when a batch member's sync call returned an awaitable (which the batch then awaits on the loop)."""
    return entry is not None and entry[3] is None and inspect.isawaitable(entry[2])


def _drop_awaitable(awaitable: Any) -> None:
    """An awaitable a cancelled task handed back, never to be awaited: close a coroutine (no "never awaited"
    warning), cancel a future; anything else is left to the garbage collector."""
    try:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        elif asyncio.isfuture(awaitable):
            awaitable.cancel()
    except Exception:  # an odd awaitable's own error: the task ends cancelled all the same
        logger.debug("could not close the awaitable of a cancelled task", exc_info=True)
