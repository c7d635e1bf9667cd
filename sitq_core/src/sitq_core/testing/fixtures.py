"""The fixtures every contract uses; a backend author overrides ``backend_factory`` only.

Fixture contract:

- ``backend_factory`` (override it): a zero-argument callable returning a
  backend that is **not connected yet**. Every call must reach the **same
  store** (same file, database or shared key), fresh and empty for each test.
  A backend whose store cannot be shared between instances (an in-memory
  database) returns the same instance on every call instead.
- ``backend_capabilities`` (optional override): the capabilities to test;
  defaults to the backend's ``capabilities`` (an instance may narrow them). Declare fewer when one
  configuration of the backend lacks one (``:memory:`` is not PERSISTENT). Tests of what a backend
  *without* a capability must do run only when the backend instance does not declare it either.
- ``clock``: a :class:`FakeClock` installed on every backend of the test.
- ``backend``: a connected backend on the fresh store, closed afterwards.
- ``open_backend``: ``await open_backend()`` returns another connected backend
  from the factory (closed at teardown), for cross-instance contracts.
- ``backend_url`` (optional override): a URL, or a config mapping, that a
  fresh Python process can pass to ``sitq_core.resolve_backend`` to reach the
  test's store (so the backend must be installed with its entry point). The
  multi-process contract runs real reserver processes with it; by default it
  is None and that test is skipped, saying why.

The backends a contract test gets (``backend``, and those ``backend_factory`` and
``open_backend`` make for it) check the type of what each method returns
(:mod:`sitq_core.testing.answers`): a wrong one fails where it is returned, naming
the contract and the method, not as an ``AttributeError`` wherever it is first used.

Every contract test, and the ``backend`` fixture's connect and close, must
finish within ``SITQ_KIT_TIMEOUT`` seconds (120 by default): a backend call
that never answers fails its test, naming it, instead of hanging the run.
A call blocking the event loop's thread (``time.sleep``, a ``threading.Lock``
never released) is interrupted by a watchdog ``WATCHDOG_GRACE`` s later and
fails the test the same way, its traceback ending where it was blocked
(a call awaiting again after its cancellation, the loop idle, is named as such;
no watchdog for a limit past ``threading.TIMEOUT_MAX``, about 292 years, or inf).
The kit's shorter limits on single calls (5 s for a call that should answer
at once, 1 s for a result waiter to see a result) grow in proportion when it
is raised above 120, so a slow machine raises one knob. The thread and process
reservers of ``ConcurrencyContract`` get half of it (the thread test waits three
quarters for its threads), so the kit stops them and says which part hung before
the whole test's limit fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from ..backend import Backend, Capability
from .answers import check_answers, wrong_answer
from .clock import FakeClock

__all__ = ["BackendFactory", "BackendFixtures", "OpenBackend", "kit_timeout", "requires"]

TIMEOUT_VARIABLE = "SITQ_KIT_TIMEOUT"
DEFAULT_TIMEOUT = 120.0
#: Seconds past the limit before the watchdog interrupts a blocked event-loop thread (asyncio's own
#: timeout answers first whenever the loop still runs).
WATCHDOG_GRACE = 2.0
#: A signal whose default action is to ignore it: one arriving after the watchdog is gone does nothing.
_WATCHDOG_SIGNAL = getattr(signal, "SIGURG", None)

BackendFactory = Callable[[], Backend]
OpenBackend = Callable[[], Awaitable[Backend]]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_REQUIRES_ATTR = "__sitq_requires__"


def requires(*capabilities: Capability) -> Callable[[F], F]:
    """Mark a contract test as needing capabilities; it is skipped, naming them, when absent."""

    def mark(func: F) -> F:
        setattr(func, _REQUIRES_ATTR, tuple(capabilities))
        return func

    return mark


def kit_timeout() -> float:
    """Seconds a whole contract test may take (``SITQ_KIT_TIMEOUT``, default 120): a slow CI may raise it."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {raw!r}")
    return value


@contextlib.contextmanager
def _watchdog(limit: float, what: str) -> Iterator[None]:
    """Fail with ``what`` when the event loop's thread is still blocked ``WATCHDOG_GRACE`` s after ``limit``.

    ``asyncio.timeout`` only fires when the loop runs; a backend method blocking its thread
    (``time.sleep``, a ``threading.Lock`` never released) would hang the run instead. A
    watchdog thread then sends the main thread a signal, which interrupts the blocking call;
    its handler raises the failure there, so the traceback ends where the thread was blocked.
    Only on the main thread (where Python runs signal handlers) and where ``pthread_kill`` exists;
    off for a limit a thread cannot wait for (past ``threading.TIMEOUT_MAX``, or inf: no limit).
    """
    main = threading.main_thread()
    if (
        _WATCHDOG_SIGNAL is None
        or not hasattr(signal, "pthread_kill")
        or threading.current_thread() is not main
        or not limit + WATCHDOG_GRACE < threading.TIMEOUT_MAX
    ):
        yield
        return
    sig = _WATCHDOG_SIGNAL
    state = {"armed": True, "fired": False}
    lock = threading.Lock()
    done = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # the report ends in the backend's frame, where the thread was blocked
        with lock:
            ours, state["fired"] = state["fired"], False
        if ours and _loop_idle(frame):
            pytest.fail(
                f"{what} did not finish within {limit:g} s: its event loop was idle {WATCHDOG_GRACE:g} s later, "
                "so a call swallowed or outlived its cancellation (it awaits again in a finally or except "
                "after CancelledError, or catches CancelledError and carries on): let CancelledError "
                f"propagate{_task_stacks()}"
            )
        if ours:
            pytest.fail(
                f"{what} did not finish within {limit:g} s: the event loop's thread was still blocked "
                f"{WATCHDOG_GRACE:g} s later, by a call that blocks instead of awaiting (time.sleep, a "
                "threading.Lock nobody releases, a synchronous driver call); the traceback ends where it was "
                f"blocked{_other_threads()}"
            )
        if callable(previous):
            previous(signum, frame)

    def watch() -> None:
        if done.wait(limit + WATCHDOG_GRACE):
            return
        with lock:
            if state["armed"]:
                state["fired"] = True
                signal.pthread_kill(main.ident or 0, sig)

    previous = signal.signal(sig, handler)
    watcher = threading.Thread(target=watch, name="sitq-kit-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            state["armed"] = False
        done.set()
        signal.signal(sig, previous)


def _loop_idle(frame: FrameType | None) -> bool:
    """Whether the main thread was waiting in the event loop's selector: no call was blocking it."""
    return frame is not None and frame.f_globals.get("__name__") == "selectors" and frame.f_code.co_name == "select"


def _task_stacks() -> str:
    """Where the event loop's unfinished tasks are awaiting (the call that outlived its cancellation)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running loop
        return ""
    stacks = []
    for task in tasks:
        lines: list[str] = []
        awaited: Any = task.get_coro()  # follow what each coroutine awaits, down to the innermost
        while (frame := getattr(awaited, "cr_frame", None)) is not None:
            lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
            awaited = getattr(awaited, "cr_await", None)
        stacks.append(f"{task.get_name()}:\n" + "\n".join(lines))
    return "; tasks still awaiting:\n" + "\n".join(stacks) if stacks else ""


def _other_threads() -> str:
    """The stacks of the threads other than the main one and the watchdog (the lock's holder may be one)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = [
        f"thread {names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
        if ident != threading.main_thread().ident and names.get(ident) != "sitq-kit-watchdog"
    ]
    return "; other threads:\n" + "\n".join(stacks) if stacks else ""


def naive_time_failure(error: BaseException) -> str | None:
    """What a ``TypeError`` from mixing naive and aware datetimes means for a backend, or None for any other error.

    A backend that stores or reads back naive datetimes fails nearly every contract with Python's bare
    "can't compare offset-naive and offset-aware datetimes", raised in its own code or in the kit's.
    """
    if not isinstance(error, TypeError) or "offset-naive and offset-aware" not in str(error):
        return None
    return (
        f"times must come back timezone-aware UTC: a naive datetime met an aware one ({type(error).__name__}: "
        f"{error}); does the backend store or read back naive datetimes?"
    )


def _time_limited(test: Callable[..., Awaitable[Any]], contract: str) -> Callable[..., Awaitable[Any]]:
    """``test`` failing with its contract's name when it runs past ``kit_timeout()`` (a hung backend call)."""

    @functools.wraps(test)
    async def limited(*args: Any, **kwargs: Any) -> Any:
        limit = kit_timeout()
        kwargs = _answers_checked(kwargs, contract)
        try:
            with _watchdog(limit, f"{contract}: {test.__name__}"):
                async with asyncio.timeout(limit) as scope:
                    return await test(*args, **kwargs)
        except TypeError as exc:
            naive = naive_time_failure(exc)
            if naive is None:
                raise
            pytest.fail(f"{contract}: {naive}")
        except TimeoutError:
            if not scope.expired():
                raise  # the test's (or the backend's) own TimeoutError
            pytest.fail(
                f"{contract}: {test.__name__} did not finish within {limit:g} s: a backend call never "
                f"answered (raise {TIMEOUT_VARIABLE} if the backend is merely slow)"
            )

    limited.__sitq_time_limited__ = True  # type: ignore[attr-defined]
    return limited


def _answers_checked(fixtures: dict[str, Any], contract: str) -> dict[str, Any]:
    """The test's fixtures with every backend they give checking what its methods return (``answers``).

    ``backend`` itself, and the backends ``backend_factory`` and ``open_backend`` make: a wrong
    type fails where it is returned, naming ``contract`` and the method, not with an
    ``AttributeError`` wherever the answer is first used.
    """
    fixtures = dict(fixtures)
    if "backend" in fixtures:
        fixtures["backend"] = check_answers(fixtures["backend"], contract)
    factory, opener = fixtures.get("backend_factory"), fixtures.get("open_backend")
    if callable(factory):
        fixtures["backend_factory"] = lambda: check_answers(factory(), contract)
    if callable(opener):

        async def open_checked() -> Backend:
            opened: Backend = await opener()
            return check_answers(opened, contract)

        fixtures["open_backend"] = open_checked
    return fixtures


async def _answered(call: Awaitable[T], what: str) -> T:
    """``await call`` in the ``backend`` fixture, failing the test (not hanging the run) when it never answers."""
    limit = kit_timeout()
    try:
        with _watchdog(limit, f"backend fixture: {what}"):
            async with asyncio.timeout(limit) as scope:
                return await call
    except TimeoutError:
        if not scope.expired():
            raise
        pytest.fail(f"backend fixture: {what} did not answer within {limit:g} s (raise {TIMEOUT_VARIABLE} if slow)")


class BackendFixtures:
    """Fixtures shared by every ``*Contract`` class (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__module__.startswith("sitq_core.testing"):
            return  # the kit's own contract tests only; a backend author's extra tests are theirs
        for name, value in list(vars(cls).items()):
            limited = getattr(value, "__sitq_time_limited__", False)
            if name.startswith("test_") and inspect.iscoroutinefunction(value) and not limited:
                setattr(cls, name, _time_limited(value, cls.__name__))

    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        """Override me: return a callable building an unconnected backend on a fresh store."""
        raise NotImplementedError(
            "sitq_core.testing: override the 'backend_factory' fixture in your test class, e.g.\n"
            "    @pytest.fixture\n"
            "    def backend_factory(self, tmp_path):\n"
            "        return lambda: MyBackend(tmp_path / 'db')"
        )

    @pytest.fixture
    def backend_capabilities(self, backend_factory: BackendFactory) -> frozenset[Capability]:
        """The capabilities under test: by default, those the backend declares (class or instance)."""
        return frozenset(backend_factory().capabilities)

    @pytest.fixture
    def backend_url(self) -> str | dict[str, Any] | None:
        """Override me (optional): the test store as a URL or config for other processes."""
        return None

    @pytest.fixture
    def clock(self) -> FakeClock:
        """A fake UTC clock shared by every backend of one test."""
        return FakeClock()

    @pytest.fixture(autouse=True)
    def _sitq_capability_gate(
        self, request: pytest.FixtureRequest, backend_capabilities: frozenset[Capability]
    ) -> None:
        """Skip tests marked with ``requires(...)`` whose capabilities are not declared."""
        needed: tuple[Capability, ...] = getattr(request.function, _REQUIRES_ATTR, ())
        missing = [cap for cap in needed if cap not in backend_capabilities]
        if missing:
            names = ", ".join(f"Capability.{cap.name}" for cap in missing)
            pytest.skip(f"backend does not declare {names} (see Backend.capabilities)")

    @pytest_asyncio.fixture
    async def backend(self, backend_factory: BackendFactory, clock: FakeClock) -> AsyncIterator[Backend]:
        """A connected backend on a fresh, empty store, with the fake clock installed."""
        instance = backend_factory()
        if not isinstance(instance, Backend):
            pytest.fail(f"backend_factory must return a sitq_core.backend.Backend, got {instance!r}")
        instance.clock = clock
        await _answered(instance.connect(), "connect()")
        try:
            counts = await _answered(instance.counts(), "counts()")
            if wrong := wrong_answer("counts", counts):
                pytest.fail(f"backend fixture: {wrong} (see StatsContract)")
            if any(counts.values()):
                # the store is not fresh, or counts() miscounts: list_tasks() tells which one to blame
                held = await _answered(instance.list_tasks(limit=1), "list_tasks()")
                if wrong := wrong_answer("list_tasks", held):
                    pytest.fail(f"backend fixture: {wrong} (see StatsContract)")
                if not held:
                    pytest.fail(
                        f"backend fixture: counts() of the fresh store says {counts} but list_tasks() finds no "
                        "task: counts() is wrong (see StatsContract), or list_tasks() misses tasks the store holds"
                    )
                pytest.fail(
                    "backend_factory must give each test a fresh, empty store "
                    f"(use tmp_path or a unique name); this one already holds {counts}, task {held[0].id} among them"
                )
            yield instance
        finally:
            await _answered(instance.close(), "close()")

    @pytest_asyncio.fixture
    async def open_backend(
        self, backend: Backend, backend_factory: BackendFactory, clock: FakeClock
    ) -> AsyncIterator[OpenBackend]:
        """A helper opening more backends on the test's store (closed at teardown)."""
        opened: list[Backend] = []

        async def open_another() -> Backend:
            other = backend_factory()
            other.clock = clock
            await other.connect()
            if other is not backend:
                opened.append(other)
            return other

        try:
            yield open_another
        finally:
            for other in reversed(opened):
                await other.close()
