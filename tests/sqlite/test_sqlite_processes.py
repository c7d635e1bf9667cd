"""Several OS processes on one file: no lock errors, no double reservation, fast wake-ups."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend

HELPER = str(Path(__file__).with_name("mp_helper.py"))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_four_processes_enqueue_and_reserve_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    await SQLiteBackend(path).connect()  # create the schema up front (the children would race fine too)
    per_process = 300
    children = [
        subprocess.Popen(  # noqa: ASYNC220 - starting a child is quick; we wait below
            [sys.executable, HELPER, "churn", str(path), str(per_process), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    reserved: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert "locked" not in err.lower()
        reserved.extend(json.loads(out))
    assert len(reserved) == len(set(reserved)), "a task was reserved twice while its lease was valid"
    async with SQLiteBackend(path) as backend:
        counts = await backend.counts()
        assert counts["success"] == 4 * per_process
        assert len(reserved) == 4 * per_process
        assert sum(counts.values()) == 4 * per_process


async def start_child(*args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(  # noqa: ASYNC220 - starting a child is quick
        [sys.executable, HELPER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = await asyncio.to_thread(child.stdout.readline)
    assert line.strip() == "ready", child.stderr.read() if child.stderr else ""
    return child


def signal(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def finish(child: subprocess.Popen[str]) -> None:
    _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err


@pytest.mark.slow
@pytest.mark.asyncio
async def test_wait_for_work_wakes_on_another_process_enqueue(tmp_path: Path) -> None:
    path = tmp_path / "wake.db"
    async with SQLiteBackend(path) as backend:
        assert await backend.reserve(worker_id="w", limit=1, lease_seconds=5) == []
        task_id = new_id()
        child = await start_child("enqueue", str(path), task_id)
        try:
            start = time.monotonic()
            signal(child)
            got = []
            while not got and time.monotonic() - start < 10:
                # Each wait returns early on any change (spurious wake-ups are allowed).
                await backend.wait_for_work(20)
                got = await backend.reserve(worker_id="w", limit=1, lease_seconds=5)
            elapsed = time.monotonic() - start
        finally:
            finish(child)
        assert [lease.id for lease in got] == [task_id]
        assert elapsed < 2.0, f"woke after {elapsed:.3f}s of a 20 s timeout"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_wait_for_result_wakes_on_another_process_completion(tmp_path: Path) -> None:
    path = tmp_path / "result.db"
    async with SQLiteBackend(path) as backend:
        task = Task(id=new_id(), payload=b"x")
        await backend.enqueue(task)
        child = await start_child("complete", str(path), task.id)
        try:
            waiter = asyncio.create_task(backend.wait_for_result(task.id, 20))
            await asyncio.sleep(0)
            start = time.monotonic()
            signal(child)
            result = await asyncio.wait_for(waiter, 10)
            elapsed = time.monotonic() - start
        finally:
            finish(child)
        assert result is not None and result.value == b"done elsewhere"
        assert elapsed < 2.0, f"result seen after {elapsed:.3f}s of a 20 s timeout"
