"""Module-level task functions for the tests (importable by worker processes and msgpack)."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add(a: int, b: int = 0) -> int:
    return a + b


async def async_add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


def boom(message: str = "boom") -> None:
    raise ValueError(message)


class Permanent(Exception):
    """An error type that opts out of retries."""

    sitq_retry = False


async def async_boom(message: str = "boom") -> None:
    raise RuntimeError(message)


def permanent() -> None:
    raise Permanent("do not retry me")


def flaky(counter_file: str, failures: int) -> str:
    """Fails ``failures`` times (counted in a file), then succeeds."""
    path = Path(counter_file)
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < failures:
        raise RuntimeError(f"flaky failure {count + 1}")
    return f"ok after {count + 1}"


async def sleepy(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


def sync_sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def record(path: str, n: int, hold: float = 0.0) -> int:
    """Append 'start n pid' to a file, optionally hold the slot, append 'end n pid'."""
    with open(path, "a") as f:
        f.write(f"start {n} {os.getpid()}\n")
    if hold:
        time.sleep(hold)
    with open(path, "a") as f:
        f.write(f"end {n} {os.getpid()}\n")
    return n


GATE = threading.Event()
GATE_REACHED = threading.Event()  # set by wait_for_gate as it starts (in this process)


def wait_for_gate(timeout: float = 10.0) -> str:
    GATE_REACHED.set()
    GATE.wait(timeout)
    return "through"


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 2


def echo(value: Any) -> Any:
    return value


def whoami(hold: float = 0.0, started_marker: str | None = None) -> int:
    """Return the pid of the process that ran it, after holding its slot (``started_marker``: a file made at start)."""
    if started_marker is not None:
        _append(started_marker, f"{os.getpid()}\n")
    if hold:
        time.sleep(hold)
    return os.getpid()


def kill_my_worker() -> None:
    """A poison pill: kills the worker process running it."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def make_object() -> object:
    """Returns something msgpack cannot carry."""
    return object()


from sitq import task  # noqa: E402


@task(max_retries=2, retry_backoff=0.01, priority=4, queue_name="decorated")
def decorated_flaky(counter_file: str, failures: int) -> str:
    """flaky() with retries attached by the decorator."""
    return flaky(counter_file, failures)


@task
async def decorated_async(x: int, eta: str = "kwarg named eta") -> str:
    await asyncio.sleep(0)
    return f"{x} {eta}"


def returns_failing_awaitable() -> Any:
    """A sync function handing back a coroutine that raises (an undecorated wrapper of async code)."""

    async def failing() -> None:
        raise ValueError("the awaitable failed")

    return failing()


def naive_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that forgets to be async: its wrapper is a plain ``def`` handing back fn's coroutine."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@naive_wrapper
async def naive_sleepy(seconds: float) -> str:
    """sleepy() behind a naive (sync) decorator: the worker calls it in a thread, then awaits its coroutine."""
    await asyncio.sleep(seconds)
    return "slept"


def gate_then_sleepy(seconds: float) -> Any:
    """Blocks its thread at GATE (at most 30 s), then hands back sleepy(seconds)'s coroutine."""
    GATE_REACHED.set()
    GATE.wait(30)
    return sleepy(seconds)


def slow_then_sleepy(sync_seconds: float, async_seconds: float) -> Any:
    """Spends ``sync_seconds`` in its thread, then hands back sleepy(async_seconds)'s coroutine."""
    time.sleep(sync_seconds)
    return sleepy(async_seconds)


def exits(code: int = 3) -> None:
    """Calls sys.exit inside a task."""
    import sys

    sys.exit(code)


async def async_exits(code: int = 4) -> None:
    import sys

    await asyncio.sleep(0)
    sys.exit(code)


def fails_with_odd_text(text: str) -> None:
    """Raises an error whose message a store may refuse (a lone surrogate, a NUL)."""
    raise ValueError(text)


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def raises_unprintable() -> None:
    raise UnprintableError()


async def raises_cancelled_itself() -> None:
    raise asyncio.CancelledError()


def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


async def async_raises_keyboard_interrupt() -> None:
    await asyncio.sleep(0)
    raise KeyboardInterrupt


class Unusual(BaseException):
    """Neither an Exception nor one of Python's exit signals."""


async def async_raises_base_exception() -> None:
    raise Unusual("unusual")


def raises_base_exception(message: str) -> None:
    raise Unusual(message)


def returns_cancelling_awaitable() -> Any:
    async def cancelled() -> None:
        raise asyncio.CancelledError()

    return cancelled()


async def stubborn(linger: float = 0.3) -> str:
    """Swallows its cancellation, lingers, and returns as if nothing happened."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(linger)
    return "finished anyway"


async def very_stubborn(seconds: float = 60.0, started_marker: str | None = None) -> str:
    """Ignores every cancellation until ``seconds`` have passed (a broad ``except BaseException`` retry loop).

    ``started_marker``: a file created as it starts (its reservation alone shows 'running' already).
    """
    if started_marker is not None:
        os.close(os.open(started_marker, os.O_CREAT | os.O_WRONLY))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        except asyncio.CancelledError:
            continue
    return "finished at last"


def raises_stop_iteration(message: str = "no more") -> None:
    raise StopIteration(message)


def raises_stop_iteration_bare() -> None:
    next(iter(()))  # an exhausted iterator: StopIteration with no message


class ExitsWhenPickled:
    """A return value whose pickling calls ``sys.exit`` (a ``__reduce__`` gone wrong)."""

    def __reduce__(self) -> Any:
        raise SystemExit("pickling this exits")


def returns_exits_when_pickled() -> ExitsWhenPickled:
    return ExitsWhenPickled()


HELD_LOCKS: list[Any] = []


def hold_write_lock(path: str) -> str:
    """Takes the SQLite file's write lock and keeps it after returning (a frozen store, as seen by sitq)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    HELD_LOCKS.append(conn)
    return "holding"


def release_write_locks() -> None:
    while HELD_LOCKS:
        conn = HELD_LOCKS.pop()
        conn.execute("ROLLBACK")
        conn.close()


def enqueue_through(backend: Any) -> str:
    """In another process: enqueue ``add(1, 2)`` through the backend object it was given (pickled)."""
    from sitq import SyncTaskQueue

    with SyncTaskQueue(backend) as queue:
        return queue.enqueue(add, 1, 2)


def enqueue_with_sync_queue(queue: Any) -> str:
    """In another process: enqueue ``add(1, 2)`` through the SyncTaskQueue it was given (pickled)."""
    with queue:
        return str(queue.enqueue(add, 1, 2))


async def async_record(path: str, hold: float) -> str:
    """Append 'start' to a file, then hold the slot for ``hold`` seconds (counts how often a task started)."""
    await asyncio.to_thread(_append, path, "start\n")
    await asyncio.sleep(hold)
    return "done"


def _append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def record_then_wait_for_gate(path: str, n: int) -> int:
    """Append 'start n', block until GATE opens (at most 30 s), append 'end n'."""
    _append(path, f"start {n}\n")
    GATE.wait(30)
    _append(path, f"end {n}\n")
    return n


def record_then_fail_at_gate(path: str) -> None:
    """Append 'start', block until GATE opens (at most 30 s), then raise (a retryable failure)."""
    _append(path, "start\n")
    GATE.wait(30)
    raise RuntimeError("failed after the gate")


async def parent_awaiting_child(db: str, marks: str, gate: str) -> str:
    """Enqueue ``child_at_gate`` on the SQLite file ``db`` and await its result inside this task (workers.md:
    "give the worker spare slots"); appends 'parent <attempt>' to ``marks`` once the child is enqueued."""
    from sitq import SQLiteBackend, TaskQueue, current_task

    task = current_task()
    async with TaskQueue(SQLiteBackend(db)) as queue:
        child = await queue.enqueue(child_at_gate, marks, gate)
        await asyncio.to_thread(_append, marks, f"parent {task.attempt if task else 0}\n")
        result = await queue.get_result(child)
        assert result is not None
        return f"parent got {queue.deserialize_result(result)}"


def child_at_gate(marks: str, gate: str) -> str:
    """Append 'child' to ``marks``, then wait (at most 60 s) until the file ``gate`` exists."""
    _append(marks, "child\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "through"


LOOP_BLOCK_WARNED = threading.Event()  # set by the tests' log handler when a worker warns of a blocked loop


async def blocks_the_loop(limit: float = 10.0) -> str:
    """The mistake under test: an async task that blocks its event loop (until the worker has warned of it)."""
    return "warned" if LOOP_BLOCK_WARNED.wait(limit) else "not warned"


def square(x: int) -> int:
    return x * x


def fork_pool_squares(n: int = 10) -> int:
    """Sum of squares computed in a ``fork`` multiprocessing pool; its ``__exit__`` SIGTERMs the pool's processes."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(square, range(n)))


def _forked_sleeper() -> int:
    """Fork a child that sleeps (at most 30 s) and exits 0; the parent gets its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which must never return into the worker's code
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    return pid


def fork_child_and_sigterm_it() -> int:
    """Fork a child, SIGTERM it at once, return its exit code (-15: the signal ended it, as by default)."""
    import signal

    pid = _forked_sleeper()
    os.kill(pid, signal.SIGTERM)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def fork_child_then_wait_for_gate(marks: str, gate: str) -> int:
    """Fork a sleeping child, append 'forked' to ``marks``, wait (at most 30 s) until the file ``gate`` exists,
    then return the child's exit code (-15 when a SIGTERM to the process group ended it)."""
    pid = _forked_sleeper()
    _append(marks, "forked\n")
    deadline = time.monotonic() + 30
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def fork_pool_then_wait_for_gate(marks: str, gate: str) -> int:
    """Hold a ``fork`` pool of two open: use it, append 'pool up' to ``marks``, wait (at most 30 s) for ``gate``."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        total = sum(pool.map(square, range(4)))
        _append(marks, "pool up\n")
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return total


def app_sigterm_handler(signum: int, frame: object) -> None:
    """An application's own SIGTERM handler, in place before a worker's ``run()``."""


def _describe_handler(handler: Any) -> str:
    import signal

    for name, known in (
        ("app", app_sigterm_handler),
        ("default_int_handler", signal.default_int_handler),
        ("SIG_DFL", signal.SIG_DFL),
        ("SIG_IGN", signal.SIG_IGN),
    ):
        if handler is known:
            return name
    return getattr(handler, "__name__", repr(handler))


def fork_and_report_signal_setup() -> dict[str, Any]:
    """In a forked child: the SIGTERM and SIGINT handlers and the signal wake-up fd it inherited."""
    import json
    import signal

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            wakeup_fd = signal.set_wakeup_fd(-1)
            report = {
                "SIGTERM": _describe_handler(signal.getsignal(signal.SIGTERM)),
                "SIGINT": _describe_handler(signal.getsignal(signal.SIGINT)),
                "wakeup_fd": wakeup_fd,
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


class HashRaises:
    """A callable whose __hash__ and __eq__ raise something other than TypeError (cloudpickle ships it fine)."""

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __call__(self, x: int) -> int:
        return x * 2


class Scaler:
    """A class whose methods are tasks (``@sitq.task`` on a method binds like a function)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @task(priority=6, queue_name="methods", max_retries=1)
    def scale(self, x: int) -> int:
        return self.factor * x

    @task(queue_name="methods")
    async def scale_later(self, x: int) -> int:
        await asyncio.sleep(0)
        return self.factor * x


def logged(func: Any) -> Any:
    """A ``functools.wraps`` decorator put OUTSIDE ``@sitq.task``: its wrapper marks what it returns."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return ("logged", func(*args, **kwargs))

    return wrapper


@logged
@task(priority=4, queue_name="wrapped", max_retries=2)
def wrapped_outside(x: int) -> int:
    return x * 10


class CallObj:
    """A callable object (decorated, it is named after its class, as undecorated)."""

    def __call__(self, x: int) -> int:
        return x + 1


decorated_call_obj = task(CallObj())


STOPPABLE: list[Any] = []  # the worker a test lets its task stop (this process only)


async def stop_own_worker() -> str:
    """Awaits stop() of the worker running it: a deployment's 'shut down after this' task."""
    await STOPPABLE[0].stop()
    return "stop asked"


def stop_own_worker_from_thread() -> str:
    """The same from a sync task: the stop sent to the worker's loop, this thread waiting for its answer."""
    worker, loop = STOPPABLE
    asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(timeout=10)
    return "stop asked"


LOOP_GATES: dict[str, asyncio.Event] = {}  # opened by a test on the worker's own loop (same process)


async def ends_at_gate(path: str, name: str, on_cancel: str = "raise") -> str:
    """Append '<name> start', wait for ``LOOP_GATES[name]``, append '<name> done' and return ``name``.

    Cancelled, it appends '<name> cancelled'; then ``on_cancel`` says what it does: "raise" (ends
    cancelled), "return" (swallows it and returns at once), "linger" (swallows it, waits for
    ``LOOP_GATES[name + '/late']``, then returns), or "error" (turns it into a ``ConnectionAbortedError``,
    as a client library cut off mid-request does).
    """
    _append(path, f"{name} start\n")
    try:
        await LOOP_GATES[name].wait()
    except asyncio.CancelledError:
        _append(path, f"{name} cancelled\n")
        if on_cancel == "raise":
            raise
        if on_cancel == "error":
            raise ConnectionAbortedError("connection aborted") from None
        if on_cancel == "linger":
            await LOOP_GATES[name + "/late"].wait()
    _append(path, f"{name} done\n")
    return name


def sized(size: int, marks: str, room_on_retry: str | None = None) -> bytes:
    """``size`` random bytes (a result that does not shrink), one line in ``marks`` per run; a retry first
    deletes the file ``room_on_retry`` (the disk got room again before the retry ran)."""
    from sitq import current_task

    _append(marks, "ran\n")
    task = current_task()
    if room_on_retry is not None and task is not None and task.attempt > 1:
        os.remove(room_on_retry)
    return os.urandom(size)


async def fills_the_disk(dsn: str, flag: str, size: int) -> bytes:
    """Set ``flag`` (a one-row boolean table on PostgreSQL: the disk is full for every write while it is true),
    then return ``size`` bytes: a result that finds the disk full, and its failure too."""
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"UPDATE {flag} SET full_disk = true")
    finally:
        await connection.close()
    return b"r" * size
