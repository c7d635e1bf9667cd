"""The signal handlers ``Worker.run()`` replaces: which are the application's to call too, and putting them back.

``run()`` installs handlers for SIGINT/SIGTERM; when it returns, whatever was there before must be there again.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, cast


def _restore_signal_handlers(
    loop: asyncio.AbstractEventLoop,
    installed: list[signal.Signals],
    previous: dict[signal.Signals, Any],
    app_handlers: dict[signal.Signals, tuple[Callable[..., object], tuple[Any, ...]]],
) -> None:
    """Put back the handlers ``run()`` found (asyncio would leave SIGINT to the default handler).

    A handler the application added with ``loop.add_signal_handler`` goes
    back on the loop (it was left to the default: the app's next SIGTERM
    killed the process). A signal that comes while they are swapped (a
    second Ctrl-C just as the drain ends) would meet Python's default handler
    and surface as a stray KeyboardInterrupt; it is handed to the restored
    handler instead.
    """
    late: list[signal.Signals] = []
    for signum in installed:
        try:
            try:
                loop.remove_signal_handler(signum)
            finally:
                handler = previous.get(signum)
                app_handler = app_handlers.get(signum)
                if app_handler is not None and not loop.is_closed():
                    loop.add_signal_handler(signum, app_handler[0], *app_handler[1])
                elif handler is not None and not _is_loop_handler(handler):
                    signal.signal(signum, handler)
        except KeyboardInterrupt:
            late.append(signal.SIGINT)
    for signum in late:
        signal.raise_signal(signum)  # what the caller's own handler makes of it (SIG_IGN: nothing)


def _is_loop_handler(handler: Any) -> bool:
    """asyncio's own no-op: it stands for a handler the loop held already, and put back it would swallow every
    later signal (the loop no longer handles them), so the default is left instead."""
    return getattr(handler, "__name__", "") == "_sighandler_noop"


def _loop_signal_callback(
    loop: asyncio.AbstractEventLoop, signum: int
) -> tuple[Callable[..., object], tuple[Any, ...]] | None:
    """The callback and arguments the application gave ``loop.add_signal_handler(signum, ...)``, if any.

    asyncio has no public way to read it back; its Unix loops keep it in
    ``_signal_handlers`` as a Handle. Any other loop: None (run() then
    leaves the default, as before).
    """
    handlers = getattr(loop, "_signal_handlers", None)
    handle = handlers.get(signum) if isinstance(handlers, dict) else None
    callback = getattr(handle, "_callback", None)
    args = getattr(handle, "_args", None)
    if not isinstance(handle, asyncio.Handle) or handle.cancelled() or not callable(callback):
        return None
    return callback, tuple(args or ())


def _application_handler(signum: int, handler: Any) -> Callable[[int, FrameType | None], Any] | None:
    """``handler`` (from ``signal.getsignal``) when it is the application's own, for ``run()`` to call too.

    Not an application's: SIG_DFL, SIG_IGN, None (set outside Python),
    asyncio's no-op (the loop's handler is chained on its own), Python's
    ``default_int_handler`` and ``asyncio.run``'s SIGINT handler (the first
    raises KeyboardInterrupt, the second cancels the main task: either would
    break the drain the signal began), and a handler sitq itself set (``sitq
    worker``'s, which ends the process at once once run() has returned).
    """
    if not callable(handler) or _is_loop_handler(handler):
        return None
    if signum == signal.SIGINT and handler is signal.default_int_handler:
        return None
    func = handler.func if isinstance(handler, functools.partial) else handler
    if isinstance(getattr(func, "__self__", None), asyncio.Runner):
        return None
    if (getattr(func, "__module__", None) or "").partition(".")[0] == "sitq_core":
        return None
    return cast("Callable[[int, FrameType | None], Any]", handler)


def _handler_to_put_back(signum: int, previous: Any) -> Any:
    """What ``run()`` leaves once it ends: ``previous``, or asyncio's default when that cannot be put back."""
    if previous is None or _is_loop_handler(previous):
        return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    return previous
