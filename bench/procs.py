"""Child processes of the benchmark: a worker (sitq or huey) and a producer.

    procs.py worker sitq DB_URL CONCURRENCY PREFETCH|None  # runs ``sitq worker`` (the CLI's main) in this process
    procs.py worker huey                               # huey's consumer, one thread worker
    procs.py produce sitq DB_PATH SYNC N               # enqueues N noop tasks one by one
    procs.py produce huey N

Each prints ``READY <time>`` (after imports, just before work starts) on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time


def ready() -> None:
    print(f"READY {time.time():.6f}", flush=True)


def sitq_worker(url: str, concurrency: str, prefetch: str) -> int:
    import bench_tasks  # noqa: F401  (the task module, as -i bench_tasks would)

    import sitq_core.worker  # noqa: F401  (what the worker command imports, loaded before READY)
    import sitq_sqlite.backend  # noqa: F401
    from sitq_core.cli import main
    from sitq_core.plugins import get_plugin_manager

    get_plugin_manager()  # entry-point discovery, before READY
    ready()
    extra = [] if prefetch == "None" else ["--prefetch", prefetch]
    extra += os.environ.get("BENCH_SITQ_WORKER_ARGS", "").split()  # e.g. "--batch-window 0" for experiments
    return main(["worker", "-b", url, "-c", concurrency, *extra, "-i", "bench_tasks"])


def huey_worker() -> int:
    from huey_tasks import huey

    consumer = huey.create_consumer(workers=1, worker_type="thread")
    ready()
    consumer.run()
    return 0


async def sitq_produce(path: str, synchronous: str, n: int) -> None:
    from bench_tasks import noop

    from sitq import SQLiteBackend, TaskQueue

    async with TaskQueue(SQLiteBackend(path, synchronous=synchronous)) as queue:
        await queue.counts()  # connected
        ready()
        for _ in range(n):
            await queue.enqueue(noop)


def huey_produce(n: int) -> None:
    from huey_tasks import huey, noop

    huey.storage.conn  # noqa: B018  (connect before timing)
    ready()
    for _ in range(n):
        noop()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    role, system, *rest = argv
    if role == "worker":
        return sitq_worker(*rest) if system == "sitq" else huey_worker()
    if system == "sitq":
        asyncio.run(sitq_produce(rest[0], rest[1], int(rest[2])))
    else:
        huey_produce(int(rest[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
