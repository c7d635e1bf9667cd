"""Run several sync task calls one after another in one pool thread.

One thread hop for a run of short sync tasks is much cheaper than one hop
each. A batch is still a queue of separate tasks: a call that has not
started can be withdrawn (a cancel request) and a stopping worker can halt
the batch, so no task starts after its lease has been given back. A call
that has returned is not held back by a slow one after it: once the batch
runs longer than a moment, the loop watches it (:meth:`watch`) and is told
of each return (a short batch wakes the loop only once, when it ends). Nor
does a call that has not started wait behind a slow one before it: once the
batch has run a moment, the loop may take back its calls not started yet
(:meth:`take_unstarted`) and start them in slots that are free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Call", "CallResult", "TaskExit", "TaskStopIteration", "ThreadBatch", "call_guarded"]

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
CallResult = tuple[float, float, Any, BaseException | None]
"""(perf_counter at start, duration in seconds, return value, exception or None)."""


class TaskExit(Exception):
    """A task called ``sys.exit()``: a failure of that task, not a reason to stop the worker."""


class TaskStopIteration(Exception):
    """A sync task raised ``StopIteration``, carried out of its thread as a plain error (same message)."""


def call_guarded(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``func(*args, **kwargs)`` with ``SystemExit`` (and any other non-``Exception``) turned into :class:`TaskExit`.

    In a pool thread such an exception can only come from the task itself; let
    through, it would travel into the event loop and stop the worker.
    """
    try:
        return func(*args, **kwargs)
    except SystemExit as exc:
        raise TaskExit(f"the task called sys.exit({exc.code!r})") from exc
    except StopIteration as exc:
        # a StopIteration cannot travel through a Future: asyncio would raise a TypeError in the loop
        # instead and leave the task pending for good (Python itself turns it into a RuntimeError in
        # coroutines); it is carried as the task's own error, with its message
        raise TaskStopIteration(*exc.args) from exc
    except Exception:
        raise
    except BaseException as exc:
        raise TaskExit(f"the task raised {type(exc).__name__}") from exc


class ThreadBatch:
    """Calls run in order by :meth:`run` (in a pool thread); :meth:`withdraw` and :meth:`halt` come from the loop."""

    __slots__ = (
        "_calls",
        "_created",
        "_halted",
        "_lock",
        "_may_start",
        "_notify",
        "_on_start",
        "_ran",
        "_started",
        "_told",
        "_withdrawn",
    )

    def __init__(
        self,
        calls: list[Call],
        on_start: Callable[[int, float], None] | None = None,
        may_start: Callable[[int], bool] | None = None,
    ) -> None:
        self._calls = calls
        self._created = time.perf_counter()  # about when its slot was taken (the pool starts it at once)
        self._on_start = on_start
        self._may_start = may_start  # asked (in the pool thread) just before each call: False skips it, as withdrawn
        self._lock = threading.Lock()
        self._started = 0  # calls[:_started] have started (or were skipped as withdrawn)
        self._halted = False
        self._withdrawn: set[int] = set()
        self._ran: list[CallResult | None] = []  # one entry per call that started (None: withdrawn)
        self._notify: Callable[[], None] | None = None  # set by watch(): called as calls return
        self._told = False  # notify was called and the loop has not collected (returned_since) since

    def __len__(self) -> int:
        return len(self._calls)

    def run(self) -> list[CallResult | None]:
        """Run each call not withdrawn, stopping early when halted; None marks a withdrawn call.

        The result is shorter than the batch when it was halted: the calls
        past its end never started.
        """
        ran = self._ran
        for index, (func, args, kwargs) in enumerate(self._calls):
            with self._lock:
                if self._halted:
                    break
                self._started = index + 1
                skip = index in self._withdrawn or (self._may_start is not None and not self._may_start(index))
                notify = None
                if skip:
                    ran.append(None)
                    notify = self._to_notify()
            if skip:
                if notify is not None:
                    notify()
                continue
            began = time.perf_counter()
            if self._on_start is not None:
                self._on_start(index, began)
            try:
                value, error = call_guarded(func, args, kwargs), None
            except Exception as exc:
                value, error = None, exc
            entry = (began, time.perf_counter() - began, value, error)
            with self._lock:
                ran.append(entry)
                notify = self._to_notify()
            if notify is not None:
                notify()
        with self._lock:
            return list(ran)

    def _to_notify(self) -> Callable[[], None] | None:
        """(Under the lock, as a call has just returned) the callback to call, once until the loop collects."""
        if self._notify is None or self._told:
            return None
        self._told = True
        return self._notify

    def watch(self, notify: Callable[[], None]) -> None:
        """From now on, call ``notify`` (in the pool thread) when a call returns or is skipped.

        It is called once until the loop collects with :meth:`returned_since`:
        a run of quick returns costs the loop one wake-up, not one each.
        """
        with self._lock:
            self._notify = notify
            self._told = False

    def returned_since(self, index: int) -> list[CallResult | None]:
        """The entries of the calls from ``index`` on that have returned (or were skipped) so far, in order."""
        with self._lock:
            self._told = False
            return self._ran[index:]

    def withdraw(self, index: int) -> bool:
        """Keep call ``index`` from starting; False when it has already started."""
        with self._lock:
            if index < self._started or self._halted:
                return False
            self._withdrawn.add(index)
            return True

    def take_unstarted(self, after: float) -> tuple[list[int], float | None]:
        """Withdraw every call not started yet once the batch has run ``after`` seconds, to run elsewhere.

        Returns the indices withdrawn, and (when none were, as the batch is
        younger) the seconds until it is ``after`` old, or None when it has no
        call left to take (all started, withdrawn, or the batch halted).
        """
        with self._lock:
            if self._halted:
                return [], None
            left = [index for index in range(self._started, len(self._calls)) if index not in self._withdrawn]
            if not left:
                return [], None
            age = time.perf_counter() - self._created
            if age < after:
                return [], after - age
            self._withdrawn.update(left)
            return left, None

    def next_unstarted(self) -> int | None:
        """The index of the first call neither started nor withdrawn, once the batch is under way (a call started).

        None before its first call starts (the whole batch is about to run),
        when halted, or when no call is left to start.
        """
        with self._lock:
            if self._halted or not self._started:
                return None
            for index in range(self._started, len(self._calls)):
                if index not in self._withdrawn:
                    return index
            return None

    def halt(self) -> int:
        """Start no further calls; return how many had started (the one running included)."""
        with self._lock:
            self._halted = True
            return self._started

    def finished(self, index: int) -> bool:
        """True when call ``index`` has returned (or was withdrawn)."""
        with self._lock:
            return index < len(self._ran)

    def result(self, index: int) -> CallResult | None:
        """What call ``index`` returned, or None while it has not (or when it was withdrawn)."""
        with self._lock:
            return self._ran[index] if index < len(self._ran) else None
