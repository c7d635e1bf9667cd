"""sitq vs huey (SqliteHuey), side by side, in one run; plus the raw sqlite3 ceiling.

    python3 dev.py bench                       # full run (about 8 minutes: includes 60 s idle rounds and 1M tasks)
    python3 dev.py bench --quick               # small N, no 60 s idle, 100k instead of 1M (under a minute)
    bench/.venv/bin/python bench/compare.py --quick --no-huey

Both systems use a file database in a temp dir, WAL, and the same
``PRAGMA synchronous`` (``--synchronous FULL`` by default). The table is
printed and the figures are written as JSON to ``bench/results/latest.json``.
See docs/explanation/performance.md for what each figure measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_tasks  # noqa: E402

from sitq import SQLiteBackend, TaskQueue  # noqa: E402
from sitq_core.models import Task, new_id  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ settings

PARTS = ("ceiling", "enqueue", "drain", "e2e", "latency", "reserve")


@dataclass
class Settings:
    synchronous: str = "FULL"
    quick: bool = False
    huey: bool = True
    n_enqueue: int = 5000
    n_batch_total: int = 50_000
    batch_size: int = 1000
    n_drain: int = 20_000
    n_e2e: int = 10_000
    idle_short_rounds: int = 15
    idle_long_rounds: int = 3
    idle_long_seconds: float = 60.0
    result_rounds: int = 15
    reserve_depths: tuple[int, int] = (10_000, 1_000_000)
    reserve_samples: int = 2000
    idle_cpu_seconds: float = 5.0
    processes: tuple[int, ...] = (1, 2, 4)
    concurrency: int = 1
    prefetch: int | None = None
    only: tuple[str, ...] = ()
    ceiling_n: int = 5000
    out: Path = HERE / "results" / "latest.json"

    @classmethod
    def from_args(cls, argv: list[str] | None) -> Settings:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
        parser.add_argument("--quick", action="store_true", help="small N; skip the 60 s idle case; 100k not 1M")
        parser.add_argument("--no-huey", action="store_true", help="sitq and sqlite3 only (huey columns n/a)")
        parser.add_argument("--idle-long-rounds", type=int, default=None, help="samples after 60 s idle (0 skips)")
        parser.add_argument("--idle-short-rounds", type=int, default=None, help="samples after 1 s idle")
        parser.add_argument("--n", type=int, default=None, help="tasks for drain, end-to-end and multi-process runs")
        parser.add_argument("--reserve-depth", type=int, default=None, help="the large depth (default 1M, quick 100k)")
        parser.add_argument("--concurrency", type=int, default=1, help="sitq worker -c (default 1, like huey's 1)")
        parser.add_argument("--prefetch", type=int, default=None, help="sitq worker --prefetch (default: adaptive)")
        parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(PARTS)}")
        parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where to write JSON")
        args = parser.parse_args(argv)
        s = cls(synchronous=args.synchronous, quick=args.quick, huey=not args.no_huey)
        if args.quick:
            s.n_enqueue, s.n_batch_total, s.n_drain, s.n_e2e = 1000, 10_000, 2000, 2000
            s.idle_short_rounds, s.idle_long_rounds, s.result_rounds = 5, 0, 5
            s.reserve_depths, s.reserve_samples = (10_000, 100_000), 500
            s.idle_cpu_seconds, s.ceiling_n = 2.0, 1000
        if args.idle_long_rounds is not None:
            s.idle_long_rounds = args.idle_long_rounds
        if args.idle_short_rounds is not None:
            s.idle_short_rounds = args.idle_short_rounds
        if args.n is not None:
            s.n_drain = s.n_e2e = args.n
        if args.reserve_depth is not None:
            s.reserve_depths = (s.reserve_depths[0], args.reserve_depth)
        s.concurrency, s.prefetch, s.out = args.concurrency, args.prefetch, args.json
        s.only = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = set(s.only) - set(PARTS)
        if unknown:
            parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
        return s


# ------------------------------------------------------------------ processes


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    ready_at: float  # NaN until wait_ready()
    log_path: Path
    args: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
        try:
            text = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout:
            self.popen.stdout.close()

    def wait_ready(self) -> None:
        """Read the child's READY line (its imports are done, it serves now) and keep its time."""
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line.startswith("READY"):
            self.popen.kill()
            raise RuntimeError(f"child {self.args} did not start: {line!r}; log:\n{self.log_text()}")
        self.ready_at = float(line.split()[1])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def child_env(folder: Path, synchronous: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    env["BENCH_HUEY_DB"] = str(folder / "huey.db")
    env["BENCH_SYNC"] = synchronous
    env.pop("SITQ_STRICT_PLUGINS", None)
    return env


def spawn(args: list[str], env: dict[str, str], log_path: Path, *, wait: bool = True) -> Proc:
    """Start a child of procs.py; with ``wait`` (default) return once it is ready, else call ``wait_ready()``."""
    with open(log_path, "a") as err:
        popen = subprocess.Popen(
            [sys.executable, str(HERE / "procs.py"), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=str(log_path.parent),
        )
    proc = Proc(popen, math.nan, log_path, args)
    if wait:
        proc.wait_ready()
    return proc


def wait_count(count: Callable[[], int], target: int, timeout: float) -> float:
    """Poll ``count()`` until it reaches ``target``; returns the time it did (polls faster near the end)."""
    deadline = time.time() + timeout
    while True:
        got = count()
        if got >= target:
            return time.time()
        if time.time() > deadline:
            raise TimeoutError(f"only {got} of {target} results after {timeout} s")
        time.sleep(0.001 if got >= target * 0.97 else 0.02)


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------ systems


class SitqSide:
    name = "sitq"

    def __init__(self, folder: Path, s: Settings) -> None:
        self.folder, self.s = folder, s
        self.path = folder / "sitq.db"
        self.env = child_env(folder, s.synchronous)

    def backend(self, path: Path | None = None) -> SQLiteBackend:
        return SQLiteBackend(path or self.path, synchronous=self.s.synchronous)

    def url(self) -> str:
        return f"sqlite:///{self.path}?synchronous={self.s.synchronous}"

    def reset(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def worker(self, tag: str, *, wait: bool = True) -> Proc:
        return spawn(
            ["worker", "sitq", self.url(), str(self.s.concurrency), str(self.s.prefetch)],  # "None": adaptive
            self.env,
            self.folder / f"sitq-worker-{tag}.log",
            wait=wait,
        )

    def done_count(self) -> int:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            try:
                return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
            except sqlite3.OperationalError:
                return int(conn.execute("SELECT count(*) FROM tasks WHERE status = 'success'").fetchone()[0])
        finally:
            conn.close()

    async def enqueue_rate(self, n: int) -> float:
        self.reset()
        async with TaskQueue(self.backend()) as queue:
            await queue.enqueue(bench_tasks.noop)
            start = time.perf_counter()
            for _ in range(n):
                await queue.enqueue(bench_tasks.noop)
            return n / (time.perf_counter() - start)

    async def batch_rate(self, total: int, size: int) -> float:
        self.reset()
        calls = [(bench_tasks.noop, ())] * size
        async with TaskQueue(self.backend()) as queue:
            await queue.enqueue_many(calls[:10])
            start = time.perf_counter()
            for _ in range(total // size):
                await queue.enqueue_many(calls)
            return (total // size) * size / (time.perf_counter() - start)

    async def fill(self, n: int) -> None:
        self.reset()
        async with TaskQueue(self.backend()) as queue:
            for start in range(0, n, 1000):
                await queue.enqueue_many([(bench_tasks.noop, ())] * min(1000, n - start))

    def produce(self, n: int) -> Proc:
        return spawn(
            ["produce", "sitq", str(self.path), self.s.synchronous, str(n)],
            self.env,
            self.folder / "sitq-producer.log",
        )

    async def open_client(self) -> TaskQueue:
        queue = TaskQueue(self.backend())
        await queue.connect()
        return queue

    async def sample_pickup(self, queue: TaskQueue) -> float:
        before = time.time()
        task_id = await queue.enqueue(bench_tasks.stamp)
        result = await queue.get_result(task_id, timeout=60)
        assert result is not None and result.ok, result
        return float(queue.deserialize_result(result)) - before

    async def sample_result_wait(self, queue: TaskQueue, seconds: float) -> float:
        task_id = await queue.enqueue(bench_tasks.sleep_stamp, seconds)
        result = await queue.get_result(task_id, timeout=60)
        returned = time.time()
        assert result is not None and result.ok, result
        return returned - float(queue.deserialize_result(result))


class HueySide:
    name = "huey"

    def __init__(self, folder: Path, s: Settings) -> None:
        self.folder, self.s = folder, s
        self.path = folder / "huey.db"
        self.env = child_env(folder, s.synchronous)
        os.environ["BENCH_HUEY_DB"] = str(self.path)
        os.environ["BENCH_SYNC"] = s.synchronous
        import huey_tasks

        self.mod = huey_tasks
        self.huey = huey_tasks.huey

    def reset(self) -> None:
        self.huey.storage.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.huey.storage.initialize_schema()

    def worker(self, tag: str, *, wait: bool = True) -> Proc:
        return spawn(["worker", "huey"], self.env, self.folder / f"huey-worker-{tag}.log", wait=wait)

    def done_count(self) -> int:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM kv WHERE queue = 'bench'").fetchone()[0])
        finally:
            conn.close()

    def enqueue_rate(self, n: int) -> float:
        self.reset()
        self.mod.noop()
        start = time.perf_counter()
        for _ in range(n):
            self.mod.noop()
        return n / (time.perf_counter() - start)

    def fill(self, n: int) -> None:
        self.reset()
        for _ in range(n):
            self.mod.noop()

    def produce(self, n: int) -> Proc:
        return spawn(["produce", "huey", str(n)], self.env, self.folder / "huey-producer.log")

    def sample_pickup(self) -> float:
        before = time.time()
        handle = self.mod.stamp()
        return float(handle.get(blocking=True, timeout=60)) - before

    def sample_result_wait(self, seconds: float) -> float:
        handle = self.mod.sleep_stamp(seconds)
        value = handle.get(blocking=True, timeout=60)
        return time.time() - float(value)


# ------------------------------------------------------------------ raw sqlite3 ceiling


def raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, due INTEGER NOT NULL,"
        " payload BLOB NOT NULL)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, due, id)")
    return conn


def raw_ceiling(folder: Path, s: Settings) -> dict[str, float]:
    """The same work as a queue's minimum, straight through the stdlib sqlite3 module."""
    path = folder / "raw.db"
    conn = raw_connect(path, s.synchronous)
    payload = b"x" * 64
    n = s.ceiling_n
    start = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO jobs (status, due, payload) VALUES ('queued', ?, ?)", (time.time_ns(), payload))
        conn.execute("COMMIT")
    insert_one = n / (time.perf_counter() - start)

    rows = [("queued", 0, payload)] * s.batch_size
    batches = max(1, 10 * n // s.batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO jobs (status, due, payload) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
    insert_batch = batches * s.batch_size / (time.perf_counter() - start)

    # claim (one commit per job), then mark done (one commit per job): a durable queue's minimum
    ids = []
    start = time.perf_counter()
    for _ in range(n):
        now = time.time_ns()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "UPDATE jobs SET status = 'running', due = ? WHERE id = (SELECT id FROM jobs WHERE status = 'queued' "
            "AND due <= ? ORDER BY due, id LIMIT 1) RETURNING id, payload",
            (now + 30 * 10**9, now),
        ).fetchone()
        conn.execute("COMMIT")
        ids.append(row[0])
    claim_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for job_id in ids:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (job_id,))
        conn.execute("COMMIT")
    done_seconds = time.perf_counter() - start
    claim_done = n / (claim_seconds + done_seconds)
    claim_one = n / claim_seconds
    conn.close()
    return {
        "insert_per_commit": insert_one,
        "insert_batched": insert_batch,
        "claim_per_commit": claim_one,
        "claim_done_per_commit": claim_done,
    }


# ------------------------------------------------------------------ measurements


async def reserve_cost(folder: Path, s: Settings, depth: int) -> float:
    """µs per reserved task (reserve(limit=1), one call per task) with ``depth`` tasks queued."""
    path = folder / f"reserve-{depth}.db"
    backend = SQLiteBackend(path, synchronous=s.synchronous)
    async with backend:
        chunk = 5000
        for start in range(0, depth, chunk):
            await backend.enqueue_many(
                [Task(id=new_id(), payload=b"x" * 64, serializer="pickle") for _ in range(min(chunk, depth - start))]
            )
        for _ in range(20):  # warm the page cache and the statement cache
            await backend.reserve(worker_id="bench", limit=1, lease_seconds=600)
        start_t = time.perf_counter()
        got = 0
        for _ in range(s.reserve_samples):
            got += len(await backend.reserve(worker_id="bench", limit=1, lease_seconds=600))
        elapsed = time.perf_counter() - start_t
    remove_db(path)
    return 1e6 * elapsed / max(got, 1)


def drain(side: Any, n: int, processes: int, is_async: bool) -> dict[str, Any]:
    """Fill the queue with n tasks, start ``processes`` workers; the rate counts from the last worker's start.

    Workers start together (each prints READY once its imports are done), and the first ones ready
    work while the others are still starting; so the rate is the tasks finished after the last
    worker was ready, divided by the time from then to the last result: steady throughput, not start-up.
    (They were started one after another: on a busy machine three drained a small queue before the
    fourth was ready, and the four-process figure read 0.)
    """
    if is_async:
        asyncio.run(side.fill(n))
    else:
        side.fill(n)
    workers = [side.worker(f"drain{processes}-{i}", wait=False) for i in range(processes)]
    try:
        for w in workers:
            w.wait_ready()
        done_at_start = side.done_count()
        start = max(w.ready_at for w in workers)
        end = wait_count(side.done_count, n, timeout=600)
    finally:
        for w in workers:
            w.stop()
    logs = "".join(w.log_text() for w in workers)
    locked = logs.lower().count("database is locked")
    errors = sum(1 for line in logs.splitlines() if "Traceback" in line or "ERROR" in line)
    counted = n - done_at_start
    if counted < n // 4:
        # the first workers drained most of the queue while the last one was still starting (a slow or busy
        # machine): so few tasks say nothing about steady throughput, so no figure rather than a wrong one
        log(
            f"drain with {processes} process(es): only {counted} of {n} tasks were left when the last worker was ready;"
            " no figure (raise --n)"
        )
        return {"rate": None, "seconds": end - start, "locked": locked, "error_lines": errors, "left": counted}
    return {"rate": counted / (end - start), "seconds": end - start, "locked": locked, "error_lines": errors}


def end_to_end(side: Any, n: int, is_async: bool) -> dict[str, float]:
    """A warm worker runs; a producer process enqueues n tasks one by one; time to the last result."""
    if is_async:
        asyncio.run(side_reset(side))
    else:
        side.reset()
    worker = side.worker("e2e")
    try:
        # warm up: one task through the worker
        if is_async:
            asyncio.run(_warm_sitq(side))
        else:
            side.mod.noop().get(blocking=True, timeout=30)
        base = side.done_count()
        producer = side.produce(n)
        end = wait_count(side.done_count, base + n, timeout=600)
        producer.popen.wait(60)
        producer.stop()
        seconds = end - producer.ready_at
    finally:
        worker.stop()
    return {"rate": n / seconds, "seconds": seconds}


async def side_reset(side: SitqSide) -> None:
    side.reset()
    async with TaskQueue(side.backend()) as queue:
        await queue.counts()


async def _warm_sitq(side: SitqSide) -> None:
    async with TaskQueue(side.backend()) as queue:
        task_id = await queue.enqueue(bench_tasks.noop)
        await queue.get_result(task_id, timeout=30)


async def latencies(sides: dict[str, Any], s: Settings, results: dict[str, Any]) -> None:
    """Idle CPU, idle pickup after 1 s and 60 s, and result-wait latency; workers of both systems run side by side."""
    sitq: SitqSide = sides["sitq"]
    huey: HueySide | None = sides.get("huey")
    await side_reset(sitq)
    if huey:
        huey.reset()
    workers = {"sitq": sitq.worker("idle")}
    if huey:
        workers["huey"] = huey.worker("idle")
    client = await sitq.open_client()
    try:
        await _warm_sitq(sitq)
        if huey:
            huey.mod.noop().get(blocking=True, timeout=30)
        # idle CPU: both workers idle for a while
        await asyncio.sleep(1.0)
        cpu0 = {k: w.cpu_seconds() for k, w in workers.items()}
        t0 = time.perf_counter()
        await asyncio.sleep(s.idle_cpu_seconds)
        wall = time.perf_counter() - t0
        for k, w in workers.items():
            results[k]["idle_cpu_pct"] = 100 * (w.cpu_seconds() - cpu0[k]) / wall
        log(f"idle CPU: { {k: round(results[k]['idle_cpu_pct'], 2) for k in workers} }")

        for label, idle, rounds in (("1s", 1.0, s.idle_short_rounds), ("60s", s.idle_long_seconds, s.idle_long_rounds)):
            if rounds <= 0:
                continue
            samples: dict[str, list[float]] = {k: [] for k in workers}
            log(f"pickup after {label} idle: {rounds} rounds ({rounds * idle:.0f} s of idle)")
            for _ in range(rounds):
                await asyncio.sleep(idle)
                samples["sitq"].append(await sitq.sample_pickup(client))
                if huey:
                    samples["huey"].append(huey.sample_pickup())
            for k, v in samples.items():
                results[k][f"pickup_{label}_p50_ms"] = 1000 * statistics.median(v)
                results[k][f"pickup_{label}_p99_ms"] = 1000 * pct(v, 0.99)
                results[k][f"pickup_{label}_samples"] = len(v)

        samples = {k: [] for k in workers}
        for i in range(s.result_rounds):
            seconds = 0.02 + 0.1 * ((i * 7919) % 101) / 100  # spread task lengths: no aliasing with poll periods
            samples["sitq"].append(await sitq.sample_result_wait(client, seconds))
            if huey:
                samples["huey"].append(huey.sample_result_wait(seconds))
        for k, v in samples.items():
            results[k]["result_wait_p50_ms"] = 1000 * statistics.median(v)
            results[k]["result_wait_p99_ms"] = 1000 * pct(v, 0.99)
    finally:
        await client.close()
        for w in workers.values():
            w.stop()


def run(s: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {"sitq": {}, "huey": {}, "sqlite3": {}}
    meta: dict[str, Any] = {
        "synchronous": s.synchronous,
        "journal_mode": "WAL",
        "quick": s.quick,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "sitq_worker": f"python -m sitq worker -c {s.concurrency}"
        + ("" if s.prefetch is None else f" --prefetch {s.prefetch}")
        + " (defaults otherwise; sync task functions)",
        "huey_worker": "huey consumer, workers=1, worker_type=thread, default polling",
        "huey_durability": f"SqliteHuey storage, journal_mode=wal, PRAGMA synchronous={s.synchronous}",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items()},
    }
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="sitq-bench-") as tmp:
        folder = Path(tmp)
        sides: dict[str, Any] = {"sitq": SitqSide(folder, s)}
        if s.huey:
            try:
                sides["huey"] = HueySide(folder, s)
                import huey

                meta["huey_version"] = huey.__version__
            except ImportError:
                log("huey is not installed: huey columns show n/a")
                s.huey = False
        sitq: SitqSide = sides["sitq"]
        huey_side: HueySide | None = sides.get("huey")

        def want(part: str) -> bool:
            return not s.only or part in s.only

        if want("ceiling"):
            log("raw sqlite3 ceiling")
            results["sqlite3"] = raw_ceiling(folder, s)
        if want("enqueue"):
            enqueue_part(sitq, huey_side, s, results)
        if want("drain"):
            for procs in s.processes:
                log(f"drain {s.n_drain} tasks with {procs} worker process(es)")
                results["sitq"][f"drain_{procs}p"] = drain(sitq, s.n_drain, procs, True)
                if huey_side:
                    results["huey"][f"drain_{procs}p"] = drain(huey_side, s.n_drain, procs, False)
        if want("e2e"):
            log(f"end to end: {s.n_e2e} tasks from a producer process, one warm worker")
            results["sitq"]["e2e"] = end_to_end(sitq, s.n_e2e, True)
            if huey_side:
                results["huey"]["e2e"] = end_to_end(huey_side, s.n_e2e, False)
        if want("latency"):
            asyncio.run(latencies(sides, s, results))
        if want("reserve"):
            for depth in s.reserve_depths:
                log(f"reserve cost at {depth:,} queued")
                results["sitq"][f"reserve_us_{depth}"] = asyncio.run(reserve_cost(folder, s, depth))
        if huey_side:
            huey_side.huey.storage.close()
    meta["seconds"] = time.time() - started
    return {"meta": meta, "results": results}


def enqueue_part(sitq: SitqSide, huey_side: HueySide | None, s: Settings, results: dict[str, Any]) -> None:
    log(f"single enqueue x{s.n_enqueue}")
    results["sitq"]["enqueue_rate"] = asyncio.run(sitq.enqueue_rate(s.n_enqueue))
    if huey_side:
        results["huey"]["enqueue_rate"] = huey_side.enqueue_rate(s.n_enqueue)
    log(f"enqueue_many {s.n_batch_total} in batches of {s.batch_size}")
    results["sitq"]["enqueue_many_rate"] = asyncio.run(sitq.batch_rate(s.n_batch_total, s.batch_size))


# ------------------------------------------------------------------ report


@dataclass
class Row:
    metric: str
    sitq: float | None
    huey: float | None
    unit: str
    higher_better: bool = True
    target: str = ""
    passed: bool | None = None
    ceiling: float | None = None  # the raw sqlite3 figure this one compares with (same unit)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.sitq is None or self.huey is None or self.sitq <= 0 or self.huey <= 0:
            return None
        return self.sitq / self.huey if self.higher_better else self.huey / self.sitq


def build_rows(data: dict[str, Any]) -> list[Row]:
    """The table's rows; parts not measured in this run (``--only``) are left out."""
    sq, hu, raw = data["results"]["sitq"], data["results"]["huey"], data["results"]["sqlite3"]

    def get(side: dict[str, Any], key: str, sub: str | None = None) -> float | None:
        value = side.get(key)
        if value is not None and sub:
            value = value[sub]
        return None if value is None else float(value)

    rows: list[Row] = []

    def add(metric: str, key: str, unit: str, sub: str | None = None, **kw: Any) -> Row | None:
        value = get(sq, key, sub)
        if value is None:
            return None
        row = Row(metric, value, get(hu, key, sub), unit, **kw)
        rows.append(row)
        return row

    def judge(row: Row | None, ok: Callable[[Row], bool | None]) -> None:
        if row is not None:
            row.passed = ok(row)

    def at_least(times: float) -> Callable[[Row], bool | None]:
        return lambda row: None if row.ratio is None else row.ratio >= times

    claim_done = raw.get("claim_done_per_commit")
    judge(
        add(
            "enqueue, one by one", "enqueue_rate", "tasks/s", target=">= 1x huey", ceiling=raw.get("insert_per_commit")
        ),
        at_least(1.0),
    )
    row = add(
        "enqueue_many (vs huey single enqueue)",
        "enqueue_many_rate",
        "tasks/s",
        target=">= 20x huey",
        ceiling=raw.get("insert_batched"),
    )
    if row is not None:
        row.huey = get(hu, "enqueue_rate")
    judge(row, at_least(20.0))
    judge(
        add("drain 1 worker process", "drain_1p", "tasks/s", "rate", target=">= 4x huey", ceiling=claim_done),
        at_least(4.0),
    )
    judge(
        add("end to end, producer + warm worker", "e2e", "tasks/s", "rate", target=">= 3x huey", ceiling=claim_done),
        at_least(3.0),
    )
    add("end to end, seconds", "e2e", "s", "seconds", higher_better=False)
    for label in ("1s", "60s"):
        row = add(
            f"idle pickup p50 after {label} idle", f"pickup_{label}_p50_ms", "ms", higher_better=False, target="<= 5 ms"
        )
        if row is None and "idle_cpu_pct" in sq:
            rows.append(Row(f"idle pickup p50 after {label} idle", None, None, "ms", False, "<= 5 ms (skipped)"))
        judge(row, lambda row: row.sitq is not None and row.sitq <= 5.0)
        add(f"idle pickup p99 after {label} idle", f"pickup_{label}_p99_ms", "ms", higher_better=False)
    add("result wait p50 (task end -> result)", "result_wait_p50_ms", "ms", higher_better=False)
    add("result wait p99", "result_wait_p99_ms", "ms", higher_better=False)
    judge(
        add("idle worker CPU", "idle_cpu_pct", "% core", higher_better=False, target="< 2%"),
        lambda row: row.sitq is not None and row.sitq < 2.0,
    )
    depths = sorted(int(k.rsplit("_", 1)[1]) for k in sq if k.startswith("reserve_us_"))
    claim = raw.get("claim_per_commit")
    for depth in depths:
        add(
            f"reserve cost at {depth:,} queued",
            f"reserve_us_{depth}",
            "us/task",
            higher_better=False,
            ceiling=1e6 / claim if claim else None,
        )
    if len(depths) == 2:
        growth = sq[f"reserve_us_{depths[1]}"] / sq[f"reserve_us_{depths[0]}"]
        row = Row(f"reserve cost {depths[1]:,} / {depths[0]:,}", growth, None, "x", False, "<= 1.5x")
        row.passed = growth <= 1.5
        rows.append(row)
    for procs in (1, 2, 4):
        metric = f"throughput, {procs} worker process(es)"
        if add(metric, f"drain_{procs}p", "tasks/s", "rate", ceiling=claim_done) is None and f"drain_{procs}p" in sq:
            rows.append(Row(metric, None, get(hu, f"drain_{procs}p", "rate"), "tasks/s"))  # too few left: no figure
    if "drain_4p" in sq:
        multi = [k for k in ("drain_2p", "drain_4p") if k in sq]
        row = Row(
            "'database is locked' lines in 2+4-process worker logs",
            float(sum(sq[k]["locked"] for k in multi)),
            float(sum(hu[k]["locked"] for k in multi if k in hu)) if "drain_4p" in hu else None,
            "lines",
            False,
            "0",
        )
        row.passed = row.sitq == 0
        rows.append(row)
        if "drain_1p" in sq:
            row = Row(
                "4 processes / 1 process throughput",
                _rate_ratio(sq, "drain_4p", "drain_1p"),
                _rate_ratio(hu, "drain_4p", "drain_1p"),
                "x",
                target=">= 1x",
            )
            row.passed = None if row.sitq is None else row.sitq >= 1.0
            rows.append(row)
    for name, value in raw.items():
        rows.append(Row(f"raw sqlite3: {name.replace('_', ' ')}", value, None, "ops/s"))
    return rows


def _rate_ratio(side: dict[str, Any], top: str, bottom: str) -> float | None:
    """``side[top]``'s drain rate over ``side[bottom]``'s, or None where either has no figure."""
    if top not in side or bottom not in side or not side[top]["rate"] or not side[bottom]["rate"]:
        return None
    return float(side[top]["rate"] / side[bottom]["rate"])


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit in ("ms", "x", "% core"):
        return f"{value:,.2f}"
    if unit == "us/task":
        return f"{value:,.1f}"
    if unit == "s":
        return f"{value:,.3f}"
    return f"{value:,.0f}"


def fmt_load(value: float | None) -> str:
    """The 1-minute load average as ``0.29`` (not ``0.29052734375``), or ``n/a`` where the OS has none."""
    return "n/a" if value is None else f"{value:.2f}"


def render(data: dict[str, Any]) -> str:
    rows = build_rows(data)
    meta = data["meta"]
    header = ["metric", "unit", "sitq", "huey", "ratio", "target", "pass", "of sqlite3"]
    table = [header]
    for row in rows:
        ratio = row.ratio
        ceiling = ""
        if row.ceiling and row.sitq:
            ceiling = f"{100 * (row.sitq / row.ceiling if row.higher_better else row.ceiling / row.sitq):.0f}%"
        verdict = "" if not row.target else ("n/a" if row.passed is None else ("PASS" if row.passed else "FAIL"))
        table.append(
            [
                row.metric,
                row.unit,
                fmt(row.sitq, row.unit),
                fmt(row.huey, row.unit),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                row.target,
                verdict,
                ceiling,
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = [
        f"sitq vs huey {meta.get('huey_version', '(not installed)')} -- synchronous={meta['synchronous']}, "
        f"journal_mode=WAL, file databases in a temp dir, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"SQLite {meta['sqlite']}{' (--quick)' if meta['quick'] else ''}, load average at start "
        f"{fmt_load(meta.get('loadavg_at_start'))}",
        f"sitq: {meta['sitq_worker']}",
        f"huey: {meta['huey_worker']}; {meta['huey_durability']}",
        "ratio: sitq/huey for rates, huey/sitq for times (above 1 = sitq better); "
        "'of sqlite3': sitq as a fraction of the raw sqlite3 figure in the same run "
        "(one row per commit; drain/e2e vs claim+done per commit)",
        "",
    ]
    sep = "|".join("-" * (w + 2) for w in widths)
    for i, line in enumerate(table):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.rjust(w) if 1 < j < 5 or j == 7 else c.ljust(w) for j, (c, w) in pairs]
        out.append("| " + " | ".join(cells) + " |")
        if i == 0:
            out.append("|" + sep + "|")
    locks = {k: v.get("drain_4p", {}).get("error_lines") for k, v in data["results"].items() if k != "sqlite3"}
    out.append("")
    out.append(f"error/traceback lines in 4-process worker logs: {locks}; total run time {meta['seconds']:.0f} s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    s = Settings.from_args(argv)
    data = run(s)
    text = render(data)
    print(text, flush=True)
    s.out.parent.mkdir(parents=True, exist_ok=True)
    data["table"] = text
    s.out.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    log(f"figures written to {s.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
