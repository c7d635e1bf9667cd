"""What a task's own loading, pickling or stubbornness may do to a worker: fail that task, never the worker."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.errors import ConnectionError
from sitq_core.models import LeaseState

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until, wait_until_sync

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [name for name in sys.modules if name.startswith("sitq_loading_")]:
        del sys.modules[name]


def new_module(module_dir: Path, name: str, source: str) -> ModuleType:
    """A task module written to ``module_dir`` and imported here (the producer's side)."""
    (module_dir / f"{name}.py").write_text(source)
    return importlib.import_module(name)


async def enqueue_unimported(queue: TaskQueue, module: ModuleType) -> str:
    """Enqueue ``module.work()``, then forget the module here: the worker imports it afresh, as a new process would."""
    task_id = await queue.enqueue(module.work)
    del sys.modules[module.__name__]
    return task_id


class LoopWatch:
    """The longest the event loop stood still (no 10 ms tick) while the block ran."""

    def __init__(self) -> None:
        self.longest_gap = 0.0
        self._ticking = True
        self._ticker: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while self._ticking:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            self.longest_gap, last = max(self.longest_gap, now - last), now

    async def __aenter__(self) -> LoopWatch:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ticking = False
        assert self._ticker is not None
        await self._ticker


@pytest.mark.asyncio
@pytest.mark.parametrize("serializer", ["cloudpickle", "msgpack"])
async def test_a_task_module_that_exits_while_loading_fails_its_task_and_the_worker_goes_on(
    module_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serializer: str
) -> None:
    name = f"sitq_loading_exits_{serializer}"
    (module_dir / f"{name}.py").write_text(
        "import os, sys\n"
        "if os.environ.get('SITQ_TEST_TOKEN') != 'yes':\n"
        "    sys.exit('SITQ_TEST_TOKEN is not set')\n"
        "def work(x):\n"
        "    return x * 2\n"
    )
    monkeypatch.setenv("SITQ_TEST_TOKEN", "yes")  # the producer has the setting ...
    module = __import__(name)
    backend = SQLiteBackend(tmp_path / "exits.db")
    async with TaskQueue(backend, serializer=serializer) as queue:
        doomed = await queue.enqueue(module.work, 21)
        fine = await queue.enqueue(tasks.add, 1, 2)
        monkeypatch.delenv("SITQ_TEST_TOKEN")  # ... the worker does not: its import calls sys.exit
        del sys.modules[name]
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        failed = await queue.get_result(doomed, timeout=10)
        done = await queue.get_result(fine, timeout=10)
        assert worker.running, "the worker must go on"
        await worker.stop()
    assert failed is not None and failed.status == "failed"
    assert "SITQ_TEST_TOKEN is not set" in (failed.error or "") and "cannot load task" in (failed.error or "")
    if serializer == "cloudpickle":  # msgpack's own SerializationError words it; a bare sys.exit(3) read ': 3'
        assert "SystemExit: SITQ_TEST_TOKEN is not set" in (failed.error or ""), failed.error
    assert done is not None and done.status == "success"


@pytest.mark.asyncio
@pytest.mark.parametrize("func", [tasks.returns_exits_when_pickled, tasks.raises_stop_iteration])
async def test_a_task_whose_result_exits_or_that_raises_stop_iteration_fails_alone(
    tmp_path: Path, func: object
) -> None:
    backend = SQLiteBackend(tmp_path / "alone.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=1)  # one slot: a wedged task would hold up the next one
        await worker.start()
        doomed = await queue.with_options(max_retries=0).enqueue(func)  # type: ignore[arg-type]
        failed = await queue.get_result(doomed, timeout=10)
        after = await queue.get_result(await queue.enqueue(tasks.add, 2, 3), timeout=10)
        await asyncio.wait_for(worker.stop(), 10)
    assert failed is not None and failed.status == "failed"
    assert failed.error in ("cannot serialise the return value: pickling this exits", "no more")
    assert after is not None and queue.deserialize_result(after) == 5
    if func is tasks.raises_stop_iteration:  # recorded as the task raised it, not as sitq's carrier type
        assert failed.traceback is not None
        assert failed.traceback.strip().splitlines()[-1] == "StopIteration: no more"
        assert "TaskStopIteration" not in failed.traceback


@pytest.mark.asyncio
async def test_a_bare_stop_iteration_is_named_by_its_type(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "bare.db")) as queue:
        worker = Worker(queue.backend)
        await worker.start()
        task_id = await queue.with_options(max_retries=0).enqueue(tasks.raises_stop_iteration_bare)
        failed = await queue.get_result(task_id, timeout=10)
        await asyncio.wait_for(worker.stop(), 10)
    assert failed is not None and failed.error == "StopIteration"


@pytest.mark.asyncio
async def test_the_event_loop_keeps_turning_while_a_task_module_imports(module_dir: Path, tmp_path: Path) -> None:
    # a heavy import (a machine-learning library, a cold network drive) must not stop the heartbeats of
    # the tasks already running: frozen for longer than a lease, they would run twice
    module = new_module(
        module_dir, "sitq_loading_slow", "import time\ntime.sleep(1.0)\ndef work():\n    return 'loaded'\n"
    )
    backend = SQLiteBackend(tmp_path / "slow.db")
    async with TaskQueue(backend) as queue:
        task_id = await enqueue_unimported(queue, module)  # the worker imports it afresh, as a new process would
        worker = Worker(backend)
        async with LoopWatch() as watch:
            await worker.start()
            result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
    assert result is not None and queue.deserialize_result(result) == "loaded"
    longest_gap = watch.longest_gap
    assert longest_gap < 0.5, f"the loop stood still for {longest_gap:.2f} s while the module imported"


def _start_worker(db: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    command = [sys.executable, "-m", "sitq", "--log-level", "INFO", "worker", "-b", f"sqlite:///{db}"]
    command += ["-i", "sitq_test_tasks", *args]
    with open(log, "wb") as stderr:
        return subprocess.Popen(command, env=env, stderr=stderr)


@pytest.mark.asyncio
@pytest.mark.parametrize("signals", [1, 2])
async def test_an_async_task_ignoring_cancellation_does_not_keep_the_worker_alive(tmp_path: Path, signals: int) -> None:
    db, log = tmp_path / "stubborn.db", tmp_path / "worker.log"
    # one signal: the shutdown timeout (1 s) ends the wait; two signals: the second ends it at once
    timeout = "1" if signals == 1 else "600"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        marker = tmp_path / "started"
        task_id = await queue.enqueue(tasks.very_stubborn, 120, str(marker))
        proc = _start_worker(db, log, "--shutdown-timeout", timeout)
        try:

            async def running() -> bool:  # started, not only reserved (its function may still be loading)
                return marker.exists()

            await wait_until(running, timeout=30)
            proc.send_signal(signal.SIGTERM)
            if signals == 2:

                async def draining() -> bool:
                    return "draining" in log.read_text(errors="replace")

                await wait_until(draining, timeout=30)
                proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0, "the worker must leave, not wait 120 s for its task"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        task = await queue.get_task(task_id)
    assert task is not None and task.status == "queued", "the abandoned task goes back to the queue"
    assert "ignored their cancellation" in log.read_text(errors="replace")


class AnswersLate(SQLiteBackend):
    """Commits finishes as usual but answers them only after a heartbeat has read the finished row.

    This is the order two pool connections (PostgreSQL) can give: the renewal
    of a task runs right after its finish committed, before the worker learns
    that the finish went through.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lost_seen = asyncio.Event()

    async def heartbeat(self, leases, lease_seconds):  # type: ignore[no-untyped-def]
        states = await super().heartbeat(leases, lease_seconds)
        if any(state == LeaseState.LOST for state in states.values()):
            self.lost_seen.set()
        return states

    async def _answer_late(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lost_seen.wait(), 10)

    async def finish_many(self, outcomes):  # type: ignore[no-untyped-def]
        accepted = await super().finish_many(outcomes)
        await self._answer_late()
        return accepted

    async def finish_and_reserve(self, outcomes, **options):  # type: ignore[no-untyped-def]
        answer = await super().finish_and_reserve(outcomes, **options)
        if outcomes:
            await self._answer_late()
        return answer


@pytest.mark.asyncio
async def test_a_renewal_that_reads_a_just_finished_task_is_no_lease_lost_alarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = AnswersLate(tmp_path / "late.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, lease_timeout=0.3, batch_window=0)  # renewals every 0.1 s
        await worker.start()
        with caplog.at_level("WARNING", logger="sitq"):
            result = await queue.get_result(await queue.enqueue(tasks.add, 1, 1), timeout=10)
            # the race happened: a renewal read the finished task before the worker heard of the finish
            await asyncio.wait_for(backend.lost_seen.wait(), 10)
            await worker.stop()
    assert result is not None and result.status == "success"
    assert "lost" not in caplog.text, caplog.text  # operators alert on "lease lost": no false alarm


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_worker_starts_ends_it_with_exit_code_zero(tmp_path: Path, signum: int) -> None:
    (tmp_path / "sitq_loading_slow_start.py").write_text(
        "import time\nopen(__file__ + '.started', 'w').close()\ntime.sleep(30)\n"
    )
    # PYTHONFAULTHANDLER: a worker that does not end gets SIGABRT below, which prints every thread's stack
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{TESTS}", PYTHONFAULTHANDLER="1")
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{tmp_path / 'start.db'}"]
    proc = subprocess.Popen([*command, "-i", "sitq_loading_slow_start"], env=env, stderr=subprocess.PIPE)
    try:
        marker = tmp_path / "sitq_loading_slow_start.py.started"
        wait_until_sync(lambda: marker.exists() or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, "the worker ended before importing its tasks"
        proc.send_signal(signum)  # the supervisor (or a Ctrl-C) stops it while it is still importing its tasks
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stacks = proc.communicate(timeout=10)[1].decode(errors="replace")
            raise AssertionError(f"the worker did not end after the signal; its threads:\n{stacks}") from None
        assert code == 0, "a worker stopped while starting has nothing to drain: exit code 0"
        assert b"Traceback" not in proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.asyncio
async def test_a_module_that_must_import_on_the_main_thread_still_loads(module_dir: Path, tmp_path: Path) -> None:
    # signal.signal() works only on the main thread: loading on a thread fails, the loop then loads it
    module = new_module(
        module_dir,
        "sitq_loading_main_thread",
        "import signal\nsignal.signal(signal.SIGUSR2, signal.SIG_IGN)\ndef work():\n    return 'loaded on the loop'\n",
    )
    backend = SQLiteBackend(tmp_path / "main-thread.db")
    async with TaskQueue(backend) as queue:
        task_id = await enqueue_unimported(queue, module)
        worker = Worker(backend)
        await worker.start()
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
    assert result is not None and result.status == "success", result
    assert queue.deserialize_result(result) == "loaded on the loop"


@pytest.mark.asyncio
async def test_leases_are_renewed_while_a_new_function_loads(module_dir: Path, tmp_path: Path) -> None:
    module = new_module(
        module_dir, "sitq_loading_slow_lease", "import time\ntime.sleep(1.5)\ndef work():\n    return 'once'\n"
    )
    backend = SQLiteBackend(tmp_path / "lease.db")
    async with TaskQueue(backend) as queue:
        task_id = await enqueue_unimported(queue, module)
        first = Worker(backend, lease_timeout=0.6)  # renewals every 0.2 s; the import takes 1.5 s

        async def taken() -> bool:
            found = await queue.get_task(task_id)
            return found is not None and found.status == "running"

        await first.start()
        await wait_until(taken)
        second = Worker(backend, lease_timeout=0.6)  # would take the task if its lease ran out meanwhile
        await second.start()
        result = await queue.get_result(task_id, timeout=10)
        await second.stop()
        await first.stop()
        stored = await queue.get_task(task_id)
    assert result is not None and result.status == "success"
    assert stored is not None and (stored.attempts, stored.lease_expiries) == (1, 0), "the task ran twice"


@pytest.mark.asyncio
async def test_stop_does_not_wait_for_an_import_in_progress(module_dir: Path, tmp_path: Path) -> None:
    (module_dir / "sitq_loading_hung.py").write_text("import time\ntime.sleep(20)\ndef work():\n    return 1\n")
    backend = SQLiteBackend(tmp_path / "hung.db")
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
        # the worker finds the function under a module whose import hangs (a cold network drive)
        with sqlite3.connect(tmp_path / "hung.db") as conn:
            conn.execute("UPDATE tasks SET payload = ? WHERE id = ?", (_payload_for("sitq_loading_hung"), task_id))
        worker = Worker(backend)

        async def taken() -> bool:
            found = await queue.get_task(task_id)
            return found is not None and found.status == "running"

        await worker.start()
        await wait_until(taken)
        await asyncio.wait_for(worker.stop(timeout=0.5), 5)  # not 20 s: the import is left to its thread
        stored = await queue.get_task(task_id)
    assert stored is not None and stored.status == "queued", "the task still loading is given back"


@pytest.mark.asyncio
async def test_a_hung_import_does_not_hold_a_healthy_task_reserved_beside_it(module_dir: Path, tmp_path: Path) -> None:
    """Both loaded on one thread: the healthy task stayed 'running', never started, its lease renewed for good."""
    release = tmp_path / "release-import"
    hung = "import os, time\nwhile not os.path.exists(%r):\n    time.sleep(0.01)\ndef work():\n    return 1\n"
    (module_dir / "sitq_loading_hangs_a_while.py").write_text(hung % str(release))
    healthy = new_module(module_dir, "sitq_loading_healthy", "def work():\n    return 'ran'\n")
    backend = SQLiteBackend(tmp_path / "beside.db")
    async with TaskQueue(backend) as queue:
        stuck_id = await queue.enqueue(tasks.add, 1)
        with sqlite3.connect(tmp_path / "beside.db") as conn:
            payload = _payload_for("sitq_loading_hangs_a_while")
            conn.execute("UPDATE tasks SET payload = ? WHERE id = ?", (payload, stuck_id))
        healthy_id = await enqueue_unimported(queue, healthy)
        worker = Worker(backend, max_concurrency=2)  # both reserved in one batch
        await worker.start()
        try:
            result = await queue.get_result(healthy_id, timeout=10)
            stuck = await queue.get_task(stuck_id)
        finally:
            release.touch()  # the import ends, and its thread with it
            await asyncio.wait_for(worker.stop(), 10)
    assert result is not None and result.status == "success", "the healthy task waited for the hung import"
    assert stuck is not None and stuck.status == "running"  # still loading, held: the import hangs on


def _payload_for(module: str) -> bytes:
    """A cloudpickle-format payload calling ``module.work()`` by reference, made without importing ``module``."""
    return b"(c" + module.encode() + b"\nwork\n)}t."  # (module.work, (), {}) in pickle protocol 0


@pytest.mark.asyncio
async def test_stop_does_not_wait_for_good_on_a_backend_that_stopped_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sitq_core._worker.limits._FINAL_REPORT_TIMEOUT", 0.5)
    path = tmp_path / "frozen.db"
    backend = SQLiteBackend(path, busy_timeout=30)  # each report waits up to 30 s for the lock
    try:
        async with TaskQueue(backend) as queue:
            task_id = await queue.enqueue(tasks.hold_write_lock, str(path))
            worker = Worker(backend)
            await worker.start()
            await wait_until(lambda: asyncio.sleep(0, bool(tasks.HELD_LOCKS)))  # the store is frozen now
            began = time.monotonic()
            await asyncio.wait_for(worker.stop(), 10)  # not 30 s or more: the last report is given up
            assert time.monotonic() - began < 5
            tasks.release_write_locks()
            result = await queue.get_result(task_id, timeout=30)  # the report still lands once the lock goes
            assert result is not None and result.status == "success"
    finally:
        tasks.release_write_locks()


@pytest.mark.asyncio
async def test_a_partial_of_a_new_module_loads_off_the_loop_after_other_partials(
    module_dir: Path, tmp_path: Path
) -> None:
    import functools

    module = new_module(
        module_dir, "sitq_loading_slow_partial", "import time\ntime.sleep(1.0)\ndef work(x):\n    return x\n"
    )
    backend = SQLiteBackend(tmp_path / "partial.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        await worker.start()
        first = await queue.enqueue(functools.partial(tasks.add, 1), 2)  # 'functools:partial' is loaded now
        assert (result := await queue.get_result(first, timeout=10)) is not None and result.ok
        soon = datetime.now(UTC) + timedelta(seconds=0.3)  # due after its module is gone from this process
        second = await queue.enqueue(functools.partial(module.work, "slow"), eta=soon)
        del sys.modules["sitq_loading_slow_partial"]
        async with LoopWatch() as watch:
            result = await queue.get_result(second, timeout=10)
        await worker.stop()
    assert result is not None and queue.deserialize_result(result) == "slow"
    longest_gap = watch.longest_gap
    assert longest_gap < 0.5, f"the loop stood still for {longest_gap:.2f} s while the partial's module imported"


class NoticesDown(SQLiteBackend):
    """A store whose notification channel is down (PostgreSQL's LISTEN connection refused): waits fail at once."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reserves = 0

    async def wait_for_work(self, timeout: float | None) -> bool:
        raise ConnectionError("cannot LISTEN: the server refuses new connections")

    async def reserve(self, **options):  # type: ignore[no-untyped-def]
        self.reserves += 1
        return await super().reserve(**options)


@pytest.mark.asyncio
async def test_an_idle_worker_polls_instead_of_spinning_when_waiting_for_work_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = NoticesDown(tmp_path / "notices.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.1)
        with caplog.at_level("WARNING", logger="sitq"):
            await worker.start()
            await asyncio.sleep(0.6)  # idle: the span under test, not a synchronisation
            idle_reserves = backend.reserves
            result = await queue.get_result(await queue.enqueue(tasks.add, 2, 2), timeout=10)  # found by polling
            await worker.stop()
    assert idle_reserves <= 15, f"{idle_reserves} reserve calls in 0.6 s of idle: the worker spins"
    assert result is not None and queue.deserialize_result(result) == 4
    assert caplog.text.count("waiting for work failed") == 1, caplog.text  # said once, not per turn


class GiveBackHangs(SQLiteBackend):
    """A store that stops answering as the worker gives tasks back (a table lock, a network freeze)."""

    async def finish_many(self, outcomes):  # type: ignore[no-untyped-def]
        if any(outcome.kind == "release" for outcome in outcomes):
            await asyncio.Event().wait()  # never answers
        return await super().finish_many(outcomes)


@pytest.mark.asyncio
async def test_stop_gives_up_giving_back_prefetched_tasks_to_a_frozen_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sitq_core._worker.limits._FINAL_REPORT_TIMEOUT", 0.5)
    backend = GiveBackHangs(tmp_path / "frozen-give-back.db")
    async with TaskQueue(backend) as queue:
        log = tmp_path / "first.log"
        first = await queue.enqueue(tasks.record, str(log), 1, 0.3)
        ahead = [await queue.enqueue(tasks.async_add, n) for n in range(5)]  # reserved ahead, waiting for the slot
        worker = Worker(backend, max_concurrency=1, prefetch=5)
        await worker.start()
        await wait_until(lambda: _all_running(queue, 6))
        await wait_until(lambda: asyncio.sleep(0, log.exists()))  # started, not merely reserved (still loading)
        began = time.monotonic()
        await asyncio.wait_for(worker.stop(timeout=5), 10)  # not forever: the give-back is cut short
        assert time.monotonic() - began < 3
        assert (await queue.get_result(first, timeout=0)) is not None, "the running task still finished"
        states = {(await queue.get_task(task_id)).status for task_id in ahead}  # type: ignore[union-attr]
    assert states == {"running"}, states  # never lost: held until their leases expire, then run again


class ReportIgnoresCancel(SQLiteBackend):
    """A store whose report call hangs and ignores cancellation (a driver stuck reading a stalled socket)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hang = False
        self.hanging = asyncio.Event()
        self.unstick = asyncio.Event()

    async def _stuck(self) -> None:
        self.hanging.set()
        while not self.unstick.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # ignored, as the stuck driver would
                await self.unstick.wait()

    async def finish_many(self, outcomes):  # type: ignore[no-untyped-def]
        if self.hang:
            await self._stuck()
        return await super().finish_many(outcomes)

    async def finish_and_reserve(self, outcomes, **options):  # type: ignore[no-untyped-def]
        if self.hang:
            await self._stuck()
        return await super().finish_and_reserve(outcomes, **options)


@pytest.mark.asyncio
async def test_stop_returns_when_a_cancelled_report_never_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sitq_core._worker.limits._FINAL_REPORT_TIMEOUT", 0.3)
    backend = ReportIgnoresCancel(tmp_path / "stuck.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.1)
        await worker.start()
        backend.hang = True
        task_id = await queue.enqueue(tasks.add, 1, 2)
        await asyncio.wait_for(backend.hanging.wait(), 10)  # its outcome's report is stuck now
        loop = asyncio.get_running_loop()
        unstick_later = loop.call_later(15, backend.unstick.set)  # the test's own bound
        try:
            await asyncio.wait_for(worker.stop(), 20)
            assert not backend.unstick.is_set(), "stop() waited for the stuck report to end by itself"
        finally:
            unstick_later.cancel()
            backend.unstick.set()
        stored = await queue.get_task(task_id)
    assert stored is not None and stored.status == "running", "its lease runs out; then it runs again"


@pytest.mark.asyncio
async def test_a_caller_giving_up_on_stop_gets_its_timeout_and_the_stop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sitq_core._worker.limits._FINAL_REPORT_TIMEOUT", 0.3)
    backend = ReportIgnoresCancel(tmp_path / "stuck-caller.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, poll_interval=0.1)
        await worker.start()
        backend.hang = True
        await queue.enqueue(tasks.add, 1, 2)
        await asyncio.wait_for(backend.hanging.wait(), 10)
        loop = asyncio.get_running_loop()
        unstick_later = loop.call_later(15, backend.unstick.set)
        try:
            with pytest.raises(TimeoutError):  # not a silent None after the stop swallowed the cancellation
                await asyncio.wait_for(worker.stop(), 0.5)
            await asyncio.wait_for(worker.stop(), 20)  # a second stop() waits for the same stop to end
            assert not backend.unstick.is_set(), "the stop went on only once the stuck report ended"
        finally:
            unstick_later.cancel()
            backend.unstick.set()
    assert not worker.running


async def _all_running(queue: TaskQueue, count: int) -> bool:
    return (await queue.counts())["running"] == count


class SlowReserve(SQLiteBackend):
    """A reserve round trip still in flight when stop() begins (a slow disk or network)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reserving = asyncio.Event()

    async def reserve(self, **options):  # type: ignore[no-untyped-def]
        self.reserving.set()
        await asyncio.sleep(0.5)
        return await super().reserve(**options)


@pytest.mark.asyncio
async def test_a_task_reserved_as_the_stop_begins_is_given_back_even_before_it_loaded(
    module_dir: Path, tmp_path: Path
) -> None:
    module = new_module(module_dir, "sitq_loading_late", "def work():\n    return 1\n")
    backend = SlowReserve(tmp_path / "late.db")
    async with TaskQueue(backend) as queue:
        task_id = await enqueue_unimported(queue, module)  # not loaded by this worker yet
        worker = Worker(backend, lease_timeout=60)
        await worker.start()
        await asyncio.wait_for(backend.reserving.wait(), 10)  # its first reserve is under way ...
        await worker.stop(timeout=5)  # ... and answers after the stop began
        stored = await queue.get_task(task_id)
    assert stored is not None and stored.status == "queued", "given back, not left leased for a minute"


class ReportsHang(SQLiteBackend):
    """A store that stops taking outcomes while ``thawed`` is clear (a table lock, a network freeze)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.thawed = asyncio.Event()
        self.thawed.set()

    async def finish_many(self, outcomes):  # type: ignore[no-untyped-def]
        await self.thawed.wait()
        return await super().finish_many(outcomes)


@pytest.mark.asyncio
async def test_a_worker_started_again_after_a_stop_that_gave_up_its_last_report_runs_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unreported task used to stay 'running' for good (its lease renewed) and fill the only slot."""
    monkeypatch.setattr("sitq_core._worker.limits._FINAL_REPORT_TIMEOUT", 0.3)
    backend = ReportsHang(tmp_path / "restart.db")
    async with TaskQueue(backend) as queue:
        first = await queue.enqueue(tasks.sleepy, 0.2)
        worker = Worker(backend, max_concurrency=1, prefetch=0, lease_timeout=1.0)
        await worker.start()
        await wait_until(lambda: _all_running(queue, 1))
        backend.thawed.clear()  # the outcome of ``first`` will not be taken
        await asyncio.wait_for(worker.stop(), 10)
        backend.thawed.set()
        await worker.start()
        second = await queue.enqueue(tasks.add, 2, 3)
        second_result = await queue.get_result(second, timeout=15)
        first_result = await queue.get_result(first, timeout=15)  # run again once its lease expired
        await worker.stop()
    assert second_result is not None and queue.deserialize_result(second_result) == 5, "the slot stayed taken"
    assert first_result is not None and first_result.status == "success", "the unreported task never ended"


@pytest.mark.asyncio
async def test_a_task_whose_module_import_hangs_times_out_by_its_own_timeout(module_dir: Path, tmp_path: Path) -> None:
    """It used to stay 'running' (its lease renewed) and hold the worker's only slot for good."""
    (module_dir / "sitq_loading_stuck.py").write_text("import time\ntime.sleep(30)\ndef work():\n    return 1\n")
    backend = SQLiteBackend(tmp_path / "stuck.db")
    async with TaskQueue(backend) as queue:
        stuck = await queue.with_options(timeout=0.5, max_retries=0).enqueue(tasks.add, 1)
        with sqlite3.connect(tmp_path / "stuck.db") as conn:
            conn.execute(
                "UPDATE tasks SET payload = ?, function_name = 'sitq_loading_stuck:work' WHERE id = ?",
                (_payload_for("sitq_loading_stuck"), stuck),
            )
        worker = Worker(backend, max_concurrency=1, prefetch=0)
        await worker.start()
        stuck_result = await queue.get_result(stuck, timeout=10)
        other = await queue.get_result(await queue.enqueue(tasks.add, 2, 3), timeout=10)
        await asyncio.wait_for(worker.stop(), 10)
    assert stuck_result is not None and stuck_result.status == "failed", "the task never timed out"
    assert "timed out after 0.5 s while its function sitq_loading_stuck:work was loading" in stuck_result.error
    assert other is not None and queue.deserialize_result(other) == 5, "the worker's slot stayed taken"


def waits_for_file(path: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return "saw it"
        time.sleep(0.02)
    raise TimeoutError(f"{path} never appeared")


def creates_file(path: str) -> None:
    with open(path, "w"):
        pass


@pytest.mark.asyncio
async def test_a_suspect_does_not_hold_the_worker_while_a_running_task_waits_for_queued_work(tmp_path: Path) -> None:
    """A task whose last worker died waits to run alone; while it waited nothing was reserved, so a running task
    waiting for another queued task stalled the whole worker until its own time ran out."""
    from sitq_core.models import Task, new_id

    flag = str(tmp_path / "flag")
    backend = SQLiteBackend(tmp_path / "suspect.db")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=4, prefetch=0)
        await worker.start()
        waiting = await queue.enqueue(waits_for_file, flag, 30)
        await wait_until(lambda: _all_running(queue, 1))
        suspect = Task(
            id=new_id(), payload=queue.serializer.dumps_call(tasks.add, (1, 2), {}), lease_expiries=1
        )  # its last worker died holding it
        await backend.enqueue(suspect)
        # kept off the worker while the task runs (it reserves nothing meanwhile), or taken at last
        await wait_until(lambda: asyncio.sleep(0, worker._suspect is not None or worker._deferred is not None))
        began = time.monotonic()
        creator = await queue.enqueue(creates_file, flag)
        created = await queue.get_result(creator, timeout=25)
        took = time.monotonic() - began
        results = [await queue.get_result(task_id, timeout=25) for task_id in (waiting, suspect.id)]
        await worker.stop()
    assert created is not None and created.status == "success"
    assert took < 15, f"the worker reserved nothing for {took:.1f} s while the suspect waited"
    assert [r is not None and r.status for r in results] == ["success", "success"]


_BY_VALUE_SOURCE = """
import sitq


def add(a, b):
    return a + b


@sitq.task(max_retries=0)
def add_task(a, b):
    return a + b
"""


@pytest.mark.parametrize("registered", ["module", "package"])
def test_a_module_registered_by_value_is_pickled_by_value_on_the_fast_path_too(
    module_dir: Path, registered: str
) -> None:
    import cloudpickle

    from sitq import CloudpickleSerializer

    (module_dir / "sitq_loading_pkg").mkdir()
    (module_dir / "sitq_loading_pkg" / "__init__.py").write_text("")
    (module_dir / "sitq_loading_pkg" / "jobs.py").write_text(_BY_VALUE_SOURCE)
    module = importlib.import_module("sitq_loading_pkg.jobs")
    target = module if registered == "module" else sys.modules["sitq_loading_pkg"]
    serializer = CloudpickleSerializer()
    plain_before = serializer.dumps_call(module.add, (1, 2), {})  # by reference, and cached as importable
    cloudpickle.register_pickle_by_value(target)
    try:
        for func in (module.add, module.add_task):
            for args in ((1, 2), (timedelta(1), timedelta(2))):
                payload = serializer.dumps_call(func, args, {})
                assert payload == cloudpickle.dumps((func, args, {}), protocol=serializer.protocol), (func, args)
    finally:
        cloudpickle.unregister_pickle_by_value(target)
    assert serializer.dumps_call(module.add, (1, 2), {}) == plain_before  # unregistered: by reference again


@pytest.mark.asyncio
async def test_a_worker_without_a_module_registered_by_value_runs_its_tasks(module_dir: Path, tmp_path: Path) -> None:
    import cloudpickle

    module = new_module(module_dir, "sitq_loading_byvalue", _BY_VALUE_SOURCE)
    db = tmp_path / "byvalue.db"
    cloudpickle.register_pickle_by_value(module)
    try:
        async with TaskQueue(SQLiteBackend(db)) as queue:
            calls = [(func, args) for func in (module.add, module.add_task) for args in ((1, 2), ("a", "b"))]
            task_ids = [await queue.enqueue(func, *args) for func, args in calls]
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}"]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        async with TaskQueue(SQLiteBackend(db)) as queue:
            for task_id, (_, args) in zip(task_ids, calls, strict=True):
                result = await queue.get_result(task_id, timeout=30)
                assert result is not None and result.status == "success", result and result.error
                assert queue.deserialize_result(result) == args[0] + args[1]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.asyncio
async def test_only_the_attempt_after_a_lease_expiry_runs_alone_not_the_retries_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """lease_expiries never goes down: after one crash every later retry was taken for a crash suspect, ran alone
    (waiting up to 5 s for the tasks beside it, reserving nothing meanwhile) and was logged as coming back from an
    expired lease."""
    caplog.set_level("INFO", logger="sitq.worker")
    backend = SQLiteBackend(tmp_path / "retries.db")
    async with TaskQueue(backend) as queue:
        task_id = await queue.with_options(max_retries=2, retry_backoff=0).enqueue(tasks.boom, "transient")
        with sqlite3.connect(backend.path) as dead:  # a worker claimed it and died: its lease has run out
            dead.execute(
                "UPDATE tasks SET status = 'running', attempts = 1, lease_token = 'dead', worker_id = 'dead', "
                "started_at = 0, due = 0 WHERE id = ?",
                (task_id,),
            )
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        try:
            result = await queue.get_result(task_id, timeout=20)
        finally:
            await worker.stop()
    assert result is not None and (result.status, result.attempts) == ("failed", 3)
    alone = [r.getMessage() for r in caplog.records if "comes back from an expired lease" in r.getMessage()]
    assert len(alone) == 1, f"attempts after the one following the lease expiry ran alone too: {alone}"
