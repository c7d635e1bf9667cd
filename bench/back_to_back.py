"""Latency of a client that enqueues, then waits for the result, then enqueues again (SQLite).

    bench/.venv/bin/python bench/back_to_back.py            # pauses 0, 0.01 and 0.05 s; worker -c 4
    bench/.venv/bin/python bench/back_to_back.py --rounds 100 --pause 0 --concurrency 1
    bench/.venv/bin/python bench/back_to_back.py --pause 0 --clients 4   # 4 such clients at once

A ``sitq worker`` runs in another process, so every pickup and every result
is a cross-process wake-up. Prints the medians (and maxima) of enqueue ->
task start and task end -> ``get_result`` returning. Both used to be about
20 ms back to back (the worker's group commit paced each claim and finish;
see ``sitq_core/pacing.py``), against 2-3 ms after a pause.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402

from sitq import SQLiteBackend, TaskQueue  # noqa: E402


async def measure(
    path: str, pause: float, rounds: int, concurrency: int, clients: int = 1, batch_window: str | None = None
) -> str:
    async with TaskQueue(SQLiteBackend(path)) as queue:
        await queue.enqueue(bench_tasks.noop)  # the file and its tables exist before the worker starts
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        worker = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{path}", "-c", str(concurrency)],
            *(["--batch-window", batch_window] if batch_window is not None else []),
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(2.0)  # the worker imports, starts and takes the first task
            pickup: list[float] = []
            returned: list[float] = []
            trips: list[float] = []

            async def client() -> None:
                for _ in range(rounds):
                    await asyncio.sleep(pause)
                    began = datetime.now(UTC)
                    task_id = await queue.enqueue(bench_tasks.noop)
                    result = await queue.get_result(task_id, timeout=30)
                    now = datetime.now(UTC)
                    assert result is not None and result.started_at and result.finished_at
                    pickup.append((result.started_at - result.enqueued_at).total_seconds() * 1000)
                    returned.append((now - result.finished_at).total_seconds() * 1000)
                    trips.append((now - began).total_seconds() * 1000)

            began = asyncio.get_running_loop().time()
            await asyncio.gather(*(client() for _ in range(clients)))
            elapsed = asyncio.get_running_loop().time() - began
        finally:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 30)
    median = statistics.median
    return (
        f"pause {pause:g} s, worker -c {concurrency}, {clients} client(s) x {rounds} rounds: "
        f"enqueue -> start {median(pickup):.1f} ms (max {max(pickup):.1f}), "
        f"end -> get_result {median(returned):.1f} ms (max {max(returned):.1f}), "
        f"round trip {median(trips):.1f} ms, {len(trips) / elapsed:,.0f} round trips/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause", type=float, action="append", help="seconds between rounds (repeatable)")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--clients", type=int, default=1, help="clients round-tripping at once, each on its own")
    parser.add_argument("--batch-window", help="the worker's --batch-window (default: its own, adaptive)")
    args = parser.parse_args()
    for pause in args.pause or [0.0, 0.01, 0.05]:
        with tempfile.TemporaryDirectory() as folder:
            print(
                asyncio.run(
                    measure(
                        str(Path(folder) / "b2b.db"),
                        pause,
                        args.rounds,
                        args.concurrency,
                        args.clients,
                        args.batch_window,
                    )
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
