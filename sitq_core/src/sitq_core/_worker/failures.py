"""How the worker reads a task's exception: retry or not, its text for the result and the log, missing code.

One place for it, so a task's failure is judged and written alike wherever it is caught.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import traceback as tb_module

from ..errors import SerializationError
from ..terminal_text import escaped_controls
from ..thread_batch import TaskExit, TaskStopIteration


def _missing_here(exc: BaseException) -> bool:
    """True when loading a task failed because its module or function is not on this worker.

    An import error, pickle's "Can't get attribute" lookup, or the msgpack
    serializer's import of the path: another worker (of another deploy) may
    have it. An AttributeError from the payload's own code (a broken
    ``__setstate__``) fails the same way everywhere, so it is not one.
    """
    for error in (exc, exc.__cause__):
        if isinstance(error, ImportError):
            return True
        if isinstance(error, AttributeError) and str(error).startswith("Can't get attribute"):
            return True
    return isinstance(exc, SerializationError) and exc.message.startswith("cannot import task function")


def _should_retry(exc: BaseException) -> bool:
    """Exceptions opt out of retries with a class attribute ``sitq_retry = False``."""
    try:
        return bool(getattr(exc, "sitq_retry", True))
    except BaseException:  # an odd attribute must not take the worker down: the default applies
        return True


def _log_text(error: str | None, limit: int = 300) -> str:
    """An error message for one log line: its first line, escaped (terminal_text), at most ``limit`` characters."""
    text = escaped_controls((error or "").strip().splitlines()[0]) if (error or "").strip() else "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _log_error(error: str | None, raised: object) -> str:
    """A failure's text for a log line: the exception's type name, then its message ("KeyError: 'user_id'").

    ``error`` is what is stored (``str(exception)``, or sitq's own words about
    it); ``raised`` the exception, when there is one. A message that is blank
    was stored as the type name: that name alone. sitq's private ``TaskExit``
    says what happened in its message ("the task called sys.exit(3)"): no name.
    """
    text = _log_text(error)
    if not isinstance(raised, BaseException) or isinstance(raised, TaskExit):
        return text
    name = type(raised).__name__
    if text == name or text.startswith(name + " ("):  # blank message, or one that could not be read
        return text
    return f"{name}: {text}"


def _task_error(exc: BaseException) -> BaseException:
    """The error to record for a task (and to show observers): what the task raised.

    A sync task's ``StopIteration`` and other non-``Exception`` errors crossed
    its thread wrapped (see ``call_guarded``); the task's own exception is
    recorded, so its message and type read as the user wrote them. Only
    ``SystemExit`` becomes :class:`TaskExit` ("the task called sys.exit(3)"
    says more than "3").
    """
    if isinstance(exc, TaskStopIteration | TaskExit):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, SystemExit):
            return cause
        return exc
    if isinstance(exc, SystemExit):
        error = TaskExit(f"the task called sys.exit({exc.code!r})")
        error.__cause__ = exc
        return error
    return exc


def _describe(exc: BaseException) -> str:
    """``str(exc)``, or its type name when that is blank (empty or only spaces) or ``__str__`` itself fails."""
    try:
        text = str(exc)
        return text if text.strip() else type(exc).__name__
    except BaseException as failure:  # a SystemExit or CancelledError from ``__str__`` is the task's, too
        return f"{type(exc).__name__} (its message could not be read: {type(failure).__name__})"


def _format(exc: BaseException, *, from_task: bool = False) -> str:
    """``exc``'s formatted traceback; ``from_task``: an exception a task's call raised, cut to start at its code.

    The frames above the task's own (the worker's execution, its thread pool,
    the call guard, ``current_task``'s wrapper, asyncio's) are the same for
    every task and only push the one that matters down; they are cut from each
    exception of the chain that has a frame of some other code. The exception
    the call raised with no such frame (a builtin enqueued as is, ``int`` or
    ``math.sqrt``, raises from C) keeps only its innermost frame, the call;
    a chained one with none (raised in sitq or asyncio itself) is kept whole.
    """
    try:
        if not from_task:
            return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
        shown = tb_module.TracebackException(type(exc), exc, exc.__traceback__)
        _trim_machinery(shown, set())
        if shown.stack and all(_machinery(frame.filename) for frame in shown.stack):
            del shown.stack[:-1]  # the task is a builtin: the frames above its call say nothing of it
        return "".join(shown.format())
    except BaseException as failure:
        return f"{type(exc).__name__} (its traceback could not be formatted: {type(failure).__name__})"


_SITQ_CORE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MACHINERY = (
    _SITQ_CORE,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(concurrent.futures.__file__)) + os.sep,
)
_NOT_MACHINERY = _SITQ_CORE + "testing" + os.sep  # the conformance suite's own task functions


def _machinery(filename: str) -> bool:
    return filename.startswith(_MACHINERY) and not filename.startswith(_NOT_MACHINERY)


def _trim_machinery(shown: tb_module.TracebackException, seen: set[int]) -> None:
    """Cut the leading frames of sitq's (and asyncio's) machinery from ``shown`` and the exceptions it chains."""
    if id(shown) in seen:
        return
    seen.add(id(shown))
    stack = shown.stack
    for index, frame in enumerate(stack):
        if not _machinery(frame.filename):
            del stack[:index]
            break
    for chained in (shown.__cause__, shown.__context__, *(getattr(shown, "exceptions", None) or ())):
        if chained is not None:
            _trim_machinery(chained, seen)
