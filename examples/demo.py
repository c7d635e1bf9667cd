"""sitq demo: enqueue a few thousand tasks into a SQLite file, work them off, show results.

Run it with ``python3 dev.py demo`` (which sets up the virtual environment), or
``python examples/demo.py --tasks 5000 --concurrency 8`` inside it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sitq import SQLiteBackend, TaskQueue, Worker


def is_prime(n: int) -> bool:
    """A small CPU-bound sync task (runs in the worker's thread pool)."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


async def fetch(n: int) -> str:
    """A small async task (runs on the worker's event loop)."""
    await asyncio.sleep(0)
    return f"page-{n}"


def flaky(n: int) -> int:
    """Fails on purpose, to show how failures are recorded."""
    raise ValueError(f"item {n} is broken")


class Progress:
    """The progress bar: redrawn in place on a terminal; in a file or a pipe, a plain line each quarter of the way.

    Redrawing with ``\r`` ten times a second made ``dev.py demo > out.txt`` one line of kilobytes.
    """

    def __init__(self, total: int, started: float) -> None:
        self.total = total
        self.started = started
        self.live = sys.stdout.isatty()
        self.quarter = 1  # the next quarter of the way that gets a line of its own (not on a terminal)

    def show(self, done: int) -> None:
        width = 40
        filled = int(width * done / self.total) if self.total else width
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        line = f"  [{'#' * filled}{'.' * (width - filled)}] {done:>6}/{self.total} tasks  {rate:>8,.0f}/s"
        if self.live:
            sys.stdout.write(f"\r{line}")
            sys.stdout.flush()
        elif done * 4 >= self.quarter * self.total:
            print(line, flush=True)
            self.quarter = done * 4 // max(self.total, 1) + 1

    def end(self) -> None:
        if self.live:
            print()  # the bar's line ends here


async def main(tasks: int, concurrency: int, path: Path) -> None:
    # every 500th task fails on purpose; the worker logs each final failure at WARNING,
    # which would break into the progress line: the demo prints one failure itself at the end
    logging.getLogger("sitq.worker").setLevel(logging.ERROR)
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        print(f"sitq demo: {tasks} tasks on {path} (SQLite, synchronous=FULL); every 500th fails on purpose")

        began = time.perf_counter()
        single = [await queue.enqueue(is_prime, n) for n in range(100)]
        single_rate = 100 / (time.perf_counter() - began)

        began = time.perf_counter()
        calls: list[tuple[Callable[..., object], tuple[int]]] = []
        for n in range(100, tasks):
            if n % 500 == 0:
                calls.append((flaky, (n,)))
            elif n % 2:
                calls.append((is_prime, (n,)))
            else:
                calls.append((fetch, (n,)))
        batch = await queue.enqueue_many(calls)
        batch_rate = len(batch) / (time.perf_counter() - began)
        ids = single + batch
        print(f"  enqueued 100 one by one ({single_rate:,.0f}/s) and {len(batch)} in one batch ({batch_rate:,.0f}/s)")

        worker = Worker(backend, max_concurrency=concurrency, prefetch=64)
        started = time.perf_counter()
        await worker.start()
        total = len(ids)
        done = 0  # this run's own tasks, in order (a reused --db may hold others, finished or not)
        bar = Progress(total, started)
        while True:
            while done < total and await backend.get_result(ids[done]) is not None:
                done += 1
            bar.show(done)
            if done >= total:
                break
            await backend.wait_for_result(ids[done], timeout=0.1)
        elapsed = time.perf_counter() - started
        await worker.stop()
        bar.end()

        counts = await queue.counts()
        primes = 0
        for task_id in single:
            result = await queue.get_result(task_id, timeout=0)
            if result is not None and queue.deserialize_result(result):
                primes += 1
        failed = await queue.list_tasks(status="failed", limit=1)
        print(f"  processed {total} tasks in {elapsed:.2f} s: {total / elapsed:,.0f} tasks/s with {concurrency} slots")
        print(f"  status counts: {counts}")
        print(f"  primes below 100: {primes}")
        if failed:
            result = await queue.get_result(failed[0].id, timeout=0)
            assert result is not None
            print(f"  a failed task: {failed[0].function_name} -> {result.error!r} after {result.attempts} attempt(s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: a fresh temporary file)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sitq-demo-") as folder:
        asyncio.run(main(options.tasks, options.concurrency, options.db or Path(folder) / "demo.db"))
