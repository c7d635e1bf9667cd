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

SQLite's own per-process state is copied as it is. A fork in the middle of
another thread's transaction leaves the child believing that transaction's
locks are still held, and its first write waits for them until
``busy_timeout``. Any connection open at the fork leaves the child's own
connections without real file locks, so another process's last close can
delete the WAL under them. Backends therefore run their SQLite calls inside
:data:`gate`: a fork waits (a bounded time) until no call is inside it and
keeps new ones out until it is done; in between, the before-fork hooks close
the connections (``SQLiteBackend._before_fork``), and the parent reopens
them on its next call.

A worker's ``run()`` hands SIGINT/SIGTERM to its event loop, which points
them at a no-op handler and the process's signal wake-up fd at the loop's
own socket. A child keeping that setup (a ``fork`` pool's process) ignored
SIGTERM and wrote every signal it got into the parent's socket: the worker
took it for its own. :class:`SignalSetup` records what ``run()`` (and
``sitq worker`` around it) changed; every child forked while it is in place
gets the previous handlers back and no wake-up fd, with those signals
blocked in the forking thread across the fork so that none arrives in
between (it is delivered in the child once the handlers are back).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = [
    "ForkAware",
    "ForkGate",
    "SignalSetup",
    "forget_in_child",
    "gate",
    "inherited_in_child",
    "keep_inherited",
]

log = logging.getLogger("sitq")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...  # optional too: ``_before_fork() -> list`` of things to pin


_registered: weakref.WeakSet[Any] = weakref.WeakSet()
_inherited: list[Any] = []  # what children inherited: referenced so that it is never closed or collected
_outlives_exit = False  # _inherited has a reference that is never given back (see _keep_past_exit)
# Taken just before a fork, per forking thread (two threads may fork at once): what only other threads
# reference (their thread-locals, their frames). A child drops other threads' state before its hooks run;
# without these references that state's connections would be closed there, and a close can hang on a lock
# that a vanished thread held.
_forking_thread = threading.local()


class ForkGate:
    """Keeps calls that must not be cut in half by a fork (a SQLite transaction) and ``os.fork`` apart.

    Any number of threads may be inside at once; a fork waits until none is
    (at most ``wait`` seconds, then goes ahead and logs a warning) and holds
    new ones at the door until it is done, in the parent as in the child.
    Several threads may fork at once: the door opens when the last is done.
    The fast path (no fork pending) is one lock round trip each way.
    """

    def __init__(self, wait: float = 5.0) -> None:
        self.wait = wait
        self._reset()

    def _reset(self) -> None:
        # re-entrant: garbage collection may run a finalizer that enters the gate (an inline connection's,
        # closing as its thread's locals go) on a thread already holding this lock, in the middle of leave()
        self._lock = threading.RLock()
        self._inside = 0
        self._forks = 0  # forks in progress (their before-hooks have run, their after-hooks not yet)
        self._calm = threading.Event()  # set when a pending fork may go: nobody inside
        self._open = threading.Event()  # set when no fork is pending
        self._open.set()

    def enter(self) -> None:
        while True:
            with self._lock:
                if not self._forks:
                    self._inside += 1
                    return
                door = self._open
            door.wait()

    def try_enter(self) -> bool:
        """``enter`` unless a fork is pending (then False at once): for callers that must not block."""
        with self._lock:
            if self._forks:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1
            if self._forks and self._inside == 0:
                self._calm.set()

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Run the body inside the gate: no fork happens while it runs."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextmanager
    def stepped_out(self) -> Iterator[None]:
        """From inside the gate, let a fork through while the body runs (a sleep holding no database lock)."""
        self.leave()
        try:
            yield
        finally:
            self.enter()

    @property
    def quiet(self) -> bool:
        """In a fork's before-hooks: True when no call was inside as the fork went ahead (connections may close)."""
        return bool(getattr(_forking_thread, "quiet", False))

    def close_for_fork(self) -> None:
        with self._lock:
            self._forks += 1
            self._open.clear()
            if self._inside == 0:
                self._calm.set()
            else:
                self._calm.clear()
        quiet = self._calm.wait(self.wait)
        if not quiet:
            with self._lock:
                inside = self._inside
            log.warning(
                "sitq: forking while %d database call(s) still run in other threads; "
                "the child may find their locks taken",
                inside,
            )
        _forking_thread.quiet = quiet

    def open_after_fork(self) -> None:
        _forking_thread.quiet = False
        with self._lock:
            self._forks -= 1
            if not self._forks:
                self._open.set()

    def reset_in_child(self) -> None:
        """In the child: the threads that were waiting at the door, or forking, do not exist here."""
        _forking_thread.quiet = False
        self._reset()


gate = ForkGate()


def forget_in_child(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on (while ``obj`` lives)."""
    _registered.add(obj)


def inherited_in_child(obj: Any) -> None:
    """In a child: ``obj`` is the parent's; keep it alive, and never call its fork hooks again here."""
    _inherited.append(obj)
    _registered.discard(obj)


def keep_inherited(*things: Any) -> None:
    """Keep the parent's objects alive in the child without using or closing them."""
    _inherited.extend(thing for thing in things if thing is not None)


class SignalSetup:
    """Signal handlers sitq installed in this process, which a forked child must not keep.

    Registered for as long as the handlers are in place (``Worker.run``,
    ``sitq worker``). In the child, a signal whose handler is still the one
    recorded here gets back the handler it had before, latest setup first
    (so ``run()``'s undoes to the command's, then the command's to the
    default). With ``wakeup_fd`` (an event loop's handlers, which write to
    the loop's socket), the wake-up fd is unset too once no signal is left
    with one of them. Handlers someone else changed since are left as they are.
    """

    def __init__(self, *, wakeup_fd: bool = False) -> None:
        self.wakeup_fd = wakeup_fd
        self.handlers: dict[int, tuple[Any, Any]] = {}  # signum -> (the handler installed, the one to put back)

    def installed(self, signum: int, handler: Any, previous: Any) -> None:
        """``signum``'s handler is now ``handler``; a child puts back ``previous``, or if this setup had
        replaced that signal's handler before, what was there before the first."""
        first = self.handlers.get(signum)
        self.handlers[signum] = (handler, previous if first is None else first[1])

    def register(self) -> None:
        """From now on, every forked child undoes these handlers (register before installing any)."""
        if self not in _signal_setups:
            _signal_setups.append(self)

    def unregister(self) -> None:
        with contextlib.suppress(ValueError):
            _signal_setups.remove(self)


_signal_setups: list[SignalSetup] = []  # in the order registered
_can_block = hasattr(signal, "pthread_sigmask")


def _block_setup_signals() -> None:
    """In the forking thread, hold the recorded signals back until the child has undone their handlers."""
    signums = {signum for setup in list(_signal_setups) for signum in setup.handlers}
    if signums and _can_block:
        _forking_thread.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, signums)


def _unblock_setup_signals() -> None:
    mask = getattr(_forking_thread, "sigmask", None)
    if mask is not None:
        _forking_thread.sigmask = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _undo_signal_setups_in_child() -> None:
    """Put back the handlers the setups replaced and unset the wake-up fd they used; no locks, no logging."""
    setups = list(_signal_setups)
    _signal_setups.clear()  # this process runs no loop with those handlers: its own children have nothing to undo
    writing: list[Any] = []  # handlers that write to the wake-up fd
    for setup in reversed(setups):
        for signum, (handler, previous) in setup.handlers.items():
            if setup.wakeup_fd:
                writing.append(handler)
            try:
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, previous)
            except (OSError, RuntimeError, TypeError, ValueError):
                pass  # left as inherited: nothing better to do here
    if not writing:
        return
    try:
        for signum in signal.valid_signals():
            current = signal.getsignal(signum)
            if any(current is handler for handler in writing):
                return  # another signal still relies on the loop's wake-up fd (the application's own loop handler)
        signal.set_wakeup_fd(-1)
    except (OSError, RuntimeError, ValueError):
        pass


def _pins() -> list[Any]:
    pins: list[Any] | None = getattr(_forking_thread, "pins", None)
    if pins is None:
        pins = _forking_thread.pins = []
    return pins


def _before_fork() -> None:
    gate.close_for_fork()
    pins = _pins()
    for obj in list(_registered):
        pin = getattr(obj, "_before_fork", None)
        if pin is not None:
            try:
                pins.extend(pin())
            except Exception:  # must not stop the fork
                log.exception("sitq: preparing %r for fork failed", obj)
    _block_setup_signals()  # last: the wait above may be long, and this thread's signals wait with it


def _after_fork_in_parent() -> None:
    _unblock_setup_signals()
    _pins().clear()
    gate.open_after_fork()


def _after_fork_in_child() -> None:
    _undo_signal_setups_in_child()
    _unblock_setup_signals()  # a signal held back across the fork now meets the handler put back
    gate.reset_in_child()
    pins = _pins()
    _inherited.extend(pins)
    pins.clear()
    for obj in list(_registered):
        try:
            obj._after_fork_in_child()
        except Exception:  # one object's reset must not stop the others'
            log.exception("sitq: resetting %r after fork failed", obj)
    if _inherited:
        _keep_past_exit()


def _keep_past_exit() -> None:
    """Give ``_inherited`` one reference that is never released, so the child's exit does not free it either.

    As the interpreter ends, module globals are cleared and what they alone
    kept is freed half-way through the shutdown: an inherited asyncpg
    connection's finaliser then failed (``'NoneType' object has no attribute
    'warn'``, printed at every child's exit) and tried to abort the parent's
    socket. Left unfreed, nothing of the parent's runs or closes in the child;
    the process's end closes its copies of the descriptors (the parent keeps its own).
    Grandchildren inherit the reference with the rest.
    """
    global _outlives_exit
    if _outlives_exit:
        return
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_inherited))
    except (ImportError, AttributeError):  # pragma: no cover - not CPython: freed at exit as before
        log.debug("sitq: cannot keep inherited connections past the interpreter's exit here")
        return
    _outlives_exit = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
