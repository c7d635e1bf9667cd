"""Crash recovery, fencing and shutdown with real worker processes on one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq import MsgpackSerializer, SQLiteBackend, TaskQueue
from sitq_core.models import new_id

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until_sync

TESTS = Path(__file__).resolve().parents[1]


class Workers:
    """Starts ``sitq worker`` processes (stderr to a file each) and ends them after the test."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.sessions: list[int] = []  # process groups of workers started in sessions of their own

    def start(self, *args: str, new_session: bool = False) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(TESTS))
        command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{self.db}", "-i", "sitq_test_tasks"]
        log = self.db.with_name(f"worker-{len(self.procs)}.log")
        with open(log, "wb") as stderr:
            proc = subprocess.Popen([*command, *args], env=env, stderr=stderr, start_new_session=new_session)
        if new_session:
            self.sessions.append(proc.pid)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for pgid in self.sessions:  # what a task forked there and left behind (a pool's processes)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


@pytest.fixture
def workers(db: Path) -> Iterator[Workers]:
    pool = Workers(db)
    yield pool
    pool.cleanup()


async def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def lines(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, n, pid = line.split()
        out.append((kind, int(n), int(pid)))
    return out


@pytest.mark.asyncio
async def test_kill_9_loses_nothing(db: Path, workers: Workers, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = await queue.enqueue_many([(tasks.record, (str(log), n, 0.2)) for n in range(30)])
        victim = workers.start("--concurrency", "4", "--lease-timeout", "1")

        async def some_started() -> bool:
            return sum(1 for kind, _n, _pid in lines(log) if kind == "start") >= 6

        await wait_for(some_started)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        started_by_victim = {n for kind, n, pid in lines(log) if kind == "start" and pid == victim.pid}
        finished_by_victim = {n for kind, n, pid in lines(log) if kind == "end" and pid == victim.pid}
        in_flight = started_by_victim - finished_by_victim
        assert in_flight, "the kill should have caught tasks in flight"

        workers.start("--concurrency", "4", "--lease-timeout", "1")
        for task_id in ids:
            result = await queue.get_result(task_id, timeout=60)
            assert result is not None and result.status == "success", result
        counts = await queue.counts()
    assert counts["success"] == 30 and counts["queued"] == counts["running"] == 0
    starts = Counter(n for kind, n, _pid in lines(log) if kind == "start")
    assert set(starts) == set(range(30))
    ran_twice = {n for n, count in starts.items() if count > 1}
    assert ran_twice <= started_by_victim, "only tasks the killed worker had started may run twice"
    assert ran_twice <= in_flight | finished_by_victim


@pytest.mark.asyncio
async def test_a_kill_does_not_run_again_tasks_that_returned_before_a_slow_task_of_their_batch(
    db: Path, workers: Workers, tmp_path: Path
) -> None:
    """Sync tasks run in thread batches; one that returned is stored then, not when its batch ends.

    Held back behind a slow task of its batch, it stayed ``running`` and ran
    a second time after a SIGKILL, though it had finished long before.
    """
    log = tmp_path / "batch.log"
    slow = 99
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = await queue.enqueue_many(
            [(tasks.record, (str(log), n)) for n in range(5)] + [(tasks.record, (str(log), slow, 60))]
        )
        # one slot and a prefetch: one reserve takes all six, and they run as one thread batch, the slow one last
        victim = workers.start("--concurrency", "1", "--prefetch", "10", "--lease-timeout", "1")
        for task_id in ids[:-1]:
            result = await queue.get_result(task_id, timeout=15)
            assert result is not None and result.status == "success", "a finished task stayed running"

        async def slow_started(times: int) -> bool:
            return sum(1 for kind, n, _pid in lines(log) if kind == "start" and n == slow) >= times

        await wait_for(lambda: slow_started(1))
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        workers.start("--concurrency", "1", "--lease-timeout", "1")
        await wait_for(lambda: slow_started(2))  # its lease expired: the fresh worker runs it again
        for task_id in ids[:-1]:
            result = await queue.get_result(task_id, timeout=0)
            assert result is not None and result.status == "success" and result.attempts == 1
    starts = Counter(n for kind, n, _pid in lines(log) if kind == "start")
    assert starts == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, slow: 2}, "only the task running at the kill may run again"


@pytest.mark.asyncio
@pytest.mark.slow
async def test_four_processes_run_each_task_exactly_once(db: Path, workers: Workers, tmp_path: Path) -> None:
    log = tmp_path / "once.log"
    total = 5000
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = await queue.enqueue_many([(tasks.record, (str(log), n)) for n in range(total)])
        procs = [workers.start("--concurrency", "4", "--prefetch", "16") for _ in range(4)]

        async def all_done() -> bool:
            counts = await queue.counts()
            return counts["success"] + counts["failed"] == total

        await wait_for(all_done, timeout=120)
        assert (await queue.get_result(ids[-1], timeout=0)) is not None
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(30) == 0
        assert "database is locked" not in workers.log(proc), workers.log(proc)
    starts = Counter(n for kind, n, _pid in lines(log) if kind == "start")
    assert len(starts) == total and max(starts.values()) == 1, "a task ran twice"
    assert len({pid for _k, _n, pid in lines(log)}) >= 2, "work should spread over several processes"
    with sqlite3.connect(db) as conn:
        rows, distinct = conn.execute("SELECT count(*), count(DISTINCT task_id) FROM results").fetchone()
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
    assert rows == distinct == total
    assert statuses == {"success": total}


@pytest.mark.asyncio
async def test_stale_worker_cannot_overwrite_newer_attempt(db: Path, workers: Workers, tmp_path: Path) -> None:
    started = tmp_path / "started"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        task_id = await queue.enqueue(tasks.whoami, 1.5, str(started))
        stale = workers.start("--lease-timeout", "0.6")

        async def running() -> bool:  # its call has begun (reserved alone, it could be dropped unstarted)
            return started.exists()

        await wait_for(running)
        stale.send_signal(signal.SIGSTOP)  # frozen: no heartbeats, its lease expires
        fresh = workers.start("--lease-timeout", "5")
        result = await queue.get_result(task_id, timeout=30)
        assert result is not None and result.status == "success"
        assert queue.deserialize_result(result) == fresh.pid
        stale.send_signal(signal.SIGCONT)  # wakes up, finishes its copy, reports late

        async def stale_reported() -> bool:
            return "was reclaimed by another worker (lease lost)" in workers.log(stale)

        try:
            await wait_for(stale_reported)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the stale worker's log:\n{workers.log(stale)}") from None
        after = await queue.get_result(task_id, timeout=0)
        assert after is not None and queue.deserialize_result(after) == fresh.pid
        assert after.attempts == 2
    stale.send_signal(signal.SIGTERM)
    try:
        code = stale.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError("stale worker did not exit:\n" + workers.log(stale)) from None
    assert code == 0, workers.log(stale)
    assert "Traceback" not in workers.log(stale), workers.log(stale)


@pytest.mark.asyncio
async def test_sigterm_drains_in_flight_and_exits_zero(db: Path, workers: Workers, tmp_path: Path) -> None:
    log = tmp_path / "drain.log"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = await queue.enqueue_many([(tasks.record, (str(log), n, 0.5)) for n in range(10)])
        proc = workers.start("--concurrency", "2", "--prefetch", "2")

        async def two_started() -> bool:
            return sum(1 for kind, *_ in lines(log) if kind == "start") >= 2

        await wait_for(two_started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        started = {n for kind, n, _ in lines(log) if kind == "start"}
        ended = {n for kind, n, _ in lines(log) if kind == "end"}
        assert started == ended, "in-flight tasks must finish before exit"
        counts = await queue.counts()
        assert counts["running"] == 0, "nothing may stay leased by a worker that exited"
        assert counts["success"] == len(ended) and counts["queued"] == 10 - len(ended)
        workers.start("--concurrency", "4")
        for task_id in ids:
            result = await queue.get_result(task_id, timeout=30)
            assert result is not None and result.status == "success"


@pytest.mark.parametrize("round_", range(4))  # the late signal falls at a different moment of the exit each time
def test_a_second_sigint_just_after_an_idle_drain_still_exits_zero_quietly(
    db: Path, workers: Workers, round_: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second signal came once the drain was over, met the default handler: exit 130 with a traceback."""
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")  # for the "started on" line
    proc = workers.start()
    wait_until_sync(lambda: "started on" in workers.log(proc), timeout=30)  # up, its signal handlers in place
    proc.send_signal(signal.SIGINT)
    time.sleep(0.002 * (round_ + 1))  # the scenario itself: a user pressing Ctrl-C twice
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, workers.log(proc)
    assert "Traceback" not in workers.log(proc), workers.log(proc)


def assert_drains_once(workers: Workers, proc: subprocess.Popen[bytes]) -> None:
    """The worker exits 0 after one draining SIGTERM, and no other signal reached it."""
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker did not exit:\n" + workers.log(proc)) from None
    log = workers.log(proc)
    assert code == 0, log
    assert log.count("SIGTERM received, draining") == 1 and "second" not in log, log


@pytest.mark.asyncio
async def test_tasks_forking_children_that_get_sigterm_leave_the_worker_running(
    db: Path, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked child inherited the worker's signal setup: its SIGTERM woke the worker as if it had been signalled.

    Two pool processes ending made a "second SIGTERM" (the worker gave every
    task back and stopped), and the no-op handler let them outlive
    ``Pool.terminate()``, which then waited for them for good.
    """
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")  # for the "started on" and "draining" lines
    async with TaskQueue(SQLiteBackend(db)) as queue:
        proc = workers.start("--concurrency", "2")
        wait_until_sync(lambda: "started on" in workers.log(proc), timeout=30)  # its signal handlers are in place
        ids = [await queue.enqueue(tasks.fork_pool_squares) for _ in range(3)]
        ids += [await queue.enqueue(tasks.fork_child_and_sigterm_it) for _ in range(3)]
        for task_id in ids:
            result = await queue.get_result(task_id, timeout=20)
            assert result is not None, "a task hung:\n" + workers.log(proc)
            assert result.status == "success", (result, workers.log(proc))
            assert queue.deserialize_result(result) in (285, -signal.SIGTERM)
        assert proc.poll() is None, "the worker stopped:\n" + workers.log(proc)
        assert "SIGTERM" not in workers.log(proc), workers.log(proc)
    proc.send_signal(signal.SIGTERM)
    assert_drains_once(workers, proc)


@pytest.mark.asyncio
async def test_a_sigterm_to_the_process_group_drains_though_a_task_holds_a_forked_child(
    db: Path, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd (KillMode=control-group) or Ctrl-C signals every process of the group: the task's child relayed
    its copy to the worker, which took it for a second signal and stopped without draining."""
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")
    marks, gate = tmp_path / "marks.log", tmp_path / "gate"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        proc = workers.start("--shutdown-timeout", "30", new_session=True)
        task_id = await queue.enqueue(tasks.fork_child_then_wait_for_gate, str(marks), str(gate))
        wait_until_sync(marks.exists, timeout=30)  # the child is up
        os.killpg(proc.pid, signal.SIGTERM)
        wait_until_sync(lambda: "draining" in workers.log(proc), timeout=30)
        gate.touch()
        assert_drains_once(workers, proc)
        result = await queue.get_result(task_id, timeout=0)
        assert result is not None and result.status == "success", (result, workers.log(proc))
        assert queue.deserialize_result(result) == -signal.SIGTERM, "the child ends by the signal, as by default"


@pytest.mark.asyncio
async def test_a_sigterm_to_the_process_group_drains_though_a_task_holds_a_fork_pool(
    db: Path, workers: Workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above with a ``multiprocessing`` pool: its two processes relayed two signals ("second SIGTERM").

    The signal ends the pool's processes as it would without sitq; a pool
    whose idle process was killed so then waits for good in ``terminate()``
    (Python's own), so the task may finish or be given back at the
    shutdown timeout. Either way the worker drains once and exits 0.
    """
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")
    marks, gate = tmp_path / "marks.log", tmp_path / "gate"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        proc = workers.start("--shutdown-timeout", "2", new_session=True)
        task_id = await queue.enqueue(tasks.fork_pool_then_wait_for_gate, str(marks), str(gate))
        wait_until_sync(marks.exists, timeout=30)  # the pool is up
        os.killpg(proc.pid, signal.SIGTERM)
        wait_until_sync(lambda: "draining" in workers.log(proc), timeout=30)
        gate.touch()
        assert_drains_once(workers, proc)
        task = await queue.get_task(task_id)
        assert task is not None and task.status in ("success", "queued"), (task, workers.log(proc))


@pytest.mark.asyncio
async def test_poison_pill_ends_failed_after_lease_expiries(db: Path, workers: Workers) -> None:
    async with TaskQueue(SQLiteBackend(db)) as queue:
        task_id = await queue.with_options(max_lease_expiries=2).enqueue(tasks.kill_my_worker)
        survivor = await queue.enqueue(tasks.add, 1)
        deaths = 0
        result = None
        while result is None:
            proc = workers.start("--lease-timeout", "0.3")

            async def died_or_decided(proc: subprocess.Popen[bytes] = proc) -> bool:
                return proc.poll() is not None or await queue.get_result(task_id, timeout=0) is not None

            await wait_for(died_or_decided)
            if proc.poll() is not None:
                assert proc.returncode == -signal.SIGKILL
                deaths += 1
                assert deaths <= 2, "the poison pill must stop being delivered after max_lease_expiries"
            result = await queue.get_result(task_id, timeout=0)
        last = proc
        assert deaths == 2
        assert result.status == "failed"
        assert "lease expired after 2 attempts" in (result.error or "")
        ok = await queue.get_result(survivor, timeout=30)
        assert ok is not None and ok.status == "success"
    last.send_signal(signal.SIGTERM)
    assert last.wait(30) == 0


@pytest.mark.asyncio
async def test_a_parent_awaiting_its_child_finishes_after_its_worker_was_killed(
    db: Path, workers: Workers, tmp_path: Path
) -> None:
    """The parent comes back from its expired lease a suspect, which runs alone: its worker reserved nothing until
    it ended, so the child it awaits never started, on a worker with spare slots, and the parent waited for good."""
    marks, gate = tmp_path / "marks.log", tmp_path / "gate"
    args = ("--concurrency", "8", "--lease-timeout", "1")
    async with TaskQueue(SQLiteBackend(db)) as queue:
        parent = await queue.enqueue(tasks.parent_awaiting_child, str(db), str(marks), str(gate))
        victim = workers.start(*args)

        async def parent_waits_for_running_child() -> bool:
            text = marks.read_text() if marks.exists() else ""
            return "parent 1" in text and "child" in text

        await wait_for(parent_waits_for_running_child)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        gate.touch()  # children run through from now on
        workers.start(*args)
        result = await queue.get_result(parent, timeout=30)
        assert result is not None, "the parent (a suspect) never got its child's result:\n" + marks.read_text()
        assert (result.status, queue.deserialize_result(result)) == ("success", "parent got through")
        assert result.attempts == 2


@pytest.mark.asyncio
async def test_a_stuck_sync_task_does_not_keep_a_stopping_worker_alive(db: Path, workers: Workers) -> None:
    marks = db.parent / "stuck-starts.log"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        task_id = await queue.enqueue(tasks.record, str(marks), 1, 120)  # starts, then holds its thread
        proc = workers.start("--shutdown-timeout", "0.5")

        async def started() -> bool:  # started in its thread, not merely reserved (that one is given back)
            return marks.exists()

        await wait_for(started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "the worker must leave once the shutdown timeout has passed"
        task = await queue.get_task(task_id)
        assert task is not None and task.status == "queued", "the abandoned task goes back to the queue"
        assert "still running after the shutdown timeout" in workers.log(proc)


@pytest.mark.asyncio
async def test_a_sync_task_left_by_a_second_signal_is_said_to_be_left_by_it(
    db: Path, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second SIGTERM cut the drain short, yet the worker said it left the thread "after the shutdown timeout"."""
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")  # for the "draining" line
    marks = db.parent / "stuck-starts.log"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        await queue.enqueue(tasks.record, str(marks), 1, 120)  # starts, then holds its thread
        proc = workers.start("--shutdown-timeout", "600")

        async def started() -> bool:
            return marks.exists()

        await wait_for(started)
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return "received, draining" in workers.log(proc)

        await wait_for(draining)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    log = workers.log(proc)
    assert "leaving 1 task thread(s) still running after a second SIGTERM" in log, log
    assert "shutdown timeout" not in log


def test_an_unimportable_task_module_is_a_clear_error(db: Path) -> None:
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-i", "no_such_tasks_module"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "sitq: error: --import no_such_tasks_module" in done.stderr
    assert "ModuleNotFoundError" in done.stderr and "Traceback" not in done.stderr


def test_a_file_name_given_to_import_gets_the_module_name_as_a_hint(db: Path, tmp_path: Path) -> None:
    (tmp_path / "mytasks.py").write_text("def job():\n    return 1\n")
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-i", "mytasks.py"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert "--import takes a module name, as for python -m: --import mytasks" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "given", ["ABSOLUTE", "ABSOLUTE_STEM", "./mytasks.py", "../here/mytasks.py", ".mytasks", "./shop", "shop/"]
)
def test_a_path_given_to_import_is_a_clean_error_whose_hint_works(db: Path, tmp_path: Path, given: str) -> None:
    """A file path names no module: the hint gives the module name and the folder to run from, never a dotted
    version of the whole path; a leading '.' (a relative import) is a clean exit 2, not a TypeError."""
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "mytasks.py").write_text("def job():\n    return 1\n")
    (folder / "shop").mkdir()
    (folder / "shop" / "__init__.py").write_text("")
    given = {"ABSOLUTE": str(folder / "mytasks.py"), "ABSOLUTE_STEM": str(folder / "mytasks")}.get(given, given)
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-i", given]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=folder)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"sitq: error: --import {given}: ") and "Traceback" not in done.stderr
    assert "TypeError" not in done.stderr, done.stderr
    if given != ".mytasks":  # a path: the module's own name, and where to run from
        name = "shop" if "shop" in given else "mytasks"
        assert f"--import {name}" in done.stderr, done.stderr
        assert given == "shop/" or "PYTHONPATH" in done.stderr, done.stderr  # shop/ is relative: it imports
        assert "--import tmp." not in done.stderr and "--import ..." not in done.stderr


@pytest.mark.parametrize("option", ["--import", "--allow-task"])
def test_a_task_module_calling_sys_exit_at_import_is_a_failed_start_not_a_clean_stop(
    db: Path, tmp_path: Path, option: str
) -> None:
    """``sys.exit(0)`` in a settings check at import made ``sitq worker`` exit 0 without a word."""
    (tmp_path / "exits_at_import.py").write_text("import sys\n\ndef job():\n    pass\n\nsys.exit(0)\n")
    target = "exits_at_import" if option == "--import" else "exits_at_import:job"
    extra = ["-s", "msgpack"] if option == "--allow-task" else []
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", *extra, option, target]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert f"{option} {target}: cannot import it: SystemExit" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("queues", ["", ",", "mail,,reports", " "])
def test_an_empty_queue_name_is_refused_not_read_as_every_queue(db: Path, queues: str) -> None:
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-q", queues]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--queues must be comma-separated non-empty queue names" in done.stderr


@pytest.mark.asyncio
async def test_queue_takes_a_name_as_written_so_names_with_commas_or_spaces_are_servable(
    db: Path, workers: Workers
) -> None:
    async with TaskQueue(SQLiteBackend(db)) as queue:
        odd = await queue.with_options(queue_name="mail,eu").enqueue(tasks.add, 1, 2)
        # enqueue refuses " reports " now (the CLI's -q strips names); a task stored under it before, or built by
        # hand, is still served by --queue, which takes the name as written
        built = await queue.get_task(await queue.with_options(queue_name="unserved").enqueue(tasks.add, 3, 4))
        assert built is not None
        spaced = await queue.backend.enqueue(dataclasses.replace(built, id=new_id(), queue=" reports "))
        other = await queue.with_options(queue_name="mail").enqueue(tasks.add, 5, 6)
        workers.start("--queue", "mail,eu", "--queue", " reports ")
        for task_id, value in ((odd, 3), (spaced, 7)):
            done = await queue.get_result(task_id, timeout=30)
            assert done is not None and queue.deserialize_result(done) == value
        assert await queue.get_result(other, timeout=0) is None  # "mail" was not named


def test_an_empty_queue_option_is_refused(db: Path) -> None:
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "--queue", ""]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--queue must be a non-empty queue name" in done.stderr


BREAK_THE_WORKER = '''
"""Imported with -i: makes the worker's exchange loop fail after the first finished task (a stand-in bug)."""
from sitq_core import worker


def _fail(self, running, outcome, extra):
    raise RuntimeError("simulated internal bug")


worker.Worker._after_accept = _fail
'''


def spawn_with_stderr(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.asyncio
async def test_a_worker_failing_with_a_stuck_sync_task_still_exits(db: Path, tmp_path: Path) -> None:
    (tmp_path / "break_the_worker.py").write_text(BREAK_THE_WORKER)
    async with TaskQueue(SQLiteBackend(db)) as queue:
        stuck = await queue.enqueue(tasks.sync_sleepy, 120)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(tmp_path)]))
        command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-c", "2"]
        command += ["--shutdown-timeout", "0.5", "-i", "sitq_test_tasks", "-i", "break_the_worker"]
        proc = spawn_with_stderr(command, env)
        try:

            async def running() -> bool:
                return (await queue.counts())["running"] == 1

            await wait_for(running)
            await queue.enqueue(tasks.add, 1)  # its outcome trips the simulated bug
            _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert proc.returncode == 2, err
        assert "worker stopped after an internal error" in err
        task = await queue.get_task(stuck)
        assert task is not None and task.status == "queued", "the stuck task was released for other workers"


@pytest.mark.asyncio
@pytest.mark.parametrize("concurrency", ["2", "4"])
async def test_a_poison_pill_does_not_take_the_tasks_beside_it_down_again(
    db: Path, workers: Workers, tmp_path: Path, concurrency: str
) -> None:
    """Reserved together with the pill, innocent tasks died with it each time and ended 'lease expired'."""
    log = tmp_path / "ran.log"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        pill = await queue.enqueue(tasks.kill_my_worker)
        innocent = [await queue.enqueue(tasks.record, str(log), n) for n in range(12)]
        for _round in range(10):
            proc = workers.start("--lease-timeout", "0.5", "-c", concurrency, "--prefetch", "0")

            async def died_or_done(proc: subprocess.Popen[bytes] = proc) -> bool:
                if proc.poll() is not None:
                    return True
                counts = await queue.counts()
                return counts["queued"] + counts["running"] == 0

            await wait_for(died_or_done)
            if proc.poll() is None:
                break
        pill_result = await queue.get_result(pill, timeout=0)
        results = [await queue.get_result(task_id, timeout=0) for task_id in innocent]
    assert pill_result is not None and pill_result.status == "failed", pill_result
    lost = [r.error for r in results if r is None or r.status != "success"]  # type: ignore[union-attr]
    assert lost == [], f"innocent tasks ended with the pill: {lost}"


@pytest.mark.asyncio
async def test_allow_task_limits_a_msgpack_worker_to_the_listed_functions(db: Path, workers: Workers) -> None:
    async with TaskQueue(SQLiteBackend(db), serializer="msgpack") as queue:
        allowed = await queue.enqueue(tasks.add, 2, 3)
        refused = await queue.enqueue(tasks.echo, "hi")
        workers.start("-s", "msgpack", "--allow-task", "sitq_test_tasks:add")
        done = await queue.get_result(allowed, timeout=30)
        assert done is not None and done.status == "success", done
        assert queue.deserialize_result(done) == 5
        failed = await queue.get_result(refused, timeout=30)
        assert failed is not None and failed.status == "failed"
        assert "not in this serializer's allowed_tasks (sitq_test_tasks:add)" in failed.error


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--allow-task", "sitq_test_tasks:add"], "--allow-task needs --serializer"),
        (
            ["-s", "cloudpickle", "--allow-task", "sitq_test_tasks:add"],
            "'cloudpickle' (CloudpickleSerializer) takes no allowed_tasks",
        ),
        (["-s", "msgpack", "--allow-task", "sitq_test_tasks.add"], "did you mean sitq_test_tasks:add?"),
        (["-s", "msgpack", "--allow-task", "sitq_test_tasks:no_such"], "--allow-task sitq_test_tasks:no_such: cannot"),
        (["-s", "msgpack", "--allow-task", "no_such_module:add"], "ModuleNotFoundError"),
        (["-s", "msgpack", "--allow-task", "sitq_test_tasks:GATE"], "not a function"),
        (["-s", "msgpack", "--allow-task", "sitq_test_tasks:Permanent"], "it names a class, not a function"),
        # os.path.join is posixpath.join (ntpath on Windows): msgpack stores it under that path, never os.path's
        (["-s", "msgpack", "--allow-task", "os.path:join"], f"use --allow-task {os.path.join.__module__}:join"),
        (["-s", "msgpack", "--allow-task", "shop.tasks:"], "the function part is empty"),
        (["-s=", "--allow-task", "sitq_test_tasks:add"], "sitq: error: --serializer: no serializer named ''"),
    ],
)
def test_a_bad_allow_task_stops_the_worker_at_start(db: Path, args: list[str], expected: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_allow_task_takes_task_functions_and_functions_under_their_own_paths() -> None:
    from sitq_core.cli import _worker_serializer

    serializer = _worker_serializer("msgpack", ["sitq_test_tasks:decorated_flaky", "sitq_test_tasks:add"])
    assert isinstance(serializer, MsgpackSerializer)
    assert serializer.allowed_tasks == {"sitq_test_tasks:decorated_flaky", "sitq_test_tasks:add"}


def test_allow_task_takes_an_old_path_given_beside_the_functions_own() -> None:
    """Tasks stored under a path the function left (now re-exported there) still drain (review)."""
    from sitq_core.cli import _worker_serializer

    own = f"{os.path.join.__module__}:join"
    serializer = _worker_serializer("msgpack", ["os.path:join", own])
    assert isinstance(serializer, MsgpackSerializer)
    assert serializer.allowed_tasks == {"os.path:join", own}


def test_a_msgpack_worker_without_an_allow_list_warns_that_it_calls_any_importable_function(db: Path) -> None:
    """A row naming os:system or pickle:loads is run by such a worker: the operator is told at start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}", "-s", "msgpack"],
        stderr=subprocess.PIPE,
        text=True,
    )
    import threading

    bound = threading.Timer(20, proc.terminate)  # a worker that says nothing would keep readline waiting
    bound.start()
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        bound.cancel()
        proc.terminate()
        proc.wait(30)
    assert "without --allow-task calls any importable function" in first


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_store_is_locked_at_connect_exits_zero_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """The worker's draining handlers were in place while it connected, but the connect waited out busy_timeout."""
    db = tmp_path / "locked.db"
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("CREATE TABLE other_app (x)")
    locker.execute("BEGIN EXCLUSIVE")  # a VACUUM or a migration in another process
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    command = [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{db}?busy_timeout=60", "-i", "sitq_test_tasks"]
    proc = spawn_with_stderr(command, env)
    try:
        # connecting: its process has the file open (imports are over, Worker.run's handlers are in place)
        wait_until_sync(lambda: _has_open(proc.pid, db), timeout=30)
        time.sleep(0.2)  # well into the busy wait (the bug: the stop waited for the connect to give up)
        proc.send_signal(signum)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        locker.rollback()
        locker.close()


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # a descriptor closed while it was listed
        return False
