"""Where sitq's time goes: py-spy samples of a worker draining a full queue, and of an enqueue loop.

    bench/.venv/bin/pip install py-spy
    bench/.venv/bin/python bench/profile.py [--n 30000] [--seconds 4] [--synchronous FULL]

Prints, per part, the top functions by self time and by inclusive time, as
microseconds per task (samples / rate / tasks done while sampling), for all
threads together (``--idle`` sampling: time spent waiting in fsync or on a lock
counts, so the figures add up to wall-clock time per task per thread).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402
from compare import Settings, SitqSide, child_env  # noqa: E402

from sitq import SQLiteBackend, TaskQueue  # noqa: E402

ENQUEUE = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[3])
import bench_tasks
from sitq import SQLiteBackend, TaskQueue
async def main():
    async with TaskQueue(SQLiteBackend(sys.argv[1], synchronous=sys.argv[2])) as q:
        await q.enqueue(bench_tasks.noop)
        t = time.perf_counter()
        n = int(sys.argv[4])
        if sys.argv[5] == "many":
            calls = [(bench_tasks.noop, ())] * 1000
            for _ in range(n // 1000):
                await q.enqueue_many(calls)
        else:
            for _ in range(n):
                await q.enqueue(bench_tasks.noop)
        print(f"DONE {n} {time.perf_counter() - t:.3f}", flush=True)
asyncio.run(main())
"""


def pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("py-spy is not installed: bench/.venv/bin/pip install py-spy")
    return found


def report(raw: Path, rate: int, tasks: int, title: str, top: int) -> None:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread (")), "?")
        funcs = [f for f in frames if "(" in f and not f.startswith(("process ", "thread "))]
        threads[thread] += count
        if not funcs:
            continue
        self_time[funcs[-1]] += count
        for name in set(funcs):
            inclusive[name] += count
    per_task = 1e6 / rate / max(tasks, 1)
    print(f"\n## {title}: {tasks:,} tasks while sampling at {rate} Hz (us per task, all threads, idle included)")
    print("\nthreads:")
    for name, count in threads.most_common(8):
        print(f"  {count * per_task:8.1f} us/task  {name}")
    for label, counter in (("self", self_time), ("inclusive", inclusive)):
        print(f"\ntop {top} by {label} time:")
        for name, count in counter.most_common(top):
            print(f"  {count * per_task:8.1f} us/task  {name[:150]}")


async def fill(path: Path, synchronous: str, n: int) -> None:
    async with TaskQueue(SQLiteBackend(path, synchronous=synchronous)) as queue:
        for start in range(0, n, 1000):
            await queue.enqueue_many([(bench_tasks.noop, ())] * min(1000, n - start))


def profile_worker(folder: Path, args: argparse.Namespace) -> None:
    s = Settings(synchronous=args.synchronous)
    side = SitqSide(folder, s)
    asyncio.run(fill(side.path, s.synchronous, args.n))
    worker = side.worker("profile")
    try:
        time.sleep(0.3)
        before = side.done_count()
        out = folder / "worker.raw"
        subprocess.run(
            [
                pyspy(),
                "record",
                "--pid",
                str(worker.pid),
                "--idle",
                "--threads",
                "--rate",
                str(args.rate),
                "--duration",
                str(max(1, round(args.seconds))),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
        )
        after = side.done_count()
    finally:
        worker.stop()
    if after >= args.n:
        print("warning: the queue ran empty while sampling; raise --n", file=sys.stderr)
    report(out, args.rate, after - before, f"sitq worker draining ({s.synchronous})", args.top)


def profile_enqueue(folder: Path, args: argparse.Namespace, many: bool = False) -> None:
    out = folder / ("enqueue_many.raw" if many else "enqueue.raw")
    path = folder / ("enqueue_many.db" if many else "enqueue.db")
    n = args.n_enqueue * (10 if many else 1)
    proc = subprocess.run(
        [
            pyspy(),
            "record",
            "--idle",
            "--threads",
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--",
            sys.executable,
            "-c",
            ENQUEUE,
            str(path),
            args.synchronous,
            str(HERE),
            str(n),
            "many" if many else "one",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=child_env(folder, args.synchronous),
    )
    done = next((line for line in proc.stdout.splitlines() if line.startswith("DONE")), proc.stdout[-300:])
    print(f"\nenqueue loop: {done} (tasks, seconds)")
    what = "enqueue_many, batches of 1000" if many else "enqueue one by one"
    report(out, args.rate, n, f"sitq {what} ({args.synchronous})", args.top)


def profile_idle(folder: Path, args: argparse.Namespace) -> None:
    s = Settings(synchronous=args.synchronous)
    side = SitqSide(folder, s)
    side.reset()
    worker = side.worker("idle-profile")
    try:
        time.sleep(1.0)
        out = folder / "idle.raw"
        seconds = 5
        subprocess.run(
            [
                pyspy(),
                "record",
                "--pid",
                str(worker.pid),
                "--threads",
                "--rate",
                str(args.rate),
                "--duration",
                str(seconds),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            check=True,
            capture_output=True,
        )
    finally:
        worker.stop()
    # "tasks" = milliseconds of wall time: figures read as us of CPU per ms, i.e. tenths of a percent of a core
    report(out, args.rate, seconds * 1000, "idle sitq worker, on-CPU samples only (us per ms of wall time)", args.top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40_000, help="tasks queued before the worker starts")
    parser.add_argument("--n-enqueue", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--part", default="worker,enqueue,many,idle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sitq-profile-") as tmp:
        if "worker" in args.part:
            profile_worker(Path(tmp), args)
        if "enqueue" in args.part.split(","):
            profile_enqueue(Path(tmp), args)
        if "many" in args.part:
            profile_enqueue(Path(tmp), args, many=True)
        if "idle" in args.part:
            profile_idle(Path(tmp), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
