"""A forked child forgets the threads, connections and locks it inherited, and opens its own on first use.

After ``os.fork`` (``gunicorn --preload``, a ``fork`` multiprocessing pool)
the child has copies of the parent's objects but none of its threads: a
backend's connection thread or a ``SyncTaskQueue``'s loop thread is gone,
so a job queued to it would wait forever, and a lock held by another
parent thread at the fork stays locked. Objects registered here reset that
state in the child (``os.register_at_fork``). What they inherited is kept
referenced and never closed: closing the parent's SQLite connection or
PostgreSQL socket from the child could disturb the parent's use of it.
What only other threads referenced (their thread-local connections) is
pinned just before the fork, so the child does not close it either.

SQLite's own per-file state is copied as it is: a fork while another thread
is inside SQLite can leave the child's first call hanging (documented in
docs/how-to/sqlite-backend.md: fork from a quiet moment).
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol

__all__ = ["ForkAware", "forget_in_child", "keep_inherited"]

log = logging.getLogger("sitq")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...  # optional too: ``_before_fork() -> list`` of things to pin


_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_inherited: list[Any] = []  # what children inherited: referenced so that it is never closed or collected
# Taken just before a fork: what only other threads reference (their thread-locals, their frames). A child
# drops other threads' state before its hooks run; without these references that state's connections
# would be closed there, and a close can hang on a lock that a vanished thread held.
_pinned: list[Any] = []


def forget_in_child(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on (while ``obj`` lives)."""
    _registered.add(obj)


def keep_inherited(*things: Any) -> None:
    """Keep the parent's objects alive in the child without using or closing them."""
    _inherited.extend(thing for thing in things if thing is not None)


def _before_fork() -> None:
    for obj in list(_registered):
        pin = getattr(obj, "_before_fork", None)
        if pin is not None:
            try:
                _pinned.extend(pin())
            except Exception:  # must not stop the fork
                log.exception("sitq: preparing %r for fork failed", obj)


def _after_fork_in_parent() -> None:
    _pinned.clear()


def _after_fork_in_child() -> None:
    _inherited.extend(_pinned)
    _pinned.clear()
    for obj in list(_registered):
        try:
            obj._after_fork_in_child()
        except Exception:  # one object's reset must not stop the others'
            log.exception("sitq: resetting %r after fork failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
