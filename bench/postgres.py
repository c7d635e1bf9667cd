"""sitq on PostgreSQL: single enqueue, enqueue_many and a one-worker-process drain, in a throw-away schema.

    bench/.venv/bin/python bench/postgres.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--n 3000]

Needs a PostgreSQL server and sitq-postgres installed into the benchmark's
environment (``bench/.venv/bin/pip install -e ./sitq_postgres``). Prints one
line per figure; no comparison with huey (huey has no PostgreSQL storage).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import asyncpg  # type: ignore[import-untyped]  # noqa: E402
import bench_tasks  # noqa: E402

from sitq import TaskQueue  # noqa: E402
from sitq_postgres import PostgresBackend  # noqa: E402


async def run(dsn: str, n: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        async with TaskQueue(PostgresBackend(dsn, schema=schema)) as queue:
            await queue.enqueue(bench_tasks.noop)
            began = time.perf_counter()
            for _ in range(n):
                await queue.enqueue(bench_tasks.noop)
            print(f"enqueue, one by one:           {n / (time.perf_counter() - began):9,.0f} tasks/s")
            began = time.perf_counter()
            for _ in range(20):
                await queue.enqueue_many([(bench_tasks.noop, ())] * 1000)
            print(f"enqueue_many, batches of 1000: {20_000 / (time.perf_counter() - began):9,.0f} tasks/s")
            total = (await queue.counts())["queued"]
            env = dict(os.environ, PYTHONPATH=str(HERE))
            command = [sys.executable, "-m", "sitq", "worker", "-b", f"{dsn}?schema={schema}", "-c", "1"]
            began = time.perf_counter()
            worker = subprocess.Popen([*command, "-i", "bench_tasks"], env=env)  # noqa: ASYNC220 (starts at once)
            try:
                while (await queue.counts())["success"] < total:  # noqa: ASYNC110 (watched from outside)
                    await asyncio.sleep(0.02)
                seconds = time.perf_counter() - began
            finally:
                worker.terminate()
                worker.wait(30)
            print(f"drain {total:,} tasks, 1 worker process (start-up included): {total / seconds:9,.0f} tasks/s")
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("SITQ_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--n", type=int, default=3000, help="single enqueues to time")
    args = parser.parse_args()
    asyncio.run(run(args.dsn, args.n))


if __name__ == "__main__":
    main()
