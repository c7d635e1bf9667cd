# ruff: noqa: T201, ASYNC220  (a benchmark script: it prints its figures)
"""Backend-level figures for the SQLite backend; run: .venv/bin/python sitq_sqlite/bench/bench_backend.py.

Prints enqueue rate, reserve+finish rate (one task per call, and batches of
16) at two queue depths, the idle CPU of a waiting ``wait_for_work`` and the
cross-process pickup latency (another process enqueues; we wake and reserve).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sitq_core.models import Outcome, Task, new_id
from sitq_sqlite import SQLiteBackend


async def fill(backend: SQLiteBackend, n: int) -> float:
    start = time.perf_counter()
    for _ in range(0, n, 1000):
        await backend.enqueue_many([Task(id=new_id(), payload=b"x" * 64) for _ in range(1000)])
    return n / (time.perf_counter() - start)


async def drain(backend: SQLiteBackend, n: int, batch: int) -> float:
    start = time.perf_counter()
    done = 0
    while done < n:
        leases = await backend.reserve(worker_id="bench", limit=batch, lease_seconds=60)
        await backend.finish_many([Outcome(r.id, r.lease_token, "success", value=b"ok") for r in leases])
        done += len(leases)
    return done / (time.perf_counter() - start)


async def throughput(folder: Path, depth: int, synchronous: str) -> None:
    backend = SQLiteBackend(folder / f"depth{depth}-{synchronous}.db", synchronous=synchronous)
    async with backend:
        rate = await fill(backend, depth)
        one = await drain(backend, 2000, 1)
        sixteen = await drain(backend, 4000, 16)
    print(
        f"depth {depth:>9,} synchronous={synchronous:<6}: enqueue (1000/batch) {rate:>9,.0f}/s  "
        f"reserve+finish 1/call {one:>7,.0f}/s  16/call {sixteen:>7,.0f}/s"
    )


async def idle_cpu(folder: Path, seconds: float = 3.0) -> None:
    backend = SQLiteBackend(folder / "idle.db")
    async with backend:
        await backend.reserve(worker_id="w", limit=1, lease_seconds=5)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            await backend.wait_for_work(1.0)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    print(f"idle wait_for_work loop: {100 * cpu / wall:.2f}% of one core")


ENQUEUER = """
import asyncio, sys, time
from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend
async def main():
    b = SQLiteBackend(sys.argv[1])
    async with b:
        for line in sys.stdin:
            if not line.strip():
                break
            await b.enqueue(Task(id=new_id(), payload=str(time.time()).encode()))
asyncio.run(main())
"""


async def pickup(folder: Path, rounds: int = 40) -> None:
    path = folder / "pickup.db"
    backend = SQLiteBackend(path)
    await backend.connect()
    proc = subprocess.Popen([sys.executable, "-c", ENQUEUER, str(path)], stdin=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    latencies: list[float] = []
    try:
        for _ in range(rounds):
            await backend.reserve(worker_id="w", limit=1, lease_seconds=5)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            got = []
            while not got:
                await backend.wait_for_work(2.0)
                got = await backend.reserve(worker_id="w", limit=1, lease_seconds=5)
            latencies.append(time.time() - float(got[0].task.payload))
            await backend.complete(got[0], None)
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait()
        await backend.close()
    latencies.sort()
    print(
        f"cross-process pickup (enqueue commit -> reserved here): p50 {1000 * statistics.median(latencies):.2f} ms, "
        f"p90 {1000 * latencies[int(0.9 * len(latencies))]:.2f} ms"
    )


async def main() -> None:
    depths = [int(arg) for arg in sys.argv[1:]] or [10_000, 200_000]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for depth in depths:
            await throughput(folder, depth, "FULL")
        await throughput(folder, depths[0], "NORMAL")
        await idle_cpu(folder)
        await pickup(folder)


if __name__ == "__main__":
    asyncio.run(main())
