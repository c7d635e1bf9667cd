"""Small asyncio helpers of the worker: bounded waits, a call on a daemon thread, futures left behind.

They keep a stop from hanging on a stuck call and keep asyncio from logging outcomes nobody retrieves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .log import logger


def _seen(task: asyncio.Future[None]) -> None:
    """Log a stop's error here: its caller may have given up, and asyncio would report it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("the worker's stop ended with an error", exc_info=task.exception())


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's outcome, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


async def _on_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a new daemon thread: an import that hangs must not keep the process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def main() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=main, name="sitq-load", daemon=True).start()
    return await future


async def _bounded(awaitable: Awaitable[Any], timeout: float) -> Any:
    """``await awaitable`` cancelled after ``timeout`` s; TimeoutError even if it swallowed that cancellation."""
    deadline = asyncio.timeout(timeout)
    async with deadline:
        value = await awaitable
    if deadline.expired():  # it caught the CancelledError and returned anyway: still past its time
        raise TimeoutError
    return value


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
