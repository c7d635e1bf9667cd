"""Enqueue rate with many callers at once: coroutines on one loop, or threads through SyncTaskQueue.

    bench/.venv/bin/python bench/concurrent_enqueue.py [--n 3000] [--synchronous FULL]

A web server enqueues from many requests at the same moment. One fsync per
call caps them all together at the disk's commit rate unless calls that
arrive together share a commit (sitq's group commit, see
sitq_sqlite/groupcommit.py). Prints tasks/s for 1, 10 and 100 concurrent
coroutines, for 1, 8 and 32 threads sharing one SyncTaskQueue, and for huey's
SqliteHuey with the same threads when huey is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402

from sitq import SQLiteBackend, SyncTaskQueue, TaskQueue  # noqa: E402

COROUTINES = (1, 10, 100)
THREADS = (1, 8, 32)


async def sitq_coroutines(path: Path, n: int, callers: int, synchronous: str) -> float:
    async with TaskQueue(SQLiteBackend(path, synchronous=synchronous)) as queue:
        await queue.enqueue(bench_tasks.noop)  # connect and create the schema outside the timing
        slots = asyncio.Semaphore(callers)

        async def one() -> None:
            async with slots:
                await queue.enqueue(bench_tasks.noop)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - began)


def threaded(n: int, threads: int, enqueue: Callable[[], object]) -> float:
    enqueue()  # connect outside the timing
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda _: enqueue(), range(n)):
            pass
    return n / (time.perf_counter() - began)


def sitq_threads(path: Path, n: int, threads: int, synchronous: str) -> float:
    with SyncTaskQueue(SQLiteBackend(path, synchronous=synchronous)) as queue:
        return threaded(n, threads, lambda: queue.enqueue(bench_tasks.noop))


def huey_threads(path: Path, n: int, threads: int, synchronous: str) -> float | None:
    os.environ["BENCH_HUEY_DB"], os.environ["BENCH_SYNC"] = str(path), synchronous
    try:
        huey_tasks = importlib.reload(importlib.import_module("huey_tasks"))
    except ImportError:
        return None
    return threaded(n, threads, huey_tasks.noop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="tasks per measurement")
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    args = parser.parse_args()
    print(f"{args.n:,d} trivial tasks per row, synchronous={args.synchronous}, tasks/s")
    print(f"| {'callers':<36} | {'sitq':>9} | {'huey':>9} | {'ratio':>7} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 11}|{'-' * 9}|")
    with tempfile.TemporaryDirectory(prefix="sitq-concurrent-") as folder:
        for count, callers in enumerate(COROUTINES):
            rate = asyncio.run(sitq_coroutines(Path(folder, f"c{count}.db"), args.n, callers, args.synchronous))
            label = f"{callers} coroutine(s) on one loop"
            print(f"| {label:<36} | {rate:9,.0f} | {'n/a':>9} | {'n/a':>7} |")
        for count, threads in enumerate(THREADS):
            rate = sitq_threads(Path(folder, f"t{count}.db"), args.n, threads, args.synchronous)
            huey = huey_threads(Path(folder, f"h{count}.db"), args.n, threads, args.synchronous)
            label = f"{threads} thread(s), one SyncTaskQueue"
            huey_text, ratio = ("n/a", "n/a") if huey is None else (f"{huey:,.0f}", f"{rate / huey:.2f}x")
            print(f"| {label:<36} | {rate:9,.0f} | {huey_text:>9} | {ratio:>7} |")


if __name__ == "__main__":
    main()
