"""Waits bounded in time that never lose a cancel, on every Python 3.11 release.

``asyncio.wait_for`` returns the result, swallowing the cancel, when a cancel
and the awaited thing's end land in one loop step (Python 3.11): the worker's
heartbeat went on that way after ``asyncio.run`` cancelled it, and the loop
never ended. ``asyncio.timeout`` raises ``CancelledError`` instead of
``TimeoutError`` inside a task already being cancelled (3.11.0 to 3.11.2, which
Debian 12 ships). ``asyncio.wait`` has neither flaw, so this is built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable``, at most ``timeout`` seconds (None: no bound); TimeoutError after that.

    On timeout the awaitable is cancelled and left to unwind before the
    error is raised, as ``asyncio.wait_for`` does. A cancel of the caller
    always propagates, even when the awaitable finished in the same step;
    the awaitable is cancelled and has unwound by then.
    """
    if timeout is None:
        return await awaitable
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _pending = await asyncio.wait({inner}, timeout=max(timeout, 0.0))
    except asyncio.CancelledError:
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # a second cancel: the first is raised below
            await asyncio.wait({inner})  # it has unwound when the caller goes on, as with wait_for
        raise
    if done:
        return inner.result()
    inner.cancel()
    await asyncio.wait({inner})  # let it unwind; a cancel of the caller meanwhile still propagates
    if inner.cancelled():
        raise TimeoutError
    return inner.result()  # it ended as the cancel landed: what it returned, or raised, stands
