"""SyncTaskQueue calls interrupted by an exception from a signal handler (a SIGALRM request deadline)."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from sitq import SQLiteBackend, SyncTaskQueue

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until_sync


class Deadline(Exception):
    """What a web framework's per-request timer raises from its SIGALRM handler."""


@contextlib.contextmanager
def _alarm_handler(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` on SIGALRM for the block; afterwards the timer is off and the previous handler back."""
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def deadline_alarm() -> Iterator[list[SyncTaskQueue]]:
    """A SIGALRM handler that raises Deadline once the queue given to it has a call running on its loop.

    Until then it re-arms itself, so the exception lands while the caller waits
    for that call, whatever the machine's speed.
    """
    watched: list[SyncTaskQueue] = []
    armed = [True]  # off before the timer is stopped: a signal handled late must not arm it again

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if not armed[0]:
            return
        if not watched[0]._calls:
            signal.setitimer(signal.ITIMER_REAL, 0.005)
            return
        raise Deadline("request took too long")

    with _alarm_handler(on_alarm):
        try:
            yield watched
        finally:
            armed[0] = False


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # every write waits for this one (up to the backend's busy_timeout)
    return locker


def test_a_deadline_during_enqueue_many_is_raised_as_itself_and_the_batch_still_lands_whole(
    tmp_path: Path, deadline_alarm: list[SyncTaskQueue]
) -> None:
    path = tmp_path / "deadline.db"
    calls = [(tasks.add, (i,)) for i in range(2_000)]
    with SyncTaskQueue(SQLiteBackend(path, busy_timeout=60)) as queue:
        deadline_alarm.append(queue)
        queue.counts()
        locker = _hold_write_lock(path)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            with pytest.raises(Deadline, match="request took too long"):
                queue.enqueue_many(calls)
        finally:
            locker.rollback()
            locker.close()
        # the write was not cancelled: it goes on in the background, as one transaction
        wait_until_sync(lambda: queue.counts()["queued"] == len(calls), timeout=30)
        assert queue.counts()["queued"] == len(calls)


def test_a_deadline_during_a_lone_enqueue_is_raised_as_itself_and_its_task_may_still_be_stored(
    tmp_path: Path, deadline_alarm: list[SyncTaskQueue]
) -> None:
    path = tmp_path / "lone.db"
    with SyncTaskQueue(SQLiteBackend(path, busy_timeout=60)) as queue:
        deadline_alarm.append(queue)
        kept = queue.enqueue(tasks.add, 0)
        locker = _hold_write_lock(path)  # the blocking path finds the lock busy: the call goes to the loop
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            with pytest.raises(Deadline):
                queue.enqueue(tasks.add, 1)
        finally:
            locker.rollback()
            locker.close()
        wait_until_sync(lambda: queue.counts()["queued"] == 2, timeout=30)
        assert queue.get_task(kept) is not None
        assert queue.enqueue(tasks.add, 2)  # the queue goes on working
        assert queue.counts()["queued"] == 3


RANDOM_DEADLINES = """
import collections, faulthandler, random, signal, sqlite3, sys, warnings
warnings.simplefilter("error", RuntimeWarning)  # a coroutine never awaited fails the run
faulthandler.dump_traceback_later(90, exit=True)  # a hang prints every thread's stack and fails the run
sys.path.insert(0, sys.argv[2])
from sitq import SyncTaskQueue
import sitq_test_tasks as tasks

class Deadline(Exception):
    pass

def on_alarm(signum, frame):
    raise Deadline("request took too long")

signal.signal(signal.SIGALRM, on_alarm)
random.seed(int(sys.argv[3]))
path = sys.argv[1]
outcomes = collections.Counter()
ids = []
with SyncTaskQueue("sqlite:///" + path) as queue:
    queue.counts()
    for i in range(400):
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, random.uniform(0.00001, 0.0004))
                ids.append(queue.enqueue(tasks.add, i))
                outcomes["stored"] += 1
            except Deadline:
                outcomes["deadline"] += 1
            except BaseException as exc:
                outcomes[type(exc).__name__] += 1
                print("not the handler's own exception:", repr(exc)[:300], file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except Deadline:
            outcomes["after the call"] += 1
# counted once the queue has closed: an interrupted call that went to the loop goes on there (by design),
# and close() waits for it, so a count taken inside the block could miss a row committed a moment later
with SyncTaskQueue("sqlite:///" + path) as again:
    counted = again.counts()["queued"]
with sqlite3.connect(path) as db:
    stored = {row[0] for row in db.execute("SELECT id FROM tasks")}
assert set(ids) <= stored, "a returned id was not stored"
assert len(stored) <= len(ids) + outcomes["deadline"], (len(stored), outcomes)
assert counted == len(stored), (counted, len(stored))
print(dict(outcomes))
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_deadlines_at_random_points_of_lone_enqueues_pass_through_unwrapped(tmp_path: Path, seed: int) -> None:
    # They were wrapped as SyncTaskQueueError ("enqueue failed: Deadline", "backend failed to enqueue") or
    # SerializationError, left a coroutine never awaited, and could hang the queue's loop thread for good
    # (an exception in Future.result() left the future's lock held by the caller).
    here = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", RANDOM_DEADLINES, str(tmp_path / "random.db"), str(here), str(seed)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert _unexplained(done.stderr) == "", done.stderr[-3000:]
    assert "'deadline'" in done.stdout, done.stdout  # the handler did interrupt calls


def _unexplained(stderr: str) -> str:
    """``stderr`` without CPython's own reports of the handler raising inside a callback the interpreter runs.

    A signal can land while the garbage collector runs a weakref callback (a
    ``weakref.finalize``, a ``WeakSet``'s removal, the standard library's
    own); CPython then prints "Exception ignored in: ..." ending in the
    handler's exception, and goes on. That is not sitq's to prevent.
    """
    blocks = re.split(r"(?m)^(?=Exception ignored in: )", stderr)
    return "".join(
        block
        for block in blocks
        if not (block.startswith("Exception ignored in: ") and "in on_alarm" in block and "Deadline:" in block)
    )


@contextlib.contextmanager
def _raise_when_inside(*names: str) -> Iterator[list[int]]:
    """A SIGALRM handler raising Deadline once the main thread is inside the named functions (innermost first).

    Elsewhere it re-arms a 50 µs timer, so it keeps landing until it lands there
    or the caller stops it; yields a one-item list counting the raises.
    """
    raised = [0]

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        chain = []
        while frame is not None:
            chain.append(frame.f_code.co_name)
            frame = frame.f_back
        if all(name in chain for name in names) and chain[0] == names[0]:
            raised[0] += 1
            raise Deadline("request took too long")
        signal.setitimer(signal.ITIMER_REAL, 0.00005)

    with _alarm_handler(on_alarm):
        yield raised


# The innermost Python frame of Thread.join's wait: up to 3.12 join() waits in _wait_for_tstate_lock; 3.13
# waits in a C call (the thread handle's join) straight from join() itself.
_THREAD_JOIN_WAIT = "_wait_for_tstate_lock" if hasattr(threading.Thread, "_wait_for_tstate_lock") else "join"


def _loop_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sitq-sync-loop"]


def test_a_deadline_while_close_waits_for_the_loop_thread_leaves_the_queue_closed_and_usable(tmp_path: Path) -> None:
    """It left the queue half closed: every later call refused, and a close() from another thread hung."""
    queue = SyncTaskQueue(SQLiteBackend(tmp_path / "close.db"))
    interrupted = False
    for _attempt in range(200):
        queue.counts()
        with _raise_when_inside(_THREAD_JOIN_WAIT, "_stop_loop") as raised:
            signal.setitimer(signal.ITIMER_REAL, 0.00005)
            try:
                queue.close()
            except Deadline:
                interrupted = True
        if interrupted:
            assert raised[0] == 1
            break
    assert interrupted, "the alarm never landed in close()'s wait for the loop thread"
    assert queue.counts()["queued"] == 0  # the next call opens the queue again
    other = threading.Thread(target=queue.close)
    other.start()
    other.join(10)
    assert not other.is_alive(), "close() from another thread hung"
    wait_until_sync(lambda: not _loop_threads(), timeout=10)


def test_a_deadline_while_the_loop_thread_starts_leaves_no_thread_behind(tmp_path: Path) -> None:
    """Raised while Thread.start() of a queue's first call waits for the new thread, it left a running loop thread
    that no close() knew of."""
    path = tmp_path / "start.db"
    interrupted = 0
    for _attempt in range(100):
        queue = SyncTaskQueue(SQLiteBackend(path))
        with _raise_when_inside("wait", "start", "_ensure_loop") as raised:
            signal.setitimer(signal.ITIMER_REAL, 0.00001)
            with contextlib.suppress(Deadline):
                queue.counts()
        interrupted += raised[0]
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert queue.counts()["queued"] == 0
        queue.close()
        if interrupted >= 3:
            break
    assert interrupted, "the alarm never landed in Thread.start()"
    wait_until_sync(lambda: not _loop_threads(), timeout=10)
