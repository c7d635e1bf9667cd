"""Many ``get_result`` waiters in one process while a worker process finishes their tasks.

    bench/.venv/bin/python bench/many_waiters.py [--n 5000] [--task-seconds 0.002]

The common pattern ``await asyncio.gather(*(queue.get_result(i) for i in ids))``:
the waiting process should spend CPU in proportion to the results it receives,
not to waiters times commits. Prints the wall time, the waiting process's CPU
seconds and CPU per waiter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402

from sitq import SQLiteBackend, TaskQueue  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_worker(path: Path) -> subprocess.Popen[bytes]:
    """``sitq worker`` in a child process, four tasks at a time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{path}", "-c", "4", "-i", "bench_tasks"],
        env=env,
        stderr=subprocess.DEVNULL,
    )


async def run(n: int, task_seconds: float, folder: Path) -> None:
    path = folder / "waiters.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        ids = await queue.enqueue_many([(bench_tasks.sleep_stamp, (task_seconds,))] * n)
        worker = start_worker(path)
        try:
            cpu_before, began = cpu_seconds(), time.perf_counter()
            results = await asyncio.gather(*(queue.get_result(task_id, timeout=600) for task_id in ids))
            wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu_before
        finally:
            worker.terminate()
            worker.wait(30)
    ok = sum(1 for result in results if result is not None and result.ok)
    print(f"waiters:                 {n:9,d} ({ok:,d} results ok)")
    print(f"wall time:               {wall:9.2f} s")
    print(f"waiting process CPU:     {cpu:9.2f} s ({cpu / wall:.0%} of one core)")
    print(f"CPU per waiter:          {cpu / n * 1e6:9.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="waiters (and tasks)")
    parser.add_argument("--task-seconds", type=float, default=0.002, help="how long each task sleeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sitq-waiters-") as tmp:
        asyncio.run(run(args.n, args.task_seconds, Path(tmp)))


if __name__ == "__main__":
    main()
