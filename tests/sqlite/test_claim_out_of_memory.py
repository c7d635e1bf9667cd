"""A task whose payload does not fit in a worker's memory costs the tasks claimed with it nothing.

A claim of a batch that returns a 100 MB payload needs several times that in
memory; under a memory limit (``ulimit -v``, faked here with RLIMIT_AS on a
child process) it raised a bare MemoryError, the claim rolled back, and the
worker retried it forever: every task of the batch stayed queued. Now the
backend claims one task at a time after such a failure: the others run, and
the big one stays queued (its row cannot even be changed in that memory) and
is passed over for a while, with one warning naming its payload size.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend
from sitq_core.models import Task, TaskStatus
from sitq_core.testing.clock import FakeClock

BIG = 100 << 20
HEADROOM = 150 << 20  # enough for small tasks; not for changing (or reading) a row holding BIG bytes

#: what both child scripts begin with: a finish outcome, and a memory limit a given headroom above the process's size
PREAMBLE = textwrap.dedent(
    """
    import asyncio, logging, os, resource, sys
    from datetime import UTC, datetime
    from sitq import SQLiteBackend
    from sitq_core.models import Outcome

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    def done(lease):
        now = datetime.now(UTC)
        return Outcome(lease.task.id, lease.lease_token, "success", value=b"ok", started_at=now, finished_at=now)

    def limit_memory(headroom):
        vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + headroom,) * 2)

    """
)

CHILD = PREAMBLE + textwrap.dedent(
    """
    async def main():
        backend = SQLiteBackend(sys.argv[1])
        await backend.connect()
        first = await backend.reserve(worker_id="w", limit=1, lease_seconds=60)
        limit_memory(int(sys.argv[2]))
        # the claim after the finish takes small-1, big and small-2 in one batch: it runs out of memory
        accepted, leases = await backend.finish_and_reserve(
            [done(lease) for lease in first], worker_id="w", limit=3, lease_seconds=60
        )
        print("accepted", accepted)
        print("claimed", [lease.task.id for lease in leases])
        while leases:  # as a worker goes on
            accepted, leases = await backend.finish_and_reserve(
                [done(lease) for lease in leases], worker_id="w", limit=3, lease_seconds=60
            )
            print("finished", accepted, "claimed", [lease.task.id for lease in leases])
        print("again", [lease.task.id for lease in await backend.reserve(worker_id="w", limit=3, lease_seconds=60)])
        eta = await backend.next_eta()
        print("next_eta_later", eta is not None and eta > backend.now())
        await backend.close()

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_payload_too_big_for_memory_holds_up_no_other_task(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"

    async def enqueue() -> None:
        backend = SQLiteBackend(path)
        await backend.connect()
        for task_id, payload in (("small-0", b"0"), ("small-1", b"1"), ("big", b"x" * BIG), ("small-2", b"2")):
            await backend.enqueue(Task(id=task_id, payload=payload, function_name="f"))
        await backend.close()

    asyncio.run(enqueue())
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, MALLOC_ARENA_MAX="2"),
    )
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines == [
        "accepted [True]",
        # claimed one by one, the big one last; it does not fit, small-1 is handed out (the big one may not
        # fit only because of the memory small-1 holds: it is tried again alone, at the next claim)
        "claimed ['small-1']",
        "finished [True] claimed ['small-2']",
        "finished [True] claimed []",
        "again []",
        "next_eta_later True",
    ], child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, child.stderr  # once, not at every claim
    assert f"task big (f) left queued: its payload ({BIG} bytes) does not fit" in warnings[0]
    assert "Traceback" not in child.stderr

    async def look() -> None:
        backend = SQLiteBackend(path)
        await backend.connect()
        big = await backend.get_task("big")
        assert big is not None
        assert (big.status, big.attempts, len(big.payload)) == (TaskStatus.QUEUED, 0, BIG)
        for task_id in ("small-0", "small-1", "small-2"):
            task = await backend.get_task(task_id)
            assert task is not None and task.status is TaskStatus.SUCCESS
        await backend.close()

    asyncio.run(look())


# A row the store ends itself instead of handing it out (its lease expired ``max_lease_expiries`` times, or its
# cancel was requested) is rewritten whole too, payload and all: that runs out of memory as a claim does, and the
# tasks due after it must still run. The row stays as it is (a worker with more memory ends it).
ENDING_CHILD = PREAMBLE + textwrap.dedent(
    """
    async def main():
        backend = SQLiteBackend(sys.argv[1])
        await backend.connect()
        await backend.list_tasks()
        limit_memory(int(sys.argv[2]))
        leases = await backend.reserve(worker_id="w", limit=3, lease_seconds=60)
        print("claimed", sorted(lease.task.id for lease in leases))
        accepted, leases = await backend.finish_and_reserve(
            [done(lease) for lease in leases], worker_id="w", limit=3, lease_seconds=60
        )
        print("finished", accepted, "claimed", [lease.task.id for lease in leases])
        print("again", [lease.task.id for lease in await backend.reserve(worker_id="w", limit=3, lease_seconds=60)])
        await backend.close()

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("ending", ["expired too often", "cancelled while running", "cancelled while queued"])
def test_a_big_task_the_store_would_end_holds_up_no_other_task(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "mem.db"
    start = datetime.now(UTC) - timedelta(hours=1)

    async def enqueue() -> None:
        backend = SQLiteBackend(path)
        clock = FakeClock(start)
        backend.clock = clock
        await backend.connect()
        expiries = 1 if ending == "expired too often" else 5
        at = {"enqueued_at": clock.now(), "eta": clock.now()}
        await backend.enqueue(Task(id="big", payload=b"x" * BIG, function_name="f", max_lease_expiries=expiries, **at))
        if ending != "cancelled while queued":  # its worker is gone: the lease ran out an hour ago
            (lease,) = await backend.reserve(worker_id="gone", limit=1, lease_seconds=1)
            assert lease.task.id == "big"
            if ending == "cancelled while running":
                assert await backend.cancel("big")
        clock.advance(10)  # the small tasks are due after the big one: they come behind it in every claim
        for i in range(3):
            at = {"enqueued_at": clock.now(), "eta": clock.now()}
            await backend.enqueue(Task(id=f"small-{i}", payload=b"s", function_name="f", **at))
        await backend.close()
        if ending == "cancelled while queued":  # as sitq before its cancel rule left a retried task
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = 'big'")

    asyncio.run(enqueue())
    with closing(sqlite3.connect(path)) as conn:
        before = conn.execute("SELECT status, attempts, lease_expiries FROM tasks WHERE id = 'big'").fetchone()
    child = subprocess.run(
        [sys.executable, "-c", ENDING_CHILD, str(path), str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, MALLOC_ARENA_MAX="2"),
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "claimed ['small-0', 'small-1', 'small-2']",
        "finished [True, True, True] claimed []",
        "again []",
    ], child.stderr
    assert "Traceback" not in child.stderr and "MemoryError" in child.stderr
    warnings = [line for line in child.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, child.stderr  # once, not at every claim
    assert f"task big (f) left as it is: its payload ({BIG} bytes) does not fit" in warnings[0]
    with closing(sqlite3.connect(path)) as conn:
        after = conn.execute("SELECT status, attempts, lease_expiries FROM tasks WHERE id = 'big'").fetchone()
        done = conn.execute("SELECT count(*) FROM tasks WHERE id LIKE 'small-%' AND status = 'success'").fetchone()
        assert conn.execute("SELECT count(*) FROM results WHERE task_id = 'big'").fetchone() == (0,)
    assert after == before  # a worker with more memory ends it
    assert done == (3,)


def test_a_row_passed_over_while_a_claim_reads_the_list_stays_passed_over(tmp_path: Path) -> None:
    """A claim's body reads the rows passed over on the connection thread while ``_pass_over`` adds one on the
    event loop's: the claim must not write back the list it read (that lost the row added meanwhile, so the next
    claim ran out of memory on it again). Forced interleaving: the add runs while the claim reads."""
    backend = SQLiteBackend(tmp_path / "race.db")
    backend.clock = FakeClock()
    now = backend._now_us()

    class AddedWhileRead(dict[int, int]):
        added = False

        def items(self) -> Any:
            if not self.added:
                self.added = True
                backend._pass_over(2, "late", "f", BIG, "claiming it")  # the loop thread, meanwhile
            return super().items()

    backend._passed_over = AddedWhileRead({1: now + 1})
    assert set(backend._passed_over_at(now)) == {1}  # what the claim reads
    assert set(backend._passed_over_at(now)) == {1, 2}  # the row added meanwhile is still passed over
